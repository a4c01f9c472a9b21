"""DICOM files (the ``[medical]`` extra: pydicom), read into full-depth :class:`~gradcam_cli.io.depth.Scan` s.

pydicom is imported here only, and only when a DICOM file is read or its frames are counted:
``gradcam --help`` and runs on photos never import it. Without it, a DICOM input gets one
``needs_extra`` error naming the install (:data:`MEDICAL_EXTRA`); the CLI says so before any
model loads.

What is read (documented behaviour, docs/medical.md):

* A file is DICOM when its extension is ``.dcm`` / ``.dicom``, or when it has the 128-byte
  preamble followed by ``DICM`` (extension-less files from a scanner, ``IM0001``).
* The values are the modality's: the stored values times ``RescaleSlope`` plus
  ``RescaleIntercept`` (Hounsfield units for CT; an RT dose's ``DoseGridScaling``, Gy; the
  top-level attributes, else the frame's or the shared functional group's). A Modality LUT
  Sequence is not applied. Their container range (``--intensity range``) is the stored bits'
  range (``BitsStored``, signed per ``PixelRepresentation``) through the same rescale.
* The view's window is the file's first ``WindowCenter`` / ``WindowWidth`` (top level, else the
  frame's functional groups) unless ``--window`` is given; MONOCHROME1 is inverted.
* A multi-frame file is a stack: each frame is an input of its own (``frame`` 1..N in its record,
  DICOM's own numbering; its output stem ``NAME.frameK``), counted when the inputs are listed.
* Colour images (RGB, YBR, palette) of 8 bits go the way of photos (8-bit RGB); others are refused.
* A transfer syntax pydicom cannot decode here gives one ``unsupported`` error naming it.

**Nothing identifying is ever read out**: only ``Modality``, the geometry (``Rows``, ``Columns``,
``NumberOfFrames``, ``PixelSpacing``), the pixel module and the rescale / window attributes are
accessed (pydicom converts an element's value only when it is accessed), and a record holds only
those (:func:`_info`). Error messages are this module's own and name the file and, for a transfer
syntax, its UID and name; pydicom's exception text is never passed on, as it could quote a value.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gradcam_cli.errors import ImageError
from gradcam_cli.io.access import check_regular_file, has_preamble
from gradcam_cli.io.depth import Scan

__all__ = ["DICOM_EXTENSIONS", "MEDICAL_EXTRA", "has_preamble", "is_dicom", "pydicom_available", "frame_count",
           "read_dicom"]

DICOM_EXTENSIONS = (".dcm", ".dicom")
MEDICAL_EXTRA = "pip install 'gradcam-cli[medical]' (from the repository: pip install -e '.[medical]')"
#: extensions of the image formats Pillow reads: never sniffed for the DICOM preamble
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def is_dicom(path: str) -> bool:
    """A ``.dcm`` / ``.dicom`` file, or one of another (or no) extension with the ``DICM`` preamble."""
    ext = os.path.splitext(path)[1].lower()
    if ext in DICOM_EXTENSIONS:
        return True
    return ext not in _IMAGE_EXTENSIONS and has_preamble(path)


def pydicom_available() -> bool:
    """Whether the ``[medical]`` extra's pydicom can be imported."""
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


def _pydicom(path: str):
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401
    except ImportError:
        raise ImageError(path, "needs_extra", f"is a DICOM file; reading it needs the [medical] extra: "
                                              f"{MEDICAL_EXTRA}") from None
    return pydicom


def frame_count(path: str) -> int:
    """``NumberOfFrames`` of a DICOM file from its header; 1 when it has none, cannot be read or
    pydicom is missing (decoding then names the problem)."""
    try:
        import pydicom
    except ImportError:
        return 1
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=["NumberOfFrames"])
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except Exception:  # noqa: BLE001 - any unreadable header: one input, whose decode names it
        return 1


def _number(value: Any, default: float | None = None) -> float | None:
    """The first number of a DICOM value (a MultiValue gives its first), or ``default``."""
    if value is None or value == "":
        return default
    try:
        if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
            value = value[0] if len(value) else None
        return default if value is None else float(value)
    except (TypeError, ValueError, IndexError):
        return default


def _group_item(ds: Any, frame: int, sequence: str) -> Any:
    """The item of a functional-group ``sequence`` for ``frame`` (per-frame first, then shared)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame - 1), ("SharedFunctionalGroupsSequence", 0)):
        try:
            item = ds.get(groups)[index].get(sequence)
            if item:
                return item[0]
        except (TypeError, IndexError, AttributeError, KeyError):
            continue
    return None


def _attribute(ds: Any, frame: int, name: str, sequence: str) -> Any:
    """A top-level attribute, else the same in the frame's functional group ``sequence``."""
    value = ds.get(name)
    if value is None or value == "":
        item = _group_item(ds, frame, sequence)
        value = None if item is None else item.get(name)
    return value


def _rescale(ds: Any, frame: int) -> tuple[float, float]:
    """(slope, intercept) of the modality values."""
    slope = _number(_attribute(ds, frame, "RescaleSlope", "PixelValueTransformationSequence"), None)
    intercept = _number(_attribute(ds, frame, "RescaleIntercept", "PixelValueTransformationSequence"), 0.0)
    if slope is None and str(ds.get("Modality", "")) == "RTDOSE":
        slope = _number(ds.get("DoseGridScaling"), None)
    return (1.0 if slope is None or slope == 0 else slope), intercept


def _window(ds: Any, frame: int) -> tuple[float, float] | None:
    centre = _number(_attribute(ds, frame, "WindowCenter", "FrameVOILUTSequence"))
    width = _number(_attribute(ds, frame, "WindowWidth", "FrameVOILUTSequence"))
    return None if centre is None or width is None or not width > 0 else (centre, width)


def _info(ds: Any, frames: int, units: str | None) -> dict:
    """The record's ``full_depth`` fields: the format, modality and geometry only (never a name,
    an id, a date or a UID)."""
    info: dict = {"format": "DICOM", "modality": str(ds.get("Modality", "") or "") or None,
                  "bits": int(ds.get("BitsStored", 0) or 0) or None,
                  "photometric": str(ds.get("PhotometricInterpretation", "") or "") or None}
    if units:
        info["units"] = units
    spacing = ds.get("PixelSpacing")
    if spacing is not None and len(spacing) == 2:
        try:
            info["pixel_spacing"] = [float(spacing[0]), float(spacing[1])]
        except (TypeError, ValueError):
            pass
    if frames > 1:
        info["frames"] = frames
    return info


def _units(ds: Any) -> str | None:
    kind = str(ds.get("RescaleType", "") or "")
    if kind:
        return kind
    modality = str(ds.get("Modality", "") or "")
    return {"CT": "HU", "RTDOSE": "Gy"}.get(modality)


def _read(path: str, pydicom: Any) -> Any:
    """The dataset (pixel data included, undecoded); ImageError when it cannot be read."""
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, force=True)
    except InvalidDicomError:
        raise ImageError(path, "not_an_image", "not a DICOM file (no 'DICM' preamble and no readable "
                                               "data set)") from None
    except (EOFError, OSError) as exc:
        if isinstance(exc, EOFError) or "end of file" in str(exc).lower():
            raise ImageError(path, "truncated", "DICOM file is truncated (re-copy or re-export it)") from None
        raise ImageError(path, "unreadable", f"cannot read DICOM file ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged data set; pydicom's text may quote values
        raise ImageError(path, "corrupt", f"cannot read the DICOM data set ({type(exc).__name__})") from None


def _checked(path: str, ds: Any, max_pixels: int) -> tuple[int, int, int]:
    """(rows, columns, frames) of a dataset that holds an image, within ``max_pixels``."""
    if "PixelData" not in ds:
        meta = getattr(ds, "file_meta", None)
        syntax = meta is not None and "TransferSyntaxUID" in meta
        if not syntax and not has_preamble(path):
            raise ImageError(path, "not_an_image", "not a DICOM file (no 'DICM' preamble and no file meta "
                                                   "information)")
        classes = [getattr(holder.get(key) if holder is not None else None, "name", "")
                   for holder, key in ((meta, "MediaStorageSOPClassUID"), (ds, "SOPClassUID"))]
        if not syntax or ds.get("Rows") is not None or any("Image Storage" in str(c) for c in classes):
            raise ImageError(path, "truncated", "DICOM file ends before its pixel data (truncated; re-copy or "
                                                "re-export it)")
        modality = str(ds.get("Modality", "") or "unknown")
        raise ImageError(path, "not_an_image", f"DICOM file holds no image (no Pixel Data; modality {modality})")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows <= 0 or columns <= 0:
        raise ImageError(path, "corrupt", f"DICOM image has an invalid size {columns}x{rows}")
    if rows * columns > max_pixels:
        raise ImageError(path, "too_large", f"image is {columns}x{rows} = {rows * columns:,} pixels, over the limit "
                                            f"of {max_pixels:,}; raise it with --max-pixels if the file is trusted")
    return rows, columns, max(1, int(ds.get("NumberOfFrames", 1) or 1))


def _pixels(path: str, ds: Any, frame: int, frames: int) -> np.ndarray:
    """One frame's stored values, decoded; ImageError naming an undecodable transfer syntax."""
    from pydicom.pixels import pixel_array

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return pixel_array(ds, index=frame - 1) if frames > 1 else pixel_array(ds)
    except MemoryError:
        raise
    except ValueError as exc:
        if "less than expected" in str(exc) or "cannot reshape" in str(exc):
            raise ImageError(path, "truncated", "DICOM pixel data is shorter than its rows, columns and frames "
                                                "say (truncated; re-copy or re-export it)") from None
        raise ImageError(path, "corrupt", f"cannot decode the DICOM pixel data ({type(exc).__name__})") from None
    except (RuntimeError, NotImplementedError) as exc:
        name = getattr(syntax, "name", None) or "unknown"
        if syntax is not None and getattr(syntax, "is_compressed", False):
            raise ImageError(path, "unsupported", f"transfer syntax {name} ({syntax}) cannot be decoded here: "
                                                  "install a pydicom decoder plugin for it (pylibjpeg, "
                                                  "pyjpegls or gdcm; see pydicom's pixel data handlers)") from None
        raise ImageError(path, "corrupt", f"cannot decode the DICOM pixel data ({type(exc).__name__}; transfer "
                                          f"syntax {name})") from None
    except Exception as exc:  # noqa: BLE001 - pydicom's text may quote values
        raise ImageError(path, "corrupt", f"cannot decode the DICOM pixel data ({type(exc).__name__})") from None


def _stored_range(ds: Any, slope: float, intercept: float) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    else:
        lo, hi = 0.0, 2.0 ** bits - 1
    ends = sorted((lo * slope + intercept, hi * slope + intercept))
    return ends[0], ends[1]


def read_dicom(path: str, frame: int | None = None, max_pixels: int = 178_956_970) -> Scan | np.ndarray:
    """Frame ``frame`` (1-based; None: a single-frame file's image, or a stack's first) of a DICOM
    file: a grey :class:`Scan` of its modality values, or, for an 8-bit colour image, (H, W, 3)
    uint8 RGB. Raises :class:`ImageError` (``needs_extra``, ``missing``, ``unreadable``, ``empty``,
    ``not_an_image``, ``truncated``, ``too_large``, ``unsupported``, ``corrupt``)."""
    check_regular_file(path)
    if os.path.getsize(path) == 0:
        raise ImageError(path, "empty", "file is empty (0 bytes)")
    pydicom = _pydicom(path)
    ds = _read(path, pydicom)
    _, _, frames = _checked(path, ds, max_pixels)
    frame = 1 if frame is None else int(frame)
    if not 1 <= frame <= frames:
        raise ImageError(path, "missing", f"has {frames} frame(s), not a frame {frame} (the file changed since it "
                                          "was listed)")
    stored = _pixels(path, ds, frame, frames)
    photometric = str(ds.get("PhotometricInterpretation", "") or "MONOCHROME2").strip().upper()
    if stored.ndim == 3 or not photometric.startswith("MONOCHROME"):
        return _colour(path, ds, stored, photometric)
    slope, intercept = _rescale(ds, frame)
    values = np.asarray(stored, np.float64) * slope + intercept
    return Scan(values=np.ascontiguousarray(values, np.float32), value_range=_stored_range(ds, slope, intercept),
                auto="raw", window=_window(ds, frame), invert=photometric == "MONOCHROME1",
                info=_info(ds, frames, _units(ds)))


def _colour(path: str, ds: Any, stored: np.ndarray, photometric: str) -> np.ndarray:
    """An 8-bit colour frame as RGB uint8 (palette colour through its lookup table)."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        stored = apply_color_lut(stored, ds)
        if stored.dtype != np.uint8:  # 16-bit palette entries: their top 8 bits
            stored = (np.asarray(stored, np.uint32) >> 8).astype(np.uint8)
    if stored.ndim != 3 or stored.shape[2] != 3 or stored.dtype != np.uint8:
        raise ImageError(path, "unsupported", f"DICOM colour image ({photometric}, {int(ds.get('BitsStored', 0) or 0)} "
                                              "bits) is not supported: only grey images and 8-bit colour are")
    return np.ascontiguousarray(stored)
