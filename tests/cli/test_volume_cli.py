"""`gradcam explain` on volumes: a Conv3D model trained here localises blobs through the CLI, the
NIfTI maps keep the input's grid, nibabel's bundled volumes and a DICOM series run, bad input is one
line, no identifying DICOM value reaches any output, resume and shards key volumes by path."""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest
from builders import blob_volumes, conv3d_model, grey_cnn, in_blob, trained_conv3d
from helpers import dicom_copy, invoke, truncated_copy

from gradcam_cli.render.resample import upsample_trilinear

nibabel = pytest.importorskip("nibabel")
pytest.importorskip("pydicom")

AFFINE = np.array([[-2.0, 0, 0, 30], [0, 2.0, 0, -12], [0, 0, 3.0, 7], [0, 0, 0, 1]])
#: values written into identifying tags of the series' slices; none may appear in any output
IDENTIFYING = {"PatientName": "Qorvalde^Xantippe", "PatientID": "PID-9090-QQ", "PatientBirthDate": "19310203",
               "InstitutionName": "Hospital Zyxwvut", "AccessionNumber": "ACC13572468"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    trained_conv3d().save(root / "blob3d.keras")
    conv3d_model().save(root / "plain3d.keras")
    conv3d_model(channels=2).save(root / "two3d.keras")
    grey_cnn(32).save(root / "grey2d.keras")
    return root


def save_volumes(folder: pathlib.Path, x: np.ndarray) -> list[pathlib.Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, v in enumerate(x):
        paths.append(folder / f"vol{i:02d}.nii.gz")
        nibabel.save(nibabel.Nifti1Image(v[..., 0], AFFINE), paths[-1])
    return paths


def records(out: pathlib.Path) -> list[dict]:
    return json.loads((out / "predictions.json").read_text())["images"]


def test_blob_maps_through_the_cli_peak_in_the_blob_and_keep_the_grid(tmp_path, models):
    """>= 85% of 20 held-out volumes (1.00 measured): the written NIfTI's peak voxel lies in the blob;
    each NIfTI has the input's shape and affine and equals the engine's map placed back (trilinear)."""
    from gradcam_cli.engine.volume import VolumeExplainer
    from gradcam_cli.models.split import split_model

    x, y, centres = blob_volumes(40, seed=4)
    x, centres = x[y == 1][:20], centres[y == 1][:20]
    save_volumes(tmp_path / "in", x)
    out = tmp_path / "out"
    result = invoke("explain", tmp_path / "in", "--model", models / "blob3d.keras", "--class", "1", "--out", out,
                    "--method", "gradcam", "--method", "layercam", "-q")
    assert result.exit_code == 0, result.stderr
    engine = VolumeExplainer(split_model(trained_conv3d(), "auto"), classes=[1], method=["gradcam", "layercam"])
    hits = []
    for i, record in enumerate(records(out)):
        assert record["status"] == "ok" and record["volume"]["shape"] == [16, 16, 16]
        maps = engine(x[i:i + 1]).method_maps[0, 0]
        for m, method in enumerate(["gradcam", "layercam"]):
            files = record["predictions"][0]["maps"][method]
            back = nibabel.load(out / files["nifti"])
            assert back.shape == (16, 16, 16) and back.get_data_dtype() == np.float32
            np.testing.assert_array_equal(back.affine, AFFINE)
            data = back.get_fdata(dtype=np.float32)
            np.testing.assert_allclose(data, maps[m], atol=1e-5)  # same grid: placed back unchanged
            peak = np.unravel_index(np.argmax(data), data.shape)
            assert list(peak) == files["peak_voxel"]
            hits.append(in_blob(peak, centres[i]))
            assert (out / files["montage"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert (out / files["gif"]).read_bytes()[:6] == b"GIF89a"
    assert np.mean(hits) >= 0.85, np.mean(hits)


def test_a_volume_of_another_size_gets_its_map_on_its_own_grid(tmp_path, models):
    """A 20 x 24 x 12 volume fed to the 16^3 model: the map (16^3) is placed back trilinearly on the
    volume's grid; its peak voxel lies where the map's does, scaled (within one voxel)."""
    from gradcam_cli.engine.volume import VolumeExplainer
    from gradcam_cli.models.split import split_model

    rng = np.random.default_rng(3)
    volume = rng.normal(0, 0.1, (20, 24, 12)).astype(np.float32)
    volume[13:16, 4:7, 2:5] = 1.0
    nibabel.save(nibabel.Nifti1Image(volume, AFFINE), tmp_path / "odd.nii")
    out = tmp_path / "out"
    assert invoke("explain", tmp_path / "odd.nii", "--model", models / "blob3d.keras", "--class", "1", "--out", out,
                  "-q").exit_code == 0
    (record,) = records(out)
    back = nibabel.load(out / record["predictions"][0]["maps"]["gradcam"]["nifti"])
    assert back.shape == (20, 24, 12)
    np.testing.assert_array_equal(back.affine, AFFINE)
    fed = upsample_trilinear(volume[..., None], (16, 16, 16))[None]
    cam = VolumeExplainer(split_model(trained_conv3d(), "auto"), classes=[1])(fed).method_maps[0, 0, 0]
    np.testing.assert_allclose(back.get_fdata(dtype=np.float32), upsample_trilinear(cam, (20, 24, 12)), atol=1e-6)
    small = np.array(np.unravel_index(np.argmax(cam), cam.shape))
    big = np.array(np.unravel_index(np.argmax(back.get_fdata()), back.shape))
    expected = (small + 0.5) * np.array([20, 24, 12]) / 16 - 0.5
    assert np.all(np.abs(big - expected) <= 1.0), (big, expected)
    assert in_blob(big, (14, 5, 3), margin=1.0)


def test_nibabels_bundled_3d_and_4d_volumes(tmp_path, models):
    from nibabel.testing import data_path

    out = tmp_path / "out"
    result = invoke("explain", data_path / "anatomical.nii", data_path / "example4d.nii.gz", "--model",
                    models / "two3d.keras", "--out", out, "--top", "1", "-q")
    assert result.exit_code == 1  # the 3-D volume has one channel, the model takes two
    three, four = records(out)
    assert three["status"] == "error" and three["kind"] == "unsupported"
    assert "has 1 channel(s) (its 4th dimension), the model takes 2" in three["message"]
    assert four["status"] == "ok" and four["volume"]["shape"] == [128, 96, 24, 2]
    back = nibabel.load(out / four["predictions"][0]["maps"]["gradcam"]["nifti"])
    assert back.shape == (128, 96, 24)
    np.testing.assert_array_equal(back.affine, nibabel.load(data_path / "example4d.nii.gz").affine)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("anatomical")) == []  # nothing for the bad one

    out1 = tmp_path / "one"
    result = invoke("explain", data_path / "anatomical.nii", data_path / "example4d.nii.gz", "--model",
                    models / "plain3d.keras", "--out", out1, "--top", "1", "-q")
    three, four = records(out1)
    assert three["status"] == "ok" and nibabel.load(out1 / three["predictions"][0]["maps"]["gradcam"]["nifti"]).shape \
        == (33, 41, 25)
    assert four["kind"] == "unsupported" and four["message"] == (
        "volume of shape (128, 96, 24, 2) has a 4th dimension of 2; the model takes one channel: give a 3-D volume "
        "(one frame of it)")
    assert [p.name for p in out1.iterdir() if p.name.startswith("example4d")] == []


def ct_series(folder: pathlib.Path, n: int, **tags) -> list[pathlib.Path]:
    return [dicom_copy("CT_small.dcm", folder / f"IM{n - k:04d}.dcm", ImagePositionPatient=[-158.0, -179.0, 5.0 * k],
                       InstanceNumber=n - k, **tags) for k in range(n)]


def test_a_dicom_series_runs_and_no_identifying_value_reaches_any_output(tmp_path, models):
    ct_series(tmp_path / "study" / "series1", 6, **IDENTIFYING)
    out = tmp_path / "out"
    result = invoke("explain", tmp_path / "study", "--model", models / "plain3d.keras", "--out", out, "--top", "2",
                    "--method", "gradcam", "--method", "scorecam", "--report", "--jsonl")
    assert result.exit_code == 0, result.stderr
    (record,) = records(out)
    assert record["path"] == str(tmp_path / "study" / "series1")
    assert record["volume"] == {**record["volume"], "format": "DICOM series", "slices": 6, "shape": [128, 128, 6],
                                "sorted_by": "position", "modality": "CT"}
    assert json.loads(result.stdout.splitlines()[0])["path"] == record["path"]
    report = (out / "report.html").read_text()
    montages = [files["montage"] for entry in record["predictions"] for files in entry["maps"].values()]
    assert len(montages) == 4 and all(name in report for name in montages)  # the report shows each montage
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 2 * 2 * 3 + 3  # NIfTI, montage, GIF per map; the documents and the report
    for value in IDENTIFYING.values():
        needles = {value.encode(), value.replace("^", " ").encode(), value.encode("utf-16-le")}
        for path in files:
            data = path.read_bytes()
            if path.suffix == ".gz":
                import gzip

                data = gzip.decompress(data)
            assert not any(n in data for n in needles), f"{value} in {path}"
        assert value not in result.stdout and value not in result.stderr


def test_a_monochrome1_series_is_drawn_inverted_and_fed_inverted(tmp_path, models):
    """The same series labelled MONOCHROME1 and MONOCHROME2: with --alpha 0 the montages are the views,
    and every tile pixel of one is 255 minus the other's (the gaps black in both); the model saw
    different inputs (its scores differ)."""
    from PIL import Image

    ct_series(tmp_path / "mono2" / "s", 4)
    ct_series(tmp_path / "mono1" / "s", 4, PhotometricInterpretation="MONOCHROME1")
    pictures, scores = [], []
    for kind in ("mono2", "mono1"):
        out = tmp_path / f"out-{kind}"
        result = invoke("explain", tmp_path / kind, "--model", models / "plain3d.keras", "--out", out, "--top", "1",
                        "--alpha", "0", "-q")
        assert result.exit_code == 0, result.stderr
        (record,) = records(out)
        assert record["volume"]["photometric"] == ("MONOCHROME1" if kind == "mono1" else "MONOCHROME2")
        entry = record["predictions"][0]
        pictures.append(np.asarray(Image.open(out / entry["maps"]["gradcam"]["montage"]), np.int32))
        scores.append(entry["score"])
    plain, inverted = pictures
    gaps = (plain == 0) & (inverted == 0)
    assert gaps.any() and np.array_equal(np.where(gaps, 255, plain + inverted), np.full_like(plain, 255))
    assert scores[0] != scores[1]


def test_a_truncated_slice_is_one_error_record_and_nothing_is_written_for_its_series(tmp_path, models):
    paths = ct_series(tmp_path / "s", 4)
    truncated_copy(paths[2], paths[2], 0.5)
    out = tmp_path / "out"
    result = invoke("explain", tmp_path / "s", "--model", models / "plain3d.keras", "--out", out, "-q")
    assert result.exit_code == 1
    (record,) = records(out)
    assert record == {"path": str(tmp_path / "s"), "status": "error", "kind": "truncated", "message": record["message"]}
    assert record["message"].startswith("slice IM0002.dcm: DICOM ") and "truncated" in record["message"]
    assert "\n" not in record["message"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["predictions.json", "predictions.jsonl"]
    assert "gradcam: skipped" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_2d_model_given_a_volume_without_slice_axis_is_one_line_and_writes_nothing(tmp_path, models):
    save_volumes(tmp_path / "in", blob_volumes(1, seed=0)[0])
    out = tmp_path / "out"
    result = invoke("explain", tmp_path / "in" / "vol00.nii.gz", "--model", models / "grey2d.keras", "--out", out)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: input {tmp_path / 'in' / 'vol00.nii.gz'} is a volume (NIfTI) but the model takes 2-D images; pass "
        "--slice-axis 0, 1 or 2 to explain it slice by slice, or a 3-D model (--model) to explain it whole")
    assert not out.exists()
    result = invoke("explain", tmp_path / "in", "--model", models / "blob3d.keras", "--method", "guided", "--out", out)
    assert result.exit_code == 2 and not out.exists()
    assert "method 'guided' is not defined on volumes (3-D models); use one of: gradcam, gradcam++" in result.stderr


def test_a_2d_model_explains_a_volume_slice_by_slice(tmp_path, models):
    """nibabel's bundled 3-D volume along axis 2 (25 slices), and matplotlib's 16-bit MR slice as a
    one-slice NIfTI: records keyed by path and slice (frame), the slice's raw values reach the model."""
    import gzip

    import matplotlib.cbook
    from nibabel.testing import data_path

    with matplotlib.cbook.get_sample_data("s1045.ima.gz") as handle:
        data = handle.read()
    data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    mr = np.frombuffer(data, ">u2").reshape(256, 256).astype(np.uint16)
    nibabel.save(nibabel.Nifti1Image(mr[:, :, None], np.eye(4)), tmp_path / "mr.nii.gz")
    out = tmp_path / "out"
    args = ("explain", data_path / "anatomical.nii", tmp_path / "mr.nii.gz", "--model", models / "grey2d.keras",
            "--slice-axis", "2", "--out", out, "--top", "1", "--preprocess", "none", "-q")
    assert invoke(*args).exit_code == 0
    recs = records(out)
    assert [(pathlib.Path(r["path"]).name, r["frame"]) for r in recs] == \
        [("anatomical.nii", k) for k in range(1, 26)] + [("mr.nii.gz", 1)]
    assert all(r["status"] == "ok" and r["full_depth"]["slice_axis"] == 2 for r in recs)
    assert recs[-1]["full_depth"]["slice"] == 0 and recs[-1]["full_depth"]["intensity"] == "raw"
    assert (recs[-1]["width"], recs[-1]["height"]) == (256, 256)
    result = invoke(*args, "--resume")
    assert result.exit_code == 0 and records(out) == recs


def test_volumes_resume_and_shard_by_path(tmp_path, models):
    save_volumes(tmp_path / "in", blob_volumes(5, seed=8)[0])
    base = ("--model", models / "plain3d.keras", "--top", "1")
    whole = tmp_path / "whole"
    assert invoke("explain", tmp_path / "in", *base, "--out", whole, "-q").exit_code == 0
    done = records(whole)
    result = invoke("explain", tmp_path / "in", *base, "--out", whole, "--resume")
    assert result.exit_code == 0 and "5 volumes explained (5 kept from the previous run)" in result.stderr
    assert records(whole) == done
    killed = tmp_path / "killed"  # what a kill during the third volume leaves: two records, a torn line, their files
    killed.mkdir()
    lines = (whole / "predictions.jsonl").read_text().splitlines(keepends=True)
    (killed / "predictions.jsonl").write_text("".join(lines[:2]) + lines[2][:25])
    (killed / ".gradcam-run.json").write_bytes((whole / ".gradcam-run.json").read_bytes())
    for record in done[:2]:
        for files in record["predictions"][0]["maps"].values():
            for key in ("nifti", "montage", "gif"):
                (killed / files[key]).parent.mkdir(parents=True, exist_ok=True)
                (killed / files[key]).write_bytes((whole / files[key]).read_bytes())
    result = invoke("explain", tmp_path / "in", *base, "--out", killed, "--resume")
    assert result.exit_code == 0 and "5 volumes explained (2 kept from the previous run)" in result.stderr
    assert records(killed) == done
    shards = tmp_path / "shards"
    for k in (1, 2):
        assert invoke("explain", tmp_path / "in", *base, "--out", shards, "--shard", f"{k}/2", "-q").exit_code == 0
    parts = [json.loads((shards / f"predictions.{k}-of-2.json").read_text())["images"] for k in (1, 2)]
    assert sorted(r["path"] for part in parts for r in part) == sorted(r["path"] for r in done)
    assert parts[0] and parts[1]
    assert invoke("merge", shards).exit_code == 0  # the shards merge as image runs' do, sorted by path
    assert [r["path"] for r in records(shards)] == sorted(r["path"] for r in done)
    by_path = {r["path"]: r for r in done}
    for r in parts[0] + parts[1]:
        assert r["predictions"][0]["maps"]["gradcam"]["peak_voxel"] == \
            by_path[r["path"]]["predictions"][0]["maps"]["gradcam"]["peak_voxel"]


def test_evaluate_refuses_what_volumes_lack_and_takes_a_2d_models_slices(tmp_path, models):
    volume = np.random.default_rng(5).normal(100, 30, (32, 32, 3)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume, AFFINE), tmp_path / "v.nii.gz")
    out = tmp_path / "ev"
    for extra, line in (
            (("--metrics", "deletion,road"), "metric 'road' is not defined on volumes (3-D models): it rests on 2-D "
                                             "images; use --metrics deletion,insertion"),
            (("--sanity", "2"), "--sanity is not defined on volumes (3-D models): evaluate measures deletion and "
                                "insertion in 3-D; drop it"),
            (("--method", "guided"), "method 'guided' is not defined on volumes (3-D models); use one of: gradcam, "
                                     "gradcam++, xgradcam, layercam, hirescam, eigencam, scorecam")):
        refused = invoke("evaluate", tmp_path / "v.nii.gz", "--model", models / "blob3d.keras", "--out", out, *extra)
        assert refused.exit_code == 2 and not out.exists()
        assert refused.stderr.strip().splitlines()[-1] == f"Error: {line}"
    no_axis = invoke("evaluate", tmp_path / "v.nii.gz", "--model", models / "grey2d.keras", "--out", out)
    assert no_axis.exit_code == 2 and "--slice-axis 0, 1 or 2" in no_axis.stderr and not out.exists()
    result = invoke("evaluate", tmp_path / "v.nii.gz", "--model", models / "grey2d.keras", "--slice-axis", "2",
                    "--out", out, "--metrics", "deletion,insertion", "--steps", 4, "-q")
    assert result.exit_code == 0, result.output
    document = json.loads((out / "evaluation.json").read_text())
    assert [r["frame"] for r in document["images"]] == [1, 2, 3]
    assert all(r["status"] == "ok" for r in document["images"])


def test_evaluate_a_3d_model_deletion_and_insertion_in_3d_and_resume(tmp_path, models):
    """A 20 x 24 x 12 volume and 4 blob volumes, the trained model, class 1, 8 steps. Each record's
    gradcam deletion curve equals the per-step reference on the engine's map placed on the model
    input (1e-5: float32 probabilities, batched against one volume at a time); Grad-CAM's mean
    deletion AUC is below the random map's and its insertion AUC above (the blobs: the class's
    evidence is local). Resuming what a kill after two volumes leaves (a torn third line) gives the
    uninterrupted run's records and aggregate exactly."""
    from gradcam_cli.engine.volume import VolumeExplainer
    from gradcam_cli.models.split import split_model

    x, y, _ = blob_volumes(12, seed=21)
    paths = save_volumes(tmp_path / "in", x[y == 1][:4])
    odd = np.random.default_rng(3).normal(0, 0.1, (20, 24, 12)).astype(np.float32)
    odd[13:16, 4:7, 2:5] = 1.0
    nibabel.save(nibabel.Nifti1Image(odd, AFFINE), tmp_path / "in" / "odd.nii")
    args = ("--model", models / "blob3d.keras", "--class", "1", "--steps", "8", "--method", "gradcam", "-q")
    out = tmp_path / "ev"
    result = invoke("evaluate", tmp_path / "in", *args, "--out", out)
    assert result.exit_code == 0, result.stderr
    document = json.loads((out / "evaluation.json").read_text())
    assert document["better"] == {"deletion": "lower", "insertion": "higher"} and document["volumes"] is True
    recs = document["images"]
    assert [pathlib.Path(r["path"]).name for r in recs] == ["odd.nii"] + [p.name for p in paths]
    assert all(r["status"] == "ok" and r["class_index"] == 1 and sorted(r["metrics"]) == ["centre", "gradcam", "random"]
               for r in recs)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = keras.models.load_model(models / "blob3d.keras")
    engine = VolumeExplainer(split_model(model, "auto"), classes=[1])
    for record in recs:
        volume = nibabel.load(record["path"]).get_fdata(dtype=np.float32)
        fed = upsample_trilinear(volume[..., None], (16, 16, 16)) if volume.shape != (16, 16, 16) else volume[..., None]
        cam = upsample_trilinear(engine(fed[None]).method_maps[0, 0, 0], (16, 16, 16))
        order = np.argsort(-cam.ravel(), kind="stable")
        expected = []
        for k in range(9):
            z = fed.reshape(-1, 1).copy()
            z[order[:(2 * k * 4096 + 8) // 16]] = 0.0  # the black baseline
            expected.append(float(model(z.reshape(1, 16, 16, 16, 1), training=False)[0, 1]))
        np.testing.assert_allclose(record["metrics"]["gradcam"]["deletion_curve"], expected, atol=1e-5)
    aggregate = document["aggregate"]
    assert aggregate["gradcam"]["deletion"]["mean"] < aggregate["random"]["deletion"]["mean"]
    assert aggregate["gradcam"]["insertion"]["mean"] > aggregate["random"]["insertion"]["mean"]
    killed = tmp_path / "killed"  # what a kill after two volumes leaves: two records and a torn line
    killed.mkdir()
    lines = (out / "evaluation.jsonl").read_text().splitlines(keepends=True)
    (killed / "evaluation.jsonl").write_text("".join(lines[:2]) + lines[2][:40])
    (killed / ".gradcam-evaluate.json").write_bytes((out / ".gradcam-evaluate.json").read_bytes())
    resumed = invoke("evaluate", tmp_path / "in", *args, "--out", killed, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    again = json.loads((killed / "evaluation.json").read_text())
    assert again["images"] == recs
    assert again["aggregate"] == document["aggregate"]


def test_volume_runs_refuse_image_options_and_slice_axis_in_one_line(tmp_path, models):
    save_volumes(tmp_path / "in", blob_volumes(1, seed=0)[0])
    out = tmp_path / "out"
    axis = invoke("explain", tmp_path / "in", "--model", models / "blob3d.keras", "--slice-axis", "1", "--out", out)
    grid = invoke("explain", tmp_path / "in", "--model", models / "blob3d.keras", "--grid", "--out", out)
    seg = invoke("explain", tmp_path / "in", "--model", models / "blob3d.keras", "--target", "segmentation",
                 "--out", out)
    for result, line in ((seg, "--target segmentation applies to 2-D images; a volume (3-D model) run explains class "
                               "scores: drop it"),
                         (grid, "--grid applies to images; a volume run writes NIfTI maps, montages and GIFs: drop it"),
                         (axis, "--slice-axis applies to 2-D models; this model takes volumes whole: drop it")):
        assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1] == f"Error: {line}"
    assert not out.exists()


def test_layers_lists_a_3d_models_5d_layers(models):
    result = invoke("layers", "--model", models / "blob3d.keras", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["layer"], r["shape"], r["type"], r["auto"], r["target"]) for r in rows] == [
        ("conv1", [16, 16, 16, 8], "Conv3D", False, False), ("target", [16, 16, 16, 8], "Conv3D", True, True)]
