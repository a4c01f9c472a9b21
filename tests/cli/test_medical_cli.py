"""16-bit images and DICOM through the CLI (issue 25): the model reads the full-depth values back,
matplotlib's 16-bit MR slice is drawn on its windowed view, no identifying DICOM tag reaches any
output, and resume, shards, merge, the report and evaluate work on a DICOM folder (a stack's frames
are inputs of their own)."""

from __future__ import annotations

import gzip
import json
import pathlib
import shutil

import numpy as np
import pydicom
import pytest
from helpers import (
    FLOAT_ATOL,
    dicom_copy,
    document,
    eight_bit_copies,
    full_range_values,
    invoke,
    log_records,
    temp_files,
    truncated_copy,
)
from PIL import Image
from pydicom.data import get_testdata_file

#: values written into the identifying tags of the DICOM copies; none may appear in any output
IDENTIFYING = {
    "PatientName": "Zqxjvel^Vlorpina", "PatientID": "PID-7731-XQ", "PatientBirthDate": "19230417",
    "OtherPatientIDs": "OPI-4455-ZZ", "PatientAddress": "12 Nowhere Lane Quibbleton",
    "InstitutionName": "Klinikum Qwertzuiop", "ReferringPhysicianName": "Ymmotrix^Dolores",
    "AccessionNumber": "ACC99887766", "StudyID": "STU55443", "StudyDate": "19990913",
    "OperatorsName": "Wibbleton^Sam", "InstitutionAddress": "7 Hidden Road Nowhereville",
}


def mr_slice() -> np.ndarray:
    """matplotlib's bundled MR slice: raw 16-bit big-endian, 256 x 256."""
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("s1045.ima.gz") as handle:
        data = handle.read()
    if data[:2] == b"\x1f\x8b":  # an older matplotlib hands the file over still compressed
        data = gzip.decompress(data)
    return np.frombuffer(data, ">u2").reshape(256, 256).astype(np.uint16)


@pytest.fixture(scope="module")
def mean_model(tmp_path_factory) -> pathlib.Path:
    from builders import mean_reader

    path = tmp_path_factory.mktemp("mean") / "mean.keras"
    mean_reader(32).save(path)
    return path


@pytest.fixture(scope="module")
def grey_model(tmp_path_factory) -> pathlib.Path:
    from builders import grey_cnn

    path = tmp_path_factory.mktemp("grey") / "grey.keras"
    grey_cnn(32).save(path)
    return path


def test_16_bit_pngs_reach_the_model_whole_and_are_drawn_windowed(tmp_path, mean_model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    values, mr = full_range_values(), mr_slice()
    Image.fromarray(values).save(inputs / "ramp.png")
    Image.fromarray(mr).save(inputs / "mr.png")
    out = tmp_path / "out"
    result = invoke("explain", inputs, "--model", mean_model, "--preprocess", "tf", "--out", out, "--alpha", 0,
                    "--quality", 100, "-q")
    assert result.exit_code == 0, result.stderr
    records = {pathlib.Path(r["path"]).name: r for r in document(out)["images"]}
    # the model's one output is the mean of what it was fed: the 16-bit values on 0..255, then 'tf'
    expected = float(np.mean(values.astype(np.float64) * 255.0 / 65535.0 / 127.5 - 1.0))
    value = records["ramp.png"]["predictions"][0]["value"]
    assert abs(value - expected) <= FLOAT_ATOL
    for levels in eight_bit_copies(values):  # what an 8-bit decode would have fed: this test fails it
        assert abs(float(np.mean(levels / 127.5 - 1.0)) - expected) > 100 * FLOAT_ATOL
    # the MR slice (values 0..215 of 65535): its overlay (alpha 0) is its 1st-99th percentile view
    fields = records["mr.png"]["full_depth"]
    lo, hi = np.percentile(mr.astype(np.float32), [1, 99])
    assert fields["window_from"] == "percentiles" and np.allclose(fields["window"], [(lo + hi) / 2, hi - lo])
    assert (fields["bits"], fields["intensity"], fields["value_range"]) == (16, "range", [0.0, 65535.0])
    view = np.clip((mr - lo) / (hi - lo) * 255.0, 0, 255)
    overlay = np.asarray(Image.open(out / records["mr.png"]["predictions"][0]["overlay"]).convert("L"), float)
    assert overlay.shape == (256, 256) and np.abs(overlay - view).mean() < 1.0  # JPEG at quality 100


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory) -> pathlib.Path:
    """A CT slice, a 15-frame RT dose stack and an extension-less MONOCHROME1 MR slice, each carrying
    the identifying values above."""
    folder = tmp_path_factory.mktemp("dicom") / "study"
    dicom_copy("CT_small.dcm", folder / "ct.dcm", **IDENTIFYING)
    dicom_copy("rtdose.dcm", folder / "dose.dcm", **IDENTIFYING)
    dicom_copy("MR_small.dcm", folder / "series" / "IM0001", PhotometricInterpretation="MONOCHROME1", **IDENTIFYING)
    return folder


def secrets(folder: pathlib.Path) -> list[bytes]:
    """Every identifying value in the folder's files, their UIDs and their file meta, as bytes."""
    found = set()
    for value in IDENTIFYING.values():
        found.update({value, value.replace("^", " ")} | set(value.split("^")))
    for path in [p for p in folder.rglob("*") if p.is_file()]:
        ds = pydicom.dcmread(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            if ds.get(keyword):
                found.add(str(ds.get(keyword)))
        found.update(str(ds.file_meta.get(k)) for k in ("MediaStorageSOPInstanceUID", "ImplementationVersionName",
                                                        "SourceApplicationEntityTitle") if ds.file_meta.get(k))
    return sorted(value.encode() for value in found if len(value) >= 6)


def leaks(out: pathlib.Path, texts: list[str], folder: pathlib.Path) -> list[str]:
    """Each secret of ``folder`` found in a file under ``out`` (bytes, any file) or in ``texts``."""
    found = []
    blobs = [(str(p.relative_to(out)), p.read_bytes()) for p in out.rglob("*") if p.is_file()]
    blobs += [(f"text {i}", text.encode()) for i, text in enumerate(texts)]
    for secret in secrets(folder):
        found += [f"{secret!r} in {name}" for name, blob in blobs if secret in blob]
    return found


def test_no_identifying_tag_reaches_any_output(tmp_path, dicom_folder, grey_model):
    out = tmp_path / "out"
    result = invoke("explain", dicom_folder, "--model", grey_model, "--preprocess", "scale", "--out", out,
                    "--report", "--save-raw", "--jsonl", "--grid", "--gif", "--boxes")
    assert result.exit_code == 0, result.stderr
    records = document(out)["images"]
    assert len(records) == 17 and all(r["status"] == "ok" for r in records)  # 1 + 15 frames + 1
    mr = next(r for r in records if r["path"].endswith("IM0001"))
    assert set(mr) == {"path", "status", "width", "height", "full_depth", "predictions", "grid", "gif"}
    assert set(mr["full_depth"]) == {"format", "modality", "bits", "photometric", "pixel_spacing", "intensity",
                                     "window", "window_from"}  # the modality and the geometry only
    assert len(secrets(dicom_folder)) > 20  # the check below looks for every one of these
    assert leaks(out, [result.stdout, result.stderr], dicom_folder) == []
    html = (out / "report.html").read_text()
    assert "dose.dcm · frame 15" in html


def test_resume_shards_and_merge_on_a_dicom_folder(tmp_path, dicom_folder, grey_model):
    model = ["--model", grey_model, "--preprocess", "scale", "-q"]
    listed = invoke("explain", dicom_folder, *model, "--dry-run", "--jsonl").stdout.splitlines()
    assert [json.loads(line).get("frame") for line in listed] == [None, *range(1, 16), None]  # ct, dose, IM0001
    assert json.loads(listed[7])["out_stem"] == "dose.frame07"
    out = tmp_path / "out"
    assert invoke("explain", dicom_folder, *model, "--out", out).exit_code == 0
    first = {(r["path"], r.get("frame")): r for r in document(out)["images"]}
    assert len(first) == 17
    lost = next(r for r in first.values() if r.get("frame") == 7)["predictions"][0]["overlay"]
    (out / lost).unlink()
    again = invoke("explain", dicom_folder, *model[:-1], "--out", out, "--resume")  # not quiet: the summary line
    assert again.exit_code == 0 and "(16 kept from the previous run)" in again.stderr
    assert (out / lost).is_file()
    resumed = document(out)["images"]
    assert [(r["path"], r.get("frame")) for r in resumed] == list(first)  # each frame once, in input order
    assert len(log_records(out)) == 18  # 17, then the redone frame

    sharded = tmp_path / "sharded"
    for shard in ("1/2", "2/2"):
        assert invoke("explain", dicom_folder, *model, "--out", sharded, "--shard", shard).exit_code == 0
    assert invoke("merge", sharded).exit_code == 0
    merged = {(r["path"], r.get("frame")): r for r in document(sharded)["images"]}
    assert merged.keys() == first.keys()
    for key, record in merged.items():
        assert record["predictions"][0]["overlay"] == first[key]["predictions"][0]["overlay"]
        assert abs(record["predictions"][0]["probability"] - first[key]["predictions"][0]["probability"]) <= FLOAT_ATOL


def test_evaluate_and_resume_on_a_dicom_folder(tmp_path, dicom_folder, grey_model):
    folder = tmp_path / "study"
    shutil.copytree(dicom_folder, folder)
    truncated_copy(folder / "ct.dcm", folder / "cut.dcm", 0.6)
    args = ["evaluate", folder, "--model", grey_model, "--preprocess", "scale", "--metrics", "deletion,insertion",
            "--steps", 4, "--out", tmp_path / "eval", "-q"]
    result = invoke(*args)
    assert result.exit_code == 1, result.stderr  # the truncated copy failed; the others were scored
    records = log_records(tmp_path / "eval", "evaluation.jsonl")
    failed = [r for r in records if r["status"] != "ok"]
    assert [(pathlib.Path(r["path"]).name, r["kind"]) for r in failed] == [("cut.dcm", "truncated")]
    ok = [r for r in records if r["status"] == "ok"]
    assert sorted(r.get("frame") or 0 for r in ok if r["path"].endswith("dose.dcm")) == list(range(1, 16))
    assert all(set(r["metrics"]["gradcam"]) >= {"deletion", "insertion"} for r in ok)
    assert all(r["full_depth"]["format"] == "DICOM" for r in ok)
    again = invoke(*args, "--resume")
    assert again.exit_code == 1 and len(log_records(tmp_path / "eval", "evaluation.jsonl")) == len(records) + 1
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["summary"]["done"] == 17
    assert temp_files(tmp_path / "eval") == []  # nothing half-written
    assert leaks(tmp_path / "eval", [result.stdout, result.stderr], dicom_folder) == []


def test_without_the_medical_extra_a_dicom_input_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)  # import pydicom -> ImportError
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    result = invoke("explain", tmp_path / "ct.dcm", "--out", tmp_path / "out")
    assert (result.exit_code, result.stderr) == (
        2, f"Error: input {tmp_path / 'ct.dcm'} is a DICOM file; reading it needs the [medical] extra: pip install "
           "'gradcam-cli[medical]' (from the repository: pip install -e '.[medical]')\n")
    assert not (tmp_path / "out").exists()
