"""DICOM inputs (io/dicom.py, issue 25): pydicom's bundled test files. The model input is the
modality values (Hounsfield units for CT) through the profile's preprocessing, never an 8-bit copy;
MONOCHROME1 is inverted; a stack is one input per frame; what cannot be decoded is one error record."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from helpers import dicom_copy, truncated_copy
from pydicom.data import get_testdata_file

from gradcam_cli.config.profiles import Profile
from gradcam_cli.io import dicom
from gradcam_cli.io.discover import DEFAULT_EXTENSIONS, InputRef, iter_inputs
from gradcam_cli.run.step import Item, decode_item
from gradcam_cli.settings import DepthSettings

#: float32 rounding: Hounsfield units up to ~3000 held in float32 (exact: integers below 2**24) and
#: normalised in float32 ('tf': x / 127.5 - 1, relative error ~1e-7, ~3e-6 absolute at |x| ~ 25)
ROUNDING = 1e-5


def profile(preprocessing: str = "none", size: int = 128, channels: int = 1) -> Profile:
    return Profile(name="t", builder=None, input_size=(size, size), target_layer="auto", preprocessing=preprocessing,
                   channels=channels)


def hounsfield(name: str) -> np.ndarray:
    """The independent reference: pydicom's stored values times the slope plus the intercept."""
    ds = pydicom.dcmread(get_testdata_file(name))
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.mark.parametrize("preprocessing", ["none", "tf"])
def test_the_model_input_is_the_hounsfield_array_through_the_preprocessing(preprocessing):
    path = get_testdata_file("CT_small.dcm")
    hu = hounsfield("CT_small.dcm")
    assert hu.min() < -800 and hu.max() > 1000  # Hounsfield units: air to bone, not 0..255
    item = decode_item(InputRef(path, "ct"), profile(preprocessing))
    assert isinstance(item, Item) and item.model_input.shape == (128, 128, 1)
    expected = hu if preprocessing == "none" else hu / 127.5 - 1.0
    assert np.abs(item.model_input[..., 0] - expected).max() <= ROUNDING * max(1.0, np.abs(expected).max())
    eight_bit = item.image[..., 0].astype(np.float64)  # the windowed 8-bit view: not what the model got
    assert np.abs((eight_bit if preprocessing == "none" else eight_bit / 127.5 - 1) - expected).max() > 1
    assert item.full_depth == {"format": "DICOM", "modality": "CT", "bits": 16, "photometric": "MONOCHROME2",
                               "units": "HU", "pixel_spacing": [0.661468, 0.661468], "intensity": "raw",
                               "window": item.full_depth["window"], "window_from": "percentiles"}


def test_a_ct_window_for_a_model_trained_on_windowed_slices():
    hu = hounsfield("CT_small.dcm")
    item = decode_item(InputRef(get_testdata_file("CT_small.dcm"), "ct"), profile("scale"),
                       depth=DepthSettings(intensity="window", window=(40.0, 400.0)))
    expected = np.clip((hu - (40.0 - 200.0)) / 400.0 * 255.0, 0.0, 255.0) / 255.0  # then 'scale': x / 255
    assert np.abs(item.model_input[..., 0] - expected).max() <= ROUNDING
    assert item.full_depth["window"] == [40.0, 400.0] and item.full_depth["window_from"] == "option"


def test_the_files_own_window_draws_the_view():
    """MR_small.dcm holds WindowCenter 600, WindowWidth 1600: the view is pydicom's own LINEAR_EXACT
    windowing of it (an independent implementation), scaled from its output range to 0..255."""
    from pydicom.pixels import apply_windowing

    item = decode_item(InputRef(get_testdata_file("MR_small.dcm"), "mr"), profile(size=64))
    assert item.full_depth["window"] == [600.0, 1600.0] and item.full_depth["window_from"] == "file"
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.VOILUTFunction = "LINEAR_EXACT"
    windowed = apply_windowing(ds.pixel_array.astype(np.float64), ds)  # onto -32768..32767 (signed 16 bits)
    reference = np.rint((windowed + 32768.0) / 65535.0 * 255.0)
    assert np.abs(item.image[..., 0].astype(float) - reference).max() <= 1  # rounding at .5 only


def test_monochrome1_is_inverted(tmp_path):
    """No bundled file is MONOCHROME1 offline: MR_small.dcm relabelled, so the two differ in that alone."""
    plain = get_testdata_file("MR_small.dcm")
    inverted = dicom_copy("MR_small.dcm", tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1")
    a = decode_item(InputRef(plain, "a"), profile(size=64))
    b = decode_item(InputRef(str(inverted), "b"), profile(size=64))
    assert np.array_equal(b.image, 255 - a.image)  # the view: bright is dense again
    stored = pydicom.dcmread(plain).pixel_array.astype(np.float64)  # signed 16 bits: lo + hi = -1
    assert np.array_equal(b.model_input[..., 0], (-1.0 - stored).astype(np.float32))
    ranged = decode_item(InputRef(str(inverted), "b"), profile(size=64), depth=DepthSettings(intensity="range"))
    assert np.abs(ranged.model_input[..., 0] - (255.0 - (stored + 32768.0) * 255.0 / 65535.0)).max() <= ROUNDING * 255
    assert b.full_depth["photometric"] == "MONOCHROME1"


def test_a_stack_is_one_input_per_frame(tmp_path):
    dose = tmp_path / "dose.dcm"
    dose.write_bytes(open(get_testdata_file("rtdose.dcm"), "rb").read())
    refs = list(iter_inputs([str(tmp_path)]))
    assert [(r.out_stem, r.frame) for r in refs] == [(f"dose.frame{k:02d}", k) for k in range(1, 16)]
    assert len({r.key for r in refs}) == 15  # one identity per frame, in resume and the journal
    ds = pydicom.dcmread(str(dose))
    for ref in (refs[0], refs[6], refs[14]):
        item = decode_item(ref, profile(size=10))
        expected = ds.pixel_array[ref.frame - 1].astype(np.float64) * float(ds.DoseGridScaling)  # Gy
        assert np.abs(item.model_input[..., 0] - expected).max() <= ROUNDING
        assert item.full_depth["frames"] == 15 and item.full_depth["units"] == "Gy"


def test_extension_less_dicom_is_found_by_its_preamble(tmp_path):
    (tmp_path / "IM0001").write_bytes(open(get_testdata_file("MR_small.dcm"), "rb").read())
    (tmp_path / "README").write_text("not an image")
    (tmp_path / "ct.dcm").write_bytes(open(get_testdata_file("CT_small.dcm"), "rb").read())
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    found = [r.out_stem for r in iter_inputs([str(tmp_path)], extensions=DEFAULT_EXTENSIONS)]
    assert found == ["IM0001", "ct", "photo"]
    assert [r.out_stem for r in iter_inputs([str(tmp_path)], extensions=[".png"])] == ["photo"]
    assert [r.out_stem for r in iter_inputs([str(tmp_path / "*")])] == ["IM0001", "ct", "photo"]  # a glob too
    assert isinstance(decode_item(InputRef(str(tmp_path / "IM0001"), "IM0001"), profile(size=64)), Item)


def test_an_undecodable_transfer_syntax_is_one_error_record_naming_it():
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    with pytest.raises(RuntimeError):  # the condition: this venv has no JPEG-LS decoder for pydicom
        pydicom.dcmread(path).pixel_array
    record = decode_item(InputRef(path, "jls"), profile(size=64))
    assert record == {"path": path, "status": "error", "kind": "unsupported",
                      "message": "transfer syntax JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80) cannot "
                                 "be decoded here: install a pydicom decoder plugin for it (pylibjpeg, pyjpegls or "
                                 "gdcm; see pydicom's pixel data handlers)"}


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.6, 0.99])
def test_a_truncated_file_is_one_error_record(tmp_path, fraction):
    cut = truncated_copy(get_testdata_file("CT_small.dcm"), tmp_path / "cut.dcm", fraction)
    record = decode_item(InputRef(str(cut), "cut", None), profile())
    assert record["status"] == "error" and record["kind"] == "truncated", record
    assert "\n" not in record["message"] and "re-copy" in record["message"]


def test_other_bad_dicom_inputs(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "text.dcm").write_text("hello, not a DICOM file")
    kinds = {name: decode_item(InputRef(str(tmp_path / name), name), profile())["kind"]
             for name in ("empty.dcm", "text.dcm")}
    assert kinds == {"empty.dcm": "empty", "text.dcm": "not_an_image"}
    bundled = decode_item(InputRef(get_testdata_file("MR_truncated.dcm"), "mr"), profile(size=64))
    assert bundled["kind"] == "truncated"
    too_big = decode_item(InputRef(get_testdata_file("CT_small.dcm"), "ct"), profile(), max_pixels=1000)
    assert too_big["kind"] == "too_large" and "16,384 pixels" in too_big["message"]
    frame = decode_item(InputRef(str(tmp_path / "empty.dcm"), "e.frame2", 2), profile())
    assert frame["frame"] == 2  # a frame's error record names its frame


def test_without_pydicom_a_dicom_input_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)  # import pydicom -> ImportError
    record = decode_item(InputRef(get_testdata_file("CT_small.dcm"), "ct"), profile())
    assert record["kind"] == "needs_extra"
    assert record["message"] == ("is a DICOM file; reading it needs the [medical] extra: pip install "
                                 "'gradcam-cli[medical]' (from the repository: pip install -e '.[medical]')")
    assert dicom.frame_count(get_testdata_file("rtdose.dcm")) == 1  # listed as one input, whose decode says why
