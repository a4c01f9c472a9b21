"""`gradcam evaluate` on the shared run journal: one run per folder, torn lines and stale temps
repaired on --resume, SIGINT / SIGTERM / SIGKILL then --resume equal to the uninterrupted run,
and the method options reaching its maps."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess

import numpy as np
import pytest
from builders import small_cnn
from helpers import assert_close, cli, invoke, wait_for_records
from PIL import Image

from gradcam_cli.io import writers

IMAGES = 40


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(evaluate options for a fast own model, a folder of IMAGES images, the uninterrupted run's folder)."""
    root = tmp_path_factory.mktemp("ev")
    small_cnn("softmax").save(root / "model.keras")
    (root / "labels.txt").write_text("red\ngreen\nblue\n")
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(folder / f"im{i:03d}.png")
    options = ["--model", root / "model.keras", "--labels", root / "labels.txt", "--preprocess", "scale",
               "--metrics", "deletion,insertion,confidence,road", "--steps", 4, "-q"]
    full = root / "full"
    result = invoke("evaluate", folder, "--out", full, "--batch-size", 4, *options)
    assert result.exit_code == 0, result.stderr
    return options, folder, full


def document(out: pathlib.Path) -> dict:
    return json.loads((out / "evaluation.json").read_text())


def assert_same_evaluation(out: pathlib.Path, reference: pathlib.Path) -> None:
    """Records in input order, aggregates and summary as the reference's; numbers within FLOAT_ATOL
    (the runs' batches differ); each image's record once in the log's last lines."""
    ours, theirs = document(out), document(reference)
    assert [r["path"] for r in ours["images"]] == [r["path"] for r in theirs["images"]]
    for key in ("images", "aggregate", "mean_curves", "summary", "better", "settings"):
        assert_close(ours[key], theirs[key], key)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_a_second_evaluate_into_a_busy_folder_is_refused_in_one_line(tmp_path, setup):
    options, folder, _ = setup
    out = tmp_path / "o"
    out.mkdir()
    with writers.FolderLock(out, None):  # another run holds it (here: this process)
        busy = invoke("evaluate", folder, "--out", out, *options)
    assert (busy.exit_code, busy.stderr) == (2, f"Error: {out} is in use by another gradcam run (pid {os.getpid()}); "
                                                "wait for it to end, or choose another --out folder\n")
    assert sorted(p.name for p in out.iterdir()) == [writers.LOCK_NAME]  # refused before writing anything


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_a_stopped_evaluate_resumes_to_the_uninterrupted_result(tmp_path, setup, signum, code):
    options, folder, full = setup
    out = tmp_path / "o"
    proc = cli(folder, "--out", out, "--batch-size", 1, *options, command="evaluate", stderr=subprocess.PIPE,
               text=True)
    wait_for_records(out / "evaluation.jsonl", 2, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    done = [json.loads(line) for line in (out / "evaluation.jsonl").read_bytes().splitlines()
            if line.endswith(b"}")]
    assert 2 <= len(done) < IMAGES, "the run finished before it could be stopped"
    if signum != signal.SIGKILL:  # finished its batch in flight, then wrote what is done
        assert err == f"gradcam: interrupted after {len(done)} of {IMAGES} images; rerun with --resume\n"
        partial = document(out)
        assert [r["path"] for r in partial["images"]] == [str(p) for p in sorted(folder.glob("*.png"))][: len(done)]
        assert partial["summary"] == {"images": len(done), "done": len(done), "failed": 0, "interrupted": True,
                                      "inputs": IMAGES}
    resumed = invoke("evaluate", folder, "--out", out, "--batch-size", 4, "--resume", *options)
    assert resumed.exit_code == 0, resumed.stderr
    assert_same_evaluation(out, full)


def test_resume_repairs_a_torn_log_and_removes_stale_temps(tmp_path, setup):
    options, folder, full = setup
    out = tmp_path / "o"
    assert invoke("evaluate", folder, "--out", out, "--batch-size", 8, *options).exit_code == 0
    lines = (out / "evaluation.jsonl").read_bytes().splitlines(keepends=True)
    lines[3] = lines[3][: len(lines[3]) // 2] + lines[4]  # torn by a concurrent writer: two records in one line
    del lines[4]
    lines[-1] = lines[-1][:20]  # and a killed writer's last line
    (out / "evaluation.jsonl").write_bytes(b"".join(lines))
    stale = out / f".evaluation.json.tmp-{writers._HOST}-999999999"  # a killed run's temp (no such pid)
    stale.write_text("{")
    resumed = invoke("evaluate", folder, "--out", out, "--resume", *options)
    assert resumed.exit_code == 0, resumed.stderr
    assert not stale.exists()
    log = [json.loads(line) for line in (out / "evaluation.jsonl").read_bytes().splitlines()]
    assert len(log) == IMAGES  # IMAGES - 3 whole lines kept; the two torn records and the cut one redone
    assert_same_evaluation(out, full)


def test_method_options_reach_evaluates_maps(tmp_path, setup):
    """--eigen-smooth and --scorecam-channels change the evaluated maps exactly as they change explain's."""
    from gradcam_cli import GradCAM
    from gradcam_cli.run.evaluate import Evaluator
    from gradcam_cli.settings import EvalSettings, MethodOptions

    options, folder, _ = setup
    cam = GradCAM(model=str(options[1]), preprocessing="scale", labels=str(options[3]))
    batch = cam.prepare([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))[:3]])
    for method, chosen in (("gradcam", MethodOptions(eigen_smooth=True)), ("scorecam", MethodOptions(scorecam_channels=4))):
        evaluator = Evaluator(cam, EvalSettings(methods=(method,), method_options=chosen))
        _, maps, _ = evaluator.maps(batch, method, [0, 1, 2])
        expected = np.stack([e.maps[0] for e in cam.explain_prepared(batch, top=1, method=method, options=chosen)])
        plain = np.stack([e.maps[0] for e in cam.explain_prepared(batch, top=1, method=method)])
        np.testing.assert_allclose(maps, expected, atol=1e-6)  # the same call, the same batch
        assert np.abs(maps - plain).max() > 0.05, method  # the option changes the maps

    out = tmp_path / "o"
    result = invoke("evaluate", folder, "--out", out, "--eigen-smooth", *options)
    assert result.exit_code == 0, result.stderr
    assert document(out)["settings"]["method_options"] == {"scorecam_batch": 256, "scorecam_channels": None,
                                                          "aug_smooth": False, "eigen_smooth": True,
                                                          "centre_activations": "auto", "scorecam_baseline": "auto"}
