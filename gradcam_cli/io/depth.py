"""Full-depth grey images: 16-bit PNG / TIFF (and DICOM, :mod:`gradcam_cli.io.dicom`) kept at their depth.

Every other input is decoded to 8-bit RGB (:mod:`gradcam_cli.io.images`). A grey image of more than
8 bits (Pillow modes ``I;16*``, ``I``, ``F``) or any DICOM image becomes a :class:`Scan`: its values
in float32 and what they mean. Two things are made from it, each from the full-depth values:

* **the model input** (:func:`model_values`), on the scale the profile's preprocessing is applied to
  (the 0..255 of an 8-bit image for most models), by the ``--intensity`` rule:

  - ``range``: the container's range ``lo..hi`` (16-bit: 0..65535; ``BitsPerSample`` 12: 0..4095;
    DICOM: its stored bits through the rescale) mapped linearly onto 0..255, in float:
    ``(v - lo) * 255 / (hi - lo)``. Nothing is clipped or quantised: value 1 of 65535 reaches the
    model as 0.00389, not 0.
  - ``window``: the view's window (below) mapped onto 0..255 in float and clipped: what a model
    trained on windowed images (a CT lung or brain window exported to PNG) was fed, before rounding.
  - ``raw``: the values themselves (DICOM: the modality's, e.g. Hounsfield units for CT), for a
    model whose own preprocessing (``--preprocess none``, ``mean_std`` in those units) expects them.
  - ``auto`` (the default): ``range`` for PNG / TIFF, ``raw`` for DICOM.

  MONOCHROME1 (DICOM: low values are bright) is inverted on that scale: ``255 - x`` after ``range``
  or ``window``, ``lo + hi - v`` for ``raw``, so every model sees bright as dense.
* **the view** (:func:`view_rgb`), the 8-bit picture the overlays are drawn on: the window (``--window
  CENTRE,WIDTH`` in the input's units; else a DICOM's own first window; else the 1st to 99th
  percentiles of the values) by DICOM's LINEAR_EXACT function (PS3.3 C.11.2.1.3.2),
  ``(v - (c - w / 2)) / w * 255`` clipped to 0..255, rounded; MONOCHROME1 inverted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from gradcam_cli.settings import INTENSITIES, DepthSettings

__all__ = ["Scan", "DEPTH_MODES", "from_pillow", "read_depth", "prepare", "model_values", "view_rgb",
           "windowed", "view_window"]

#: Pillow modes kept at full depth (grey of more than 8 bits, and float)
DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I", "F")
#: formats that hold 8-bit images only: never opened twice to look for depth
EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".gif", ".bmp")
#: the default view's window: these percentiles of the values
PERCENTILES = (1.0, 99.0)
#: the percentiles are taken on at most about this many values (a regular sub-grid of a larger image:
#: every 2nd row and column of a 1024 x 1024 image; 22 ms for its million values, 5 ms for these)
PERCENTILE_SAMPLES = 1 << 18


@dataclass(frozen=True)
class Scan:
    """One full-depth grey image and what its values mean."""

    values: np.ndarray  # (H, W) float32: stored values (PNG / TIFF), modality values (DICOM: HU for CT)
    value_range: tuple[float, float]  # the container's range lo..hi: what ``range`` maps onto 0..255
    auto: str = "range"  # what ``--intensity auto`` means for it: range (PNG / TIFF) or raw (DICOM)
    window: tuple[float, float] | None = None  # the file's own (centre, width) (DICOM)
    invert: bool = False  # MONOCHROME1: low values are bright
    info: dict = field(default_factory=dict)  # the record's ``full_depth`` fields (format, bits, modality, ...)


def view_window(scan: Scan, asked: tuple[float, float] | None) -> tuple[tuple[float, float], str]:
    """The view's (centre, width) and where it came from: ``option``, ``file`` or ``percentiles``."""
    if asked is not None:
        return (float(asked[0]), float(asked[1])), "option"
    if scan.window is not None:
        return scan.window, "file"
    values = scan.values
    step = max(1, int(np.ceil(np.sqrt(values.size / PERCENTILE_SAMPLES))))
    sample = values[::step, ::step]
    lo, hi = (float(v) for v in np.percentile(sample, PERCENTILES))
    width = hi - lo
    if not width > 0:  # a flat image: any window shows it; one of unit width centred on it
        width = 1.0
    return ((lo + hi) / 2.0, width), "percentiles"


def windowed(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """float32 0..255: DICOM's LINEAR_EXACT window ``(v - (c - w / 2)) / w * 255``, clipped."""
    centre, width = window
    out = (np.asarray(values, np.float64) - (centre - width / 2.0)) * (255.0 / width)
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def intensity_of(scan: Scan, asked: str) -> str:
    """The rule applied: ``asked``, or the scan's own for ``auto``."""
    if asked not in INTENSITIES:
        raise ValueError(f"intensity must be one of {', '.join(INTENSITIES)}, got {asked!r}")
    return scan.auto if asked == "auto" else asked


def model_values(scan: Scan, rule: str, window: tuple[float, float]) -> np.ndarray:
    """(H, W) float32: the values on the model's scale by ``rule`` (``range``, ``window``, ``raw``;
    see the module docstring), inverted for MONOCHROME1."""
    lo, hi = scan.value_range
    if rule == "raw":
        values = np.asarray(scan.values, np.float64)
        return ((lo + hi) - values if scan.invert else values).astype(np.float32)
    if rule == "window":
        out = windowed(scan.values, window).astype(np.float64)
    elif rule == "range":
        out = (np.asarray(scan.values, np.float64) - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
    else:
        raise ValueError(f"unknown intensity rule {rule!r}; expected range, window or raw")
    return (255.0 - out if scan.invert else out).astype(np.float32)


def view_rgb(scan: Scan, window: tuple[float, float]) -> np.ndarray:
    """(H, W, 3) uint8, three equal channels: the windowed view, rounded; inverted for MONOCHROME1."""
    grey = np.rint(windowed(scan.values, window)).astype(np.uint8)
    if scan.invert:
        grey = 255 - grey
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))


def prepare(scan: Scan, depth: DepthSettings | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(model values (H, W) float32, view (H, W, 3) uint8, the record's ``full_depth`` fields)."""
    depth = depth or DepthSettings()
    rule = intensity_of(scan, depth.intensity)
    window, source = view_window(scan, depth.window)
    fields = {**scan.info, "intensity": rule, "window": [window[0], window[1]], "window_from": source}
    if rule == "range":
        fields["value_range"] = [scan.value_range[0], scan.value_range[1]]
    return model_values(scan, rule, window), view_rgb(scan, window), fields


# --------------------------------------------------------------------------- #
# Pillow: 16-bit grey PNG / TIFF, 32-bit integer and float TIFF


def _tiff_tag(im: Image.Image, tag: int) -> int | None:
    from gradcam_cli.io.pixels import _tiff_tag as tiff_tag

    return tiff_tag(im, tag)


def _int_range(im: Image.Image, values: np.ndarray) -> tuple[tuple[float, float], int]:
    """The container's range and bit depth of an integer grey image: TIFF ``BitsPerSample`` when
    given (signed per ``SampleFormat`` 2 or a signed mode), else 16 for ``I;16*`` and for ``I`` whose
    values fit 0..65535 (a 16-bit PNG read as ``I``), else 32."""
    bits = _tiff_tag(im, 258)
    if bits is not None and not 1 <= bits <= 32:
        bits = None
    signed = im.mode == "I;16S" or _tiff_tag(im, 339) == 2
    if bits is None:
        fits = values.size == 0 or (values.min() >= 0 and values.max() <= 0xFFFF)
        bits = 16 if im.mode.startswith("I;16") or fits else 32
        signed = signed or (bits == 32 and values.size > 0 and values.min() < 0)
    if signed:
        return (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1), bits
    return (0.0, 2.0 ** bits - 1), bits


def from_pillow(im: Image.Image, fmt: str) -> Scan | None:
    """A loaded Pillow image of a :data:`DEPTH_MODES` mode as a :class:`Scan` (None for other modes).
    Float images: the range is 0..1 when every value lies in it, else their min..max; NaN becomes
    the lowest value."""
    if im.mode not in DEPTH_MODES:
        return None
    raw = np.asarray(im)
    if im.mode == "F":
        values = np.asarray(raw, np.float64)
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        value_range = (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi)
        values = np.where(np.isfinite(values), values, value_range[0])
        info = {"format": fmt, "bits": 32, "sample": "float"}
    else:
        values = np.asarray(raw, np.float64)
        value_range, bits = _int_range(im, raw)
        info = {"format": fmt, "bits": bits}
    return Scan(values=np.ascontiguousarray(values, np.float32), value_range=value_range, auto="range", info=info)


def depth_candidate(path: str) -> bool:
    """Whether ``path`` may hold a full-depth image (not a format that holds 8-bit images only)."""
    import os

    return os.path.splitext(path)[1].lower() not in EIGHT_BIT_ONLY


def read_depth(path: str, max_pixels: int) -> Scan | None:
    """The full-depth grey image in ``path`` as a :class:`Scan`, or None when Pillow reads it in
    another mode (then :func:`gradcam_cli.io.images.decode_pair` decodes it to 8-bit RGB). Only the
    header is read for None. EXIF / TIFF orientation is applied. Errors: the
    :class:`~gradcam_cli.errors.ImageError` kinds of :func:`~gradcam_cli.io.images.decode_pair`."""
    from gradcam_cli.io import images

    images._check_regular_file(path)
    fh = images._open_file(path)
    with fh, images._pillow_limit_off():
        size, head = images._read_head(path, fh)
        try:
            im = Image.open(fh)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types
            raise images._header_error(path, exc, head, size) from None
        with im:
            if im.mode not in DEPTH_MODES:
                return None
            images._checked_size(path, im, max_pixels)
            fmt = im.format or "image"
            images._load_pixels(path, im, fmt)
            upright = ImageOps.exif_transpose(im) if images._orientation(im) != 1 else im
            return from_pillow(upright, fmt)
