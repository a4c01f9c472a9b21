"""Robust image decoding: any supported file -> upright (H, W, 3) uint8 RGB.

:func:`decode` never lets a Pillow exception escape: every failure becomes an
:class:`~gradcam_cli.errors.ImageError` whose ``kind`` is one of
``missing``, ``unreadable``, ``empty``, ``not_an_image``, ``truncated``,
``too_large`` or ``corrupt``.

Conversions (documented behaviour):

* EXIF orientation is applied first, so the result is upright and its
  width/height are the displayed ones. An unreadable EXIF block is ignored.
* Transparency (alpha channels, palette/greyscale/RGB ``transparency``
  entries) is composited on :data:`~gradcam_cli.io.pixels.BACKGROUND` (white).
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
import threading
from typing import BinaryIO, Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gradcam_cli.errors import ImageError
from gradcam_cli.io.access import check_regular_file as _check_regular_file
from gradcam_cli.io.libjpeg import noting
from gradcam_cli.io.pixels import pillow_to_rgb

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's default bomb limit; adjustable by the caller

__all__ = ["DEFAULT_MAX_PIXELS", "decode"]

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


def _decode_plain_jpeg(source, width: int, height: int, scale: int = 1, notes: list | None = None
                       ) -> np.ndarray | None:
    """The common case, a whole upright YCbCr JPEG (an open file, or its bytes), decoded by OpenCV
    (~2x faster than Pillow); ``scale`` 2, 4 or 8 decodes it reduced in libjpeg's DCT (several
    times faster again). ``notes`` (a list) receives libjpeg's warnings, kept off stderr.

    Returns None (use Pillow) unless the file ends with the JPEG end-of-image
    marker, so a truncated file still gets Pillow's ``truncated`` verdict.
    """
    if isinstance(source, bytes):
        data = source
    else:
        source.seek(0)
        data = source.read()
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    flags = _REDUCED[scale] | cv2.IMREAD_IGNORE_ORIENTATION
    if _RGB is not None:
        flags = (flags & ~cv2.IMREAD_COLOR) | _RGB
    pixels = noting(lambda: cv2.imdecode(np.frombuffer(data, np.uint8), flags), notes)  # libjpeg's warnings: notes
    if pixels is None or pixels.shape != (-(-height // scale), -(-width // scale), 3):
        return None
    return pixels if _RGB is not None else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def decode(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` into an upright, C-contiguous ``(H, W, 3)`` uint8 RGB array (see :func:`decode_sized`)."""
    return decode_sized(path, max_pixels=max_pixels)[0]


def decode_sized(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 at_least=None, notes: list | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` into an upright, C-contiguous ``(H, W, 3)`` uint8 RGB array and its full size
    (height, width). With ``at_least``, a function of the full (height, width) that returns the
    smallest (height, width) the caller needs (or None for full size), a plain JPEG may be
    decoded reduced by 2, 4 or 8 in libjpeg (:func:`reduction`); other files decode at full size.
    ``notes`` (a list) receives libjpeg's warnings ("Corrupt JPEG data: ..."), kept off stderr.
    Errors: see :func:`decode_pair`.
    """
    image, _, size = decode_pair(path, max_pixels=max_pixels, at_least=at_least, notes=notes)
    return image, size


def decode_pair(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, at_least=None,
                model: tuple[int, int] | None = None, notes: list | None = None
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """:func:`decode_sized`'s image (the pictures' decode, ``at_least``), the decode a model input is
    made from, and the full size. The model's decode is the plain JPEG reduced as far as it stays at
    least ``model`` = (height, width) on each side, whatever ``at_least`` asks, so the model sees
    the same pixels whatever size the pictures are; it is the same array when both reductions agree
    (and for every other file, decoded whole once). ``model=None``: the pictures' decode.
    ``notes``: libjpeg's warnings, each once.

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
    _check_regular_file(path)
    fh = _open_file(path)
    with fh, _pillow_limit_off():
        size, head = _read_head(path, fh)
        try:
            im = Image.open(fh)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types
            raise _header_error(path, exc, head, size) from None

        with im:
            width, height = _checked_size(path, im, max_pixels)
            fmt = im.format or "image"
            small = None
            if fmt == "JPEG" and im.mode == "RGB" and _orientation(im) == 1:
                fh.seek(0)
                data = fh.read()
                scale = reduction(height, width, at_least(height, width) if at_least else None)
                own = scale if model is None else reduction(height, width, model)
                small = _decode_plain_jpeg(data, width, height, own, notes)
                again: list[str] = []
                picture = (small if own == scale or small is None
                           else _decode_plain_jpeg(data, width, height, scale, again))
                if notes is not None:
                    notes.extend(n for n in again if n not in notes)
                if picture is not None:
                    return picture, small, (height, width)
            _load_pixels(path, im, fmt)
            arr = _upright_rgb(path, im, fmt)

    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ImageError(path, "corrupt", f"unexpected decoded shape {arr.shape}")
    arr = np.ascontiguousarray(arr)
    return arr, arr if small is None else small, arr.shape[:2]


def _open_file(path: str) -> BinaryIO:
    """``path`` opened for binary reading; ``missing`` or ``unreadable`` when it cannot be."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ImageError(path, "missing", "file vanished before it could be read") from None
    except PermissionError:
        raise ImageError(path, "unreadable", "permission denied (make the file readable, e.g. chmod +r)") from None
    except IsADirectoryError:
        raise ImageError(path, "unreadable", "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(path, "unreadable", f"cannot open file: {_describe(exc)}") from None


def _read_head(path: str, fh) -> tuple[int, bytes]:
    """The open file's size and first 16 bytes (rewound after); ``empty`` for 0 bytes."""
    try:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(16)
        fh.seek(0)
    except OSError as exc:
        raise ImageError(path, "unreadable", f"cannot read file: {_describe(exc)}") from None
    if size == 0:
        raise ImageError(path, "empty", "file is empty (0 bytes)")
    return size, head


def _checked_size(path: str, im: Image.Image, max_pixels: int) -> tuple[int, int]:
    """The header's (width, height); ``corrupt`` if not positive, ``too_large`` over ``max_pixels``."""
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
    return width, height


def _load_pixels(path: str, im: Image.Image, fmt: str) -> None:
    """Force the full decode of the first frame; ``truncated`` or ``corrupt`` when it fails."""
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


def _upright_rgb(path: str, im: Image.Image, fmt: str) -> np.ndarray:
    """The loaded image, EXIF orientation applied, as RGB (:func:`~gradcam_cli.io.pixels.pillow_to_rgb`)."""
    try:
        orientation = _orientation(im)
        upright = ImageOps.exif_transpose(im) if orientation != 1 else im
        return pillow_to_rgb(upright)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        if _looks_truncated(exc):
            raise ImageError(path, "truncated", f"{fmt} file is truncated: {_describe(exc)}") from None
        raise ImageError(
            path, "corrupt", f"cannot convert {fmt} image (mode {im.mode}) to RGB: {_describe(exc)}"
        ) from None
