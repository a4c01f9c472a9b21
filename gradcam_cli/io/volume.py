"""Volumes (the ``[medical]`` extra): NIfTI files (nibabel) and DICOM series (pydicom), read into a :class:`Volume`.

* **NIfTI** (``.nii``, ``.nii.gz``): the data scaled by the header's ``scl_slope`` / ``scl_inter``
  (nibabel's ``get_fdata``), float32, in the file's voxel order (i, j, k[, t]); the affine and the
  header are kept, to write the maps back on the same grid. A 4th dimension is the channels
  (a 4-D model input's last axis); whether the model takes it is checked by the runner.
* **A DICOM series**: a folder holding the slices of one series (every regular, non-hidden file of
  it is read; one ``SeriesInstanceUID``, compared and never written). Slices are ordered along the
  slice normal (the cross product of ``ImageOrientationPatient``'s row and column directions) by
  ``ImagePositionPatient``, else by ``InstanceNumber``; each is rescaled by its own slope /
  intercept (Hounsfield units for CT). A MONOCHROME1 series (low values bright) is marked
  ``invert`` with its stored range through the rescale (``value_range``, the union over its slices)
  and inverted on the model's scale as single files are (:mod:`gradcam_cli.io.depth`); a series
  mixing MONOCHROME1 and MONOCHROME2 slices is refused. The volume's axes are (column, row, slice) as NIfTI's
  (i, j, k), and its affine maps them to RAS millimetres (DICOM's LPS with x and y negated), so a
  map written back lies where the series does in a viewer.

Only geometry, pixel and rescale tags are read, as for single DICOM files (:mod:`gradcam_cli.io.dicom`):
``Info`` holds the format, modality, shape, voxel size and units, never a name, id, date or UID.
Every error is an :class:`~gradcam_cli.errors.ImageError` with one line of this module's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradcam_cli.errors import ImageError
from gradcam_cli.io.access import check_regular_file
from gradcam_cli.io.depth import Scan

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
#: the slices of a DICOM series must agree on these (rows, columns, orientation)
_GEOMETRY = ("Rows", "Columns")


@dataclass(frozen=True)
class Volume:
    """One volume: values (X, Y, Z) or (X, Y, Z, C) float32, the affine to RAS mm, and the record's fields."""

    values: np.ndarray
    affine: np.ndarray  # (4, 4) float64
    header: Any = None  # the NIfTI header to write maps with (None: a DICOM series; a fresh one)
    info: dict = field(default_factory=dict)
    window: tuple[float, float] | None = None  # a DICOM series' own window (its first slice's)
    invert: bool = False  # a MONOCHROME1 series: low values are bright
    value_range: tuple[float, float] | None = None  # a DICOM series' stored range through its rescale


def is_nifti(path: str) -> bool:
    lower = path.lower()
    return lower.endswith((".nii", ".nii.gz"))


def _nibabel(path: str):
    try:
        import nibabel
    except ImportError:
        from gradcam_cli.io.dicom import MEDICAL_EXTRA

        raise ImageError(path, "needs_extra", f"is a NIfTI volume; reading it needs the [medical] extra: "
                                              f"{MEDICAL_EXTRA}") from None
    return nibabel


def nifti_shape(path: str) -> tuple[int, ...]:
    """The data shape from the header only (no voxels read)."""
    check_regular_file(path)
    nibabel = _nibabel(path)
    try:
        return tuple(int(n) for n in nibabel.load(path).shape)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types
        raise ImageError(path, "corrupt", f"not a readable NIfTI file ({type(exc).__name__})") from None


def read_nifti(path: str) -> Volume:
    """The NIfTI volume in ``path``; ImageError ``missing``, ``empty``, ``corrupt``, ``truncated``, ``unsupported``."""
    check_regular_file(path)
    if os.path.getsize(path) == 0:
        raise ImageError(path, "empty", "file is empty (0 bytes)")
    nibabel = _nibabel(path)
    try:
        image = nibabel.load(path)
    except Exception as exc:  # noqa: BLE001
        raise ImageError(path, "corrupt", f"not a readable NIfTI file ({type(exc).__name__})") from None
    if len(image.shape) not in (3, 4) or min(image.shape) < 1:
        raise ImageError(path, "unsupported", f"NIfTI data of shape {tuple(image.shape)}: a volume is 3-D, or 4-D "
                                              "with channels last")
    try:
        values = np.asarray(image.get_fdata(dtype=np.float32), np.float32)
    except (EOFError, ValueError, OSError) as exc:
        raise ImageError(path, "truncated", f"NIfTI data ends before its header's shape {tuple(image.shape)} "
                                            f"({type(exc).__name__}; re-copy or re-export it)") from None
    np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)  # in place: no second copy of a volume
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    info = {"format": "NIfTI", "shape": list(values.shape), "voxel_size": zooms}
    return Volume(np.ascontiguousarray(values), np.asarray(image.affine, np.float64), image.header, info)


# --------------------------------------------------------------------------- #
# DICOM series


def series_files(folder: str) -> list[str]:
    """The regular, non-hidden files directly in ``folder``, sorted by name."""
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def _slice(path: str, pydicom) -> Any:
    from gradcam_cli.io import dicom

    ds = dicom._read(path, pydicom)
    dicom._checked(path, ds, 1 << 31)
    return ds


def _floats(value: Any, n: int) -> list[float] | None:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def read_series(folder: str) -> Volume:
    """The DICOM series in ``folder`` as one volume (see the module docstring). ImageError naming the
    slice that cannot be read (``truncated``, ``corrupt``, ...), or ``unsupported`` for a folder that is
    not one series of equal grey slices."""
    from gradcam_cli.io import dicom

    files = series_files(folder)
    if not files:
        raise ImageError(folder, "empty", "folder holds no files: a DICOM series is a folder of its slices")
    pydicom = dicom._pydicom(folder)
    slices = []
    for path in files:
        ds = _slice(path, pydicom)
        scan = dicom.read_dicom(path)
        if not isinstance(scan, Scan):
            raise ImageError(path, "unsupported", "a colour DICOM image in a series: volumes are grey")
        slices.append((path, ds, scan))
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds, _ in slices}
    if len(series) > 1:
        raise ImageError(folder, "unsupported", f"folder holds {len(series)} DICOM series; give each series its own "
                                                "folder")
    shapes = {s.values.shape for _, _, s in slices}
    if len(shapes) > 1:
        raise ImageError(folder, "unsupported", f"slices of different sizes in one series: {sorted(shapes)}")
    if len({s.invert for _, _, s in slices}) > 1:
        raise ImageError(folder, "unsupported", "slices of MONOCHROME1 and MONOCHROME2 in one series: its slices must "
                                                "share one photometric interpretation")
    return _stack(folder, slices)


def _stack(folder: str, slices: list) -> Volume:
    """Order the slices, stack them as (column, row, slice) and build the RAS affine."""
    first = slices[0][1]
    orientation = _floats(first.get("ImageOrientationPatient"), 6)
    positions = [_floats(ds.get("ImagePositionPatient"), 3) for _, ds, _ in slices]
    spacing = _floats(first.get("PixelSpacing"), 2) or [1.0, 1.0]
    if orientation is not None and all(p is not None for p in positions):
        row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
        normal = np.cross(row, col)
        order = sorted(range(len(slices)), key=lambda i: float(np.dot(positions[i], normal)))
        ordered = [positions[i] for i in order]
        step = (np.asarray(ordered[-1]) - np.asarray(ordered[0])) / max(1, len(order) - 1) if len(order) > 1 \
            else normal * float(first.get("SliceThickness", 1.0) or 1.0)
        origin, how = np.asarray(ordered[0]), "position"
    else:
        order = sorted(range(len(slices)), key=lambda i: int(slices[i][1].get("InstanceNumber", 0) or 0))
        row, col, step = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])
        origin, how = np.zeros(3), "instance_number"
    lps = np.eye(4)
    lps[:3, 0] = row * spacing[1]  # i: along a row (columns advance), the column spacing
    lps[:3, 1] = col * spacing[0]  # j: down a column (rows advance), the row spacing
    lps[:3, 2] = step
    lps[:3, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    values = np.stack([slices[i][2].values.T for i in order], axis=-1)  # (columns, rows, slices)
    scan = slices[order[0]][2]
    info = {"format": "DICOM series", "modality": scan.info.get("modality"), "slices": len(order),
            "shape": list(values.shape), "voxel_size": [float(spacing[1]), float(spacing[0]),
                                                         float(np.linalg.norm(step))],
            "sorted_by": how, "photometric": "MONOCHROME1" if scan.invert else "MONOCHROME2"}
    if scan.info.get("units"):
        info["units"] = scan.info["units"]
    value_range = (min(s.value_range[0] for _, _, s in slices), max(s.value_range[1] for _, _, s in slices))
    return Volume(np.ascontiguousarray(values, np.float32), affine, None, info, scan.window, scan.invert, value_range)


def read_volume(path: str) -> Volume:
    """A NIfTI file or a DICOM series folder."""
    return read_series(path) if os.path.isdir(path) else read_nifti(path)


# --------------------------------------------------------------------------- #
# a volume's slices as 2-D inputs (a 2-D model, ``--slice-axis``)


def slice_count(path: str, axis: int) -> int:
    """How many slices a NIfTI volume has along ``axis`` (header only); 1 when it cannot be read
    (its decode names the problem)."""
    try:
        shape = nifti_shape(path)
    except ImageError:
        return 1
    return int(shape[axis]) if len(shape) in (3, 4) and axis < len(shape) else 1


def slice_scan(path: str, axis: int, number: int) -> Scan:
    """Slice ``number`` (1-based) along ``axis`` of a 3-D NIfTI volume as a full-depth :class:`Scan`
    (values as they are: ``--intensity auto`` is ``raw`` for them, the view's window the percentiles
    of the slice unless ``--window``). A 4-D volume is refused: one channel per slice is all a 2-D
    grey model takes."""
    volume = read_nifti(path)
    if volume.values.ndim != 3:
        raise ImageError(path, "unsupported", f"NIfTI volume of shape {tuple(volume.values.shape)} has a 4th "
                                              "dimension: slices of a 4-D volume are not 2-D images; give a 3-D "
                                              "volume (one channel)")
    count = volume.values.shape[axis]
    if not 1 <= number <= count:
        raise ImageError(path, "missing", f"has {count} slices along axis {axis}, not a slice {number}")
    plane = np.take(volume.values, number - 1, axis=axis)
    lo, hi = float(volume.values.min()), float(volume.values.max())
    info = {**volume.info, "slice_axis": axis, "slice": number - 1}
    return Scan(values=np.ascontiguousarray(plane, np.float32), value_range=(lo, hi if hi > lo else lo + 1.0),
                auto="raw", info=info)
