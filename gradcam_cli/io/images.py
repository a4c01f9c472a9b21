"""Robust image decoding: any supported file -> upright (H, W, 3) uint8 RGB.

:func:`decode` never lets a Pillow exception escape: every failure becomes an
:class:`~gradcam_cli.errors.ImageError` whose ``kind`` is one of
``missing``, ``unreadable``, ``empty``, ``not_an_image``, ``truncated``,
``too_large`` or ``corrupt``.

Conversions (documented behaviour):

* EXIF orientation is applied first, so the result is upright and its
  width/height are the displayed ones. An unreadable EXIF block is ignored.
* Transparency (alpha channels, palette/greyscale/RGB ``transparency``
  entries) is composited on :data:`BACKGROUND` (white).
* 16-bit images (``I;16*``, and ``I`` holding values in 0..65535) are scaled
  by their bit depth (``value >> (bits - 8)``, e.g. ``>> 8`` for 16 bits;
  ``bits`` from TIFF ``BitsPerSample`` when present, else 16), not clipped.
  32-bit integer images are shifted by 24 bits (signed ones offset by 2**31
  first, so the full int32 range maps onto 0..255).
* Float (``F``) images: values in [0, 1] are scaled by 255, values in
  [0, 255] are rounded, anything else is min-max normalised; NaN becomes 0.
* CMYK / YCCK JPEGs are converted by Pillow (which applies the Adobe
  inverted-CMYK convention).
* Animated GIF / WebP / PNG: the first frame.

Decompression-bomb protection is done here (``max_pixels``, checked on the
header before any pixel is decoded). To do so, Pillow's own limit
(``PIL.Image.MAX_IMAGE_PIXELS``) is switched off while a :func:`decode` call
is running and restored afterwards (reference-counted, so concurrent calls in
threads are safe); nothing else in Pillow's global state is changed. In
particular ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from typing import Any, Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gradcam_cli.errors import ImageError

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's default bomb limit; adjustable by the caller
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white

__all__ = ["DEFAULT_MAX_PIXELS", "BACKGROUND", "decode"]

_ORIENTATION_TAG = 0x0112

# Leading bytes of the formats we expect, to tell "a damaged image" from "not
# an image at all" when Pillow cannot identify a file.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)

# --------------------------------------------------------------------------- #
# Pillow's global bomb limit, switched off while decode() runs.

_limit_lock = threading.Lock()
_limit_users = 0
_saved_limit: int | None = None


@contextlib.contextmanager
def _pillow_limit_off() -> Iterator[None]:
    global _limit_users, _saved_limit
    with _limit_lock:
        if _limit_users == 0:
            _saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _limit_users += 1
    try:
        yield  # with the limit off, Pillow neither warns nor raises
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit
                _saved_limit = None


# --------------------------------------------------------------------------- #
# helpers


def _sniff(head: bytes) -> str | None:
    for sig, name in _SIGNATURES:
        if head.startswith(sig):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _riff_truncated(head: bytes, size: int) -> bool:
    """A RIFF container (WebP) shorter than the size its header declares."""
    if len(head) < 12 or head[:4] != b"RIFF":
        return False
    declared = int.from_bytes(head[4:8], "little") + 8
    return size < declared


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 160:
        text = text[:157] + "..."
    return text


def _looks_truncated(exc: BaseException) -> bool:
    if isinstance(exc, EOFError):
        return True
    text = str(exc).lower()
    return "truncated" in text or "premature end" in text or "unexpected end" in text


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG)
    except Exception:  # a broken EXIF block must not lose the image
        return 1
    try:
        value = int(value) if value is not None else 1
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


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


def _to_rgb(im: Image.Image) -> np.ndarray:
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


def _header_error(path: str, exc: BaseException, head: bytes, size: int) -> ImageError:
    """The ImageError for a file whose header Pillow could not read."""
    fmt = _sniff(head)
    if _riff_truncated(head, size):
        declared = int.from_bytes(head[4:8], "little") + 8
        return ImageError(
            path, "truncated",
            f"{fmt or 'RIFF'} file is truncated ({size:,} of {declared:,} bytes; re-copy or re-export it)",
        )
    if _looks_truncated(exc):
        return ImageError(
            path, "truncated",
            f"{fmt or 'image'} file is truncated inside its header (re-copy or re-export it)",
        )
    if isinstance(exc, UnidentifiedImageError):
        if fmt is None:
            return ImageError(
                path, "not_an_image",
                "not a recognised image format (expected JPEG, PNG, WebP, BMP, TIFF, GIF, ...)",
            )
        return ImageError(
            path, "corrupt", f"starts like a {fmt} file but its header cannot be read (damaged or cut short)"
        )
    return ImageError(path, "corrupt", f"cannot read image header: {_describe(exc)}")


# --------------------------------------------------------------------------- #
# public API


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}
#: OpenCV >= 4.11 has libjpeg write RGB itself (no BGR -> RGB pass over the image afterwards)
_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def reduction(height: int, width: int, at_least: tuple[int, int] | None) -> int:
    """The largest JPEG DCT scale-down (1, 2, 4 or 8) that keeps the image at least ``at_least``
    = (height, width) on each side (None: full size, 1)."""
    if at_least is None:
        return 1
    return max([k for k in _REDUCED if -(-height // k) >= at_least[0] and -(-width // k) >= at_least[1]], default=1)


def _decode_plain_jpeg(fh, width: int, height: int, scale: int = 1) -> np.ndarray | None:
    """The common case, a whole upright YCbCr JPEG, decoded by OpenCV (~2x faster than Pillow);
    ``scale`` 2, 4 or 8 decodes it reduced in libjpeg's DCT (several times faster again).

    Returns None (use Pillow) unless the file ends with the JPEG end-of-image
    marker, so a truncated file still gets Pillow's ``truncated`` verdict.
    """
    fh.seek(0)
    data = fh.read()
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    flags = _REDUCED[scale] | cv2.IMREAD_IGNORE_ORIENTATION
    if _RGB is not None:
        flags = (flags & ~cv2.IMREAD_COLOR) | _RGB
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if pixels is None or pixels.shape != (-(-height // scale), -(-width // scale), 3):
        return None
    return pixels if _RGB is not None else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def decode(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` into an upright, C-contiguous ``(H, W, 3)`` uint8 RGB array (see :func:`decode_sized`)."""
    return decode_sized(path, max_pixels=max_pixels)[0]


def decode_sized(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 at_least=None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` into an upright, C-contiguous ``(H, W, 3)`` uint8 RGB array and its full size
    (height, width). With ``at_least``, a function of the full (height, width) that returns the
    smallest (height, width) the caller needs (or None for full size), a plain JPEG may be
    decoded reduced by 2, 4 or 8 in libjpeg (:func:`reduction`); other files decode at full size.

    Raises :class:`ImageError` with ``kind``:

    * ``missing``: the file does not exist (or vanished since it was listed);
    * ``unreadable``: permission denied, a directory, or not a regular file;
    * ``empty``: zero bytes;
    * ``not_an_image``: Pillow cannot identify the format;
    * ``truncated``: the file ends before the image data does;
    * ``too_large``: width * height > ``max_pixels`` (checked from the header,
      before decoding pixels);
    * ``corrupt``: any other decoding or conversion error.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(path, "missing", "file not found (check the path; it may have been moved or deleted)") from None
    except NotADirectoryError:
        raise ImageError(path, "missing", "file not found (a parent in the path is a file, not a folder)") from None
    except PermissionError:
        raise ImageError(path, "unreadable", "permission denied (check the folder's permissions)") from None
    except OSError as exc:
        raise ImageError(path, "unreadable", f"cannot access file: {_describe(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(path, "unreadable", "is a directory, not an image file (list its images or pass the folder as an input)")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(path, "unreadable", "is not a regular file (device, pipe or socket)")

    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise ImageError(path, "missing", "file vanished before it could be read") from None
    except PermissionError:
        raise ImageError(path, "unreadable", "permission denied (make the file readable, e.g. chmod +r)") from None
    except IsADirectoryError:
        raise ImageError(path, "unreadable", "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(path, "unreadable", f"cannot open file: {_describe(exc)}") from None

    with fh, _pillow_limit_off():
        try:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(16)
            fh.seek(0)
        except OSError as exc:
            raise ImageError(path, "unreadable", f"cannot read file: {_describe(exc)}") from None
        if size == 0:
            raise ImageError(path, "empty", "file is empty (0 bytes)")

        try:
            im = Image.open(fh)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types
            raise _header_error(path, exc, head, size) from None

        with im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise ImageError(path, "corrupt", f"image has an invalid size {width}x{height}")
            pixels = width * height
            if pixels > max_pixels:
                raise ImageError(
                    path, "too_large",
                    f"image is {width}x{height} = {pixels:,} pixels, over the limit of {max_pixels:,}; "
                    "raise it with --max-pixels if the file is trusted",
                )
            fmt = im.format or "image"
            if fmt == "JPEG" and im.mode == "RGB" and _orientation(im) == 1:
                scale = reduction(height, width, at_least(height, width) if at_least else None)
                fast = _decode_plain_jpeg(fh, width, height, scale)
                if fast is not None:
                    return fast, (height, width)
            try:
                im.load()  # force the full decode of the first frame here
            except MemoryError:
                raise  # a machine problem, not a property of the file
            except Exception as exc:  # noqa: BLE001
                if _looks_truncated(exc):
                    raise ImageError(
                        path, "truncated", f"{fmt} file is truncated (it ends before the image data does; re-copy or re-export it)"
                    ) from None
                raise ImageError(path, "corrupt", f"cannot decode {fmt} data: {_describe(exc)}") from None

            try:
                orientation = _orientation(im)
                upright = ImageOps.exif_transpose(im) if orientation != 1 else im
                arr = _to_rgb(upright)
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001
                if _looks_truncated(exc):
                    raise ImageError(path, "truncated", f"{fmt} file is truncated: {_describe(exc)}") from None
                raise ImageError(
                    path, "corrupt", f"cannot convert {fmt} image (mode {im.mode}) to RGB: {_describe(exc)}"
                ) from None

    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ImageError(path, "corrupt", f"unexpected decoded shape {arr.shape}")
    return np.ascontiguousarray(arr), arr.shape[:2]



ACCEPTED_ARRAYS = ("(H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA arrays, uint8 (0..255), or float "
                   "with value_range=(0, 1) or (0, 255)")


def to_rgb_uint8(image: Any, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """An in-memory image as RGB uint8 (H, W, 3), as :func:`decode` gives files.

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
