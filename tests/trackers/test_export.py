"""`gradcam export OUT --to tensorboard|mlflow|wandb` and `explain --tensorboard`: a finished run read
back with each tracker's own reader (TensorBoard's EventAccumulator, MlflowClient, W&B's offline run
folder); old or incomplete folders and missing extras give one line."""

from __future__ import annotations

import csv
import json
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
from builders import small_cnn
from helpers import invoke, make_images

MODEL_ARGS = ("--preprocess", "scale", "-q")
TRUTH = ["red", "green", "blue", "red", "green"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(run folder, evaluate folder, model args, its predictions.json): 5 labelled images, top 2."""
    root = tmp_path_factory.mktemp("finished")
    small_cnn("softmax").save(root / "model.keras")
    (root / "labels.txt").write_text("red\ngreen\nblue\n")
    make_images(root / "images", len(TRUTH))
    with open(root / "truth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([f"images/im{i:03d}.png", label] for i, label in enumerate(TRUTH))
    args = ("--model", root / "model.keras", "--labels", root / "labels.txt", *MODEL_ARGS)
    out, ev = root / "out", root / "ev"
    result = invoke("explain", root / "images", *args, "--top", 2, "--labels-csv", root / "truth.csv",
                    "--report", "--out", out)
    assert result.exit_code == 0, result.stderr
    result = invoke("evaluate", root / "images", *args, "--metrics", "deletion,confidence", "--steps", 4,
                    "--out", ev)
    assert result.exit_code == 0, result.stderr
    return out, ev, args, json.loads((out / "predictions.json").read_text())


def overlays_of(doc) -> dict[str, dict]:
    return {e["overlay"]: {**e, "path": r["path"]} for r in doc["images"] for e in r["predictions"]}


def test_mlflow_export_read_back_with_its_client(tmp_path, finished):
    import mlflow

    out, ev, _, doc = finished
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = invoke("export", out, "--to", "mlflow", "--tracking-uri", uri, "--experiment", "pets",
                    "--evaluation", ev, "--run-name", "first")
    assert result.exit_code == 0, result.stderr
    run_id = result.stdout.split()[2]
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "first" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "pets"
    params = run.data.params
    assert params["top"] == "2" and params["methods"] == '["gradcam"]' and params["version"] == doc["version"]
    assert params["model.preprocessing"] == "scale" and params["target_layer"] == doc["target_layer"]
    evaluation = json.loads((ev / "evaluation.json").read_text())
    metrics = run.data.metrics
    for field in ("mean", "low", "high"):  # evaluate's figures, as they are in its file
        assert metrics[f"evaluate.gradcam.deletion.{field}"] == pytest.approx(evaluation["aggregate"]["gradcam"]["deletion"][field])
    assert metrics["run.accuracy.top1"] == pytest.approx(doc["summary"]["accuracy"]["top1"])
    assert metrics["run.done"] == len(TRUTH)

    root = {f.path for f in client.list_artifacts(run_id)}
    assert {"predictions.json", "report.html", "evaluation.json", "overlays"} <= root
    logged = {f.path.removeprefix("overlays/") for f in client.list_artifacts(run_id, "overlays")}
    assert set(overlays_of(doc)) | {"captions.json"} == logged
    local = pathlib.Path(client.download_artifacts(run_id, "overlays", str(tmp_path / "down")))
    captions = json.loads((local / "captions.json").read_text())
    for name, entry in overlays_of(doc).items():
        assert (local / name).read_bytes() == (out / name).read_bytes()
        assert captions[name].startswith(f"{entry['path']}: map of {entry['label']}; top-2: ")
        assert "; truth: " in captions[name]


def read_tensorboard(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: [tensor_util.make_ndarray(e.tensor_proto) for e in events.Tensors(tag)]
            for tag in events.Tags()["tensors"]}


def test_tensorboard_export_and_explain_option(tmp_path, finished):
    out, _, args, doc = finished
    result = invoke("export", out, "--to", "tensorboard", "--log-dir", tmp_path / "tb")
    assert result.exit_code == 0, result.stderr
    found = read_tensorboard(tmp_path / "tb")
    for name in overlays_of(doc):
        [value] = found[f"overlays/{name}"]
        on_disk = cv2.imread(str(out / name))
        assert (int(value[0]), int(value[1])) == (on_disk.shape[1], on_disk.shape[0])  # width, height
        logged = cv2.imdecode(np.frombuffer(value[2], np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(logged, on_disk)  # the decoded JPEG, losslessly as PNG
    [top1] = found["run.accuracy.top1"]
    assert float(top1) == pytest.approx(doc["summary"]["accuracy"]["top1"])
    assert b"| top | 2 |" in found["gradcam/settings"][0].item()

    again = invoke("explain", pathlib.Path(doc["images"][0]["path"]).parent, *args, "--top", 1,
                   "--out", tmp_path / "run", "--tensorboard", tmp_path / "tb2")
    assert again.exit_code == 0, again.stderr
    names = {e["overlay"] for r in json.loads((tmp_path / "run" / "predictions.json").read_text())["images"]
             for e in r["predictions"]}
    assert {f"overlays/{n}" for n in names} == {t for t in read_tensorboard(tmp_path / "tb2") if t.startswith("overlays/")}


def test_wandb_offline_export_writes_the_table(tmp_path, finished, monkeypatch):
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out, _, _, doc = finished
    result = invoke("export", out, "--to", "wandb", "--wandb-dir", tmp_path / "w", "--project", "pets")
    assert result.exit_code == 0, result.stderr
    folder = pathlib.Path(result.stdout.strip())
    assert folder.parent == tmp_path / "w" / "wandb" and folder.name.startswith("offline-run-")
    assert len(list(folder.glob("run-*.wandb"))) == 1  # what `wandb sync` uploads
    [table_file] = folder.glob("files/media/table/gradcam/predictions_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["image", "prediction", "score", "truth", "map"]
    expected = [[r["path"], r["predictions"][0]["label"], r["predictions"][0]["probability"], r["true_label"]["label"]]
                for r in doc["images"]]
    assert [row[:4] for row in table["data"]] == expected
    assert [row[4] for row in table["data"]] == ["Image"] * len(TRUTH)  # the map: a W&B image per row
    assert len(list(folder.glob("files/media/images/gradcam/overlays_*.jpg"))) == len(overlays_of(doc))


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_old_or_incomplete_folders_and_missing_extras_give_one_line(tmp_path, finished, monkeypatch):
    out, _, _, doc = finished
    (tmp_path / "empty").mkdir()
    line = one_error_line(invoke("export", tmp_path / "empty", "--to", "mlflow"))
    assert line == f"Error: no predictions.json in {tmp_path / 'empty'}: expected a folder that `gradcam explain ... " \
                   f"--out {tmp_path / 'empty'}` wrote (`gradcam merge` first for shards)"
    old = tmp_path / "old"
    old.mkdir()
    old_doc = {k: v for k, v in doc.items() if k != "options"} | {"version": "0.1.0"}
    (old / "predictions.json").write_text(json.dumps(old_doc))
    line = one_error_line(invoke("export", old, "--to", "tensorboard"))
    assert line.startswith(f"Error: {old / 'predictions.json'} was written by gradcam-cli 0.1.0, whose format lacks "
                           "the run's settings")
    assert "rerun `gradcam explain ... --out" in line
    wrong = invoke("export", out, "--to", "mlflow", "--log-dir", tmp_path)  # click's usage error: usage, then one line
    assert wrong.exit_code == 2 and wrong.stderr.strip().splitlines()[-1] == (
        "Error: --log-dir is for --to tensorboard, not --to mlflow: drop it, or export with --to tensorboard")

    for tracker in ("mlflow", "wandb", "tensorboard"):
        monkeypatch.setitem(sys.modules, tracker, None)  # as if not installed: import fails
        line = one_error_line(invoke("export", out, "--to", tracker))
        assert line.endswith(f"is not installed: pip install 'gradcam-cli[{tracker}]'"), line
    line = one_error_line(invoke("explain", pathlib.Path(doc["images"][0]["path"]).parent, "--tensorboard", tmp_path / "tb", "--out", tmp_path / "never"))
    assert line.endswith("pip install 'gradcam-cli[tensorboard]'")
    assert not (tmp_path / "never").exists()  # said before the model loads or --out is made


@pytest.mark.parametrize("argv", [["--help"], ["export", "--help"], ["explain", "--help"]])
def test_help_imports_no_tracker_nor_tensorflow(argv):
    code = (
        "import sys\nfrom gradcam_cli.cli import main\n"
        f"try:\n    main({argv!r}, prog_name='gradcam')\nexcept SystemExit:\n    pass\n"
        "loaded = [m for m in ('tensorflow', 'keras', 'mlflow', 'wandb', 'tensorboard') if m in sys.modules]\n"
        "assert loaded == [], loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--to" in proc.stdout or argv != ["export", "--help"]


def test_mlflow_keys_of_a_layer_sweep_are_names_mlflow_takes():
    from mlflow.utils.validation import _validate_metric_name

    from gradcam_cli.trackers.sinks import mlflow_key

    key = mlflow_key("evaluate.gradcam@backbone/conv5_block3_out.pointing.mean")
    assert key == "evaluate.gradcam_backbone/conv5_block3_out.pointing.mean"
    _validate_metric_name(key)  # raises on a name MLflow refuses
    assert mlflow_key("explain.top_1:prob-2 x") == "explain.top_1:prob-2 x"  # allowed characters kept
