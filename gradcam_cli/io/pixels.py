"""Pixel conversions to (H, W, 3) uint8 RGB.

A decoded Pillow image of any mode (:func:`pillow_to_rgb`: 16- and 32-bit integer,
float, palette, transparency composited on :data:`BACKGROUND`) and an in-memory array
(:func:`to_rgb_uint8`). :func:`gradcam_cli.io.images.decode` documents the conversions
it applies through :func:`pillow_to_rgb`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white

__all__ = ["BACKGROUND", "ACCEPTED_ARRAYS", "pillow_to_rgb", "to_rgb_uint8"]


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-composite ``rgb`` (H,W,3 uint8) with ``alpha`` (H,W uint8) on BACKGROUND."""
    a = alpha.astype(np.uint32)[..., None]
    bg = np.asarray(BACKGROUND, dtype=np.uint32)
    out = (rgb.astype(np.uint32) * a + bg * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _tiff_tag(im: Image.Image, tag: int) -> int | None:
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None
    try:
        value = tags.get(tag)
        if isinstance(value, tuple):
            value = value[0] if value else None
        return int(value) if value is not None else None
    except Exception:  # noqa: BLE001 - metadata is best effort
        return None


def _int_to_8bit(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Modes I;16*, I -> (H, W) uint8 grey and an optional alpha plane.

    Scaled by the bit depth: TIFF ``BitsPerSample`` when known, else 16 for
    ``I;16*`` and, for ``I``, 16 when every value fits 0..65535 (16-bit PNG /
    PGM decoded to ``I``), otherwise 32. Signed 32-bit data (TIFF
    ``SampleFormat`` 2, or negative values) is offset by 2**31 first.
    """
    raw = np.asarray(im).astype(np.int64)
    alpha = None
    trns = im.info.get("transparency")
    if isinstance(trns, int):
        alpha = np.where(raw == trns, 0, 255).astype(np.uint8)
    lo, hi = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
    bits = _tiff_tag(im, 258)  # BitsPerSample
    if bits is not None and not 1 <= bits <= 32:
        bits = None
    if im.mode.startswith("I;16"):
        bits = bits if bits is not None and bits <= 16 else 16
    elif bits is None:
        bits = 16 if lo >= 0 and hi <= 0xFFFF else 32
    if bits > 16 and (_tiff_tag(im, 339) == 2 or lo < 0):  # SampleFormat: signed
        raw = raw + 2 ** (bits - 1)
    grey = raw >> (bits - 8) if bits > 8 else raw
    return np.clip(grey, 0, 255).astype(np.uint8), alpha


def _float_to_8bit(im: Image.Image) -> np.ndarray:
    raw = np.asarray(im, dtype=np.float64)
    raw = np.where(np.isfinite(raw), raw, np.nan)
    finite = raw[~np.isnan(raw)]
    if finite.size == 0:
        return np.zeros(raw.shape, np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        scaled = raw * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        scaled = raw
    else:
        scaled = (raw - lo) * (255.0 / (hi - lo)) if hi > lo else raw * 0.0
    scaled = np.nan_to_num(scaled, nan=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def pillow_to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8, transparency composited on white."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return np.array(im, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        grey, alpha = _int_to_8bit(im)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        return _composite(rgb, alpha) if alpha is not None else rgb
    if mode == "F":
        return np.repeat(_float_to_8bit(im)[..., None], 3, axis=2)
    has_alpha = "A" in mode or "a" in mode or "transparency" in im.info
    if has_alpha:
        rgba = np.array(im.convert("RGBA"), dtype=np.uint8)
        return _composite(rgba[..., :3], rgba[..., 3])
    return np.array(im.convert("RGB"), dtype=np.uint8)


ACCEPTED_ARRAYS = ("(H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA arrays, uint8 (0..255), or float "
                   "with value_range=(0, 1) or (0, 255)")


def to_rgb_uint8(image: Any, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """An in-memory image as RGB uint8 (H, W, 3), as :func:`~gradcam_cli.io.images.decode` gives files.

    Accepted: (H, W) and (H, W, 1) grey, (H, W, 3) RGB, (H, W, 4) RGBA (composited on
    white); uint8, or a float dtype with an explicit ``value_range`` of (0, 1) or
    (0, 255) (values are clipped to it and rounded). Anything else: one ``ValueError``
    naming the shape and dtype received and what is accepted.
    """
    array = np.asarray(image)
    shape, dtype = tuple(array.shape), array.dtype
    received = f"got an array of shape {shape} and dtype {dtype}"
    if not (array.ndim == 2 or (array.ndim == 3 and shape[2] in (1, 3, 4))) or 0 in shape:
        raise ValueError(f"images must be {ACCEPTED_ARRAYS}; {received}")
    if value_range is not None:
        if tuple(value_range) not in ((0, 1), (0, 255)):
            raise ValueError(f"value_range must be (0, 1) or (0, 255), got {value_range!r}")
        value_range = tuple(value_range)
    if np.issubdtype(dtype, np.floating):
        if value_range is None:
            raise ValueError(f"{received}: a float image needs value_range=(0, 1) or (0, 255) to say its scale")
        if not np.isfinite(array).all():
            raise ValueError(f"{received}: it holds NaN or infinite values")
        array = np.rint(np.clip(array, 0, value_range[1]) * (255.0 / value_range[1])).astype(np.uint8)
    elif dtype != np.uint8 or value_range not in (None, (0, 255)):
        raise ValueError(f"images must be {ACCEPTED_ARRAYS}; {received}"
                         + (f" and value_range={value_range!r}" if dtype == np.uint8 else ""))
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        return _composite(array[..., :3], array[..., 3])
    return array
