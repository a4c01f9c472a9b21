"""Volumes in (io/volume.py) and maps out (io/writers.write_nifti, render/resample.upsample_trilinear)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import dicom_copy, truncated_copy
from reference import trilinear_numpy

from gradcam_cli.errors import ImageError
from gradcam_cli.io import writers
from gradcam_cli.io.volume import read_nifti, read_series, slice_scan
from gradcam_cli.render.resample import upsample_trilinear

nibabel = pytest.importorskip("nibabel")


def ct_series(folder, positions, **tags):
    """pydicom's CT_small.dcm as a series: one slice per z position, written in reversed name order,
    each slice's values marked with its z (RescaleIntercept = z * 10) so the order can be read back."""
    paths = []
    for n, z in enumerate(positions):
        paths.append(dicom_copy("CT_small.dcm", folder / f"slice{len(positions) - n:02d}.dcm",
                                ImagePositionPatient=[-158.0, -179.0, float(z)], InstanceNumber=len(positions) - n,
                                RescaleIntercept=float(z) * 10, RescaleSlope=1, **tags))
    return paths


def test_a_dicom_series_is_sorted_by_position_rescaled_and_placed(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    positions = [30.0, -10.0, 10.0, 50.0]
    ct_series(tmp_path / "s", positions)
    volume = read_series(str(tmp_path / "s"))
    stored = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(np.float32)
    assert volume.values.shape == (128, 128, 4)  # (columns, rows, slices)
    for k, z in enumerate(sorted(positions)):  # along the slice normal, whatever the file order
        np.testing.assert_array_equal(volume.values[:, :, k], stored.T + z * 10)
    spacing = [float(v) for v in pydicom.dcmread(get_testdata_file("CT_small.dcm")).PixelSpacing]
    # RAS: DICOM's x and y negated; i along a row (column spacing), j down a column, k 20 mm apart
    np.testing.assert_allclose(volume.affine[:3, :3], np.diag([-spacing[1], -spacing[0], 20.0]), atol=1e-9)
    np.testing.assert_allclose(volume.affine[:3, 3], [158.0, 179.0, -10.0])
    assert volume.info == {"format": "DICOM series", "modality": "CT", "slices": 4, "shape": [128, 128, 4],
                           "voxel_size": [spacing[1], spacing[0], 20.0], "sorted_by": "position", "units": "HU",
                           "photometric": "MONOCHROME2"}
    assert not volume.invert


def test_a_monochrome1_series_is_marked_inverted_with_its_stored_range(tmp_path):
    """CT_small.dcm relabelled MONOCHROME1 (no bundled series is): the values stay the modality's, the
    volume says invert, and its range is the stored bits' (signed 16) through each slice's rescale,
    the union over the slices (intercepts z * 10 for z = 0, 20)."""
    ct_series(tmp_path / "s", [0.0, 20.0], PhotometricInterpretation="MONOCHROME1")
    ct_series(tmp_path / "p", [0.0, 20.0])
    inverted, plain = read_series(str(tmp_path / "s")), read_series(str(tmp_path / "p"))
    np.testing.assert_array_equal(inverted.values, plain.values)
    assert inverted.invert and inverted.info["photometric"] == "MONOCHROME1"
    assert inverted.value_range == (-32768.0, 32767.0 + 200.0)


def test_a_series_mixing_monochrome1_and_2_is_refused_in_one_line(tmp_path):
    paths = ct_series(tmp_path / "s", [0.0, 5.0, 10.0])
    dicom_copy("CT_small.dcm", paths[1], ImagePositionPatient=[-158.0, -179.0, 5.0], InstanceNumber=2,
               PhotometricInterpretation="MONOCHROME1")
    with pytest.raises(ImageError) as caught:
        read_series(str(tmp_path / "s"))
    assert caught.value.kind == "unsupported" and caught.value.message == (
        "slices of MONOCHROME1 and MONOCHROME2 in one series: its slices must share one photometric interpretation")


def test_a_truncated_slice_names_itself(tmp_path):
    paths = ct_series(tmp_path / "s", [0.0, 5.0, 10.0])
    truncated_copy(paths[1], paths[1], 0.6)
    with pytest.raises(ImageError) as caught:
        read_series(str(tmp_path / "s"))
    assert caught.value.path == str(paths[1]) and caught.value.kind == "truncated"
    assert "\n" not in caught.value.message


def test_nifti_values_affine_and_a_slice(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (6, 5, 4)).astype(np.int16)
    affine = np.array([[0, 0, 2.5, -3], [1.5, 0, 0, 4], [0, -2, 0, 9], [0, 0, 0, 1]], np.float64)
    image = nibabel.Nifti1Image(data, affine)
    image.header.set_slope_inter(0.5, -7.0)
    nibabel.save(image, tmp_path / "v.nii.gz")
    volume = read_nifti(str(tmp_path / "v.nii.gz"))
    np.testing.assert_allclose(volume.values, data * 0.5 - 7.0, atol=1e-4)
    np.testing.assert_array_equal(volume.affine, affine)
    scan = slice_scan(str(tmp_path / "v.nii.gz"), 1, 3)
    np.testing.assert_allclose(scan.values, data[:, 2, :] * 0.5 - 7.0, atol=1e-4)
    assert scan.info["slice_axis"] == 1 and scan.info["slice"] == 2 and scan.auto == "raw"


def test_the_map_written_back_has_the_volumes_grid_and_header(tmp_path):
    from nibabel.testing import data_path

    src = nibabel.load(data_path / "anatomical.nii")  # nibabel's bundled 3-D volume
    cam = np.random.default_rng(1).random(src.shape).astype(np.float32)
    writers.write_nifti(tmp_path / "map.nii.gz", cam, src.affine, src.header)
    back = nibabel.load(tmp_path / "map.nii.gz")
    assert back.shape == src.shape and back.get_data_dtype() == np.float32
    np.testing.assert_array_equal(back.affine, src.affine)
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), cam)
    np.testing.assert_array_equal(back.header.get_zooms(), src.header.get_zooms())
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_upsample_trilinear_is_the_separable_half_pixel_interpolation():
    a = np.random.default_rng(2).random((4, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(upsample_trilinear(a, (9, 7, 6)), trilinear_numpy(a.astype(np.float64), (9, 7, 6)),
                               atol=1e-6)
    np.testing.assert_array_equal(upsample_trilinear(a, a.shape), a)


def test_a_series_without_positions_is_sorted_by_instance_number(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    for n, number in enumerate([3, 1, 2]):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        del ds.ImagePositionPatient
        ds.InstanceNumber, ds.RescaleIntercept = number, float(number) * 100
        ds.save_as(tmp_path / f"f{n}.dcm")
    volume = read_series(str(tmp_path))
    assert volume.info["sorted_by"] == "instance_number"
    np.testing.assert_allclose(volume.values[0, 0] - volume.values[0, 0, 0], [0.0, 100.0, 200.0])


def test_a_nifti_2_volume_gets_a_nifti_2_map(tmp_path):
    from nibabel.testing import data_path

    src = nibabel.load(data_path / "example_nifti2.nii.gz")  # (32, 20, 12, 2), NIfTI-2
    volume = read_nifti(str(data_path / "example_nifti2.nii.gz"))
    cam = np.linspace(0, 1, 32 * 20 * 12, dtype=np.float32).reshape(32, 20, 12)
    writers.write_nifti(tmp_path / "m.nii.gz", cam, volume.affine, volume.header)
    back = nibabel.load(tmp_path / "m.nii.gz")
    assert isinstance(back, nibabel.Nifti2Image) and back.shape == (32, 20, 12)
    np.testing.assert_array_equal(back.affine, src.affine)
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), cam)
