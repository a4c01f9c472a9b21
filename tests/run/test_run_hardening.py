"""Hardening of a run: a locked output folder, SIGINT / SIGTERM, a closed stdout, resume semantics.

Runs use a small untrained CNN saved as .keras (fast to load) on tiny generated images (the ``tiny``
fixture)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess

import numpy as np
import pytest
from PIL import Image

from builders import small_cnn
from helpers import assert_close, cli, document, invoke, log_records, make_images, temp_files, wait_for_records

from gradcam_cli.io import writers


# ---------------------------------------------------------------------------
# 1. one run per output folder


def test_a_second_run_into_a_busy_folder_refuses_and_the_first_completes(tmp_path, tiny):
    options, _ = tiny
    src = make_images(tmp_path / "many", 300)
    out = tmp_path / "o"
    first = cli(src, "--out", out, "--batch-size", 1, *options, stderr=subprocess.PIPE, text=True)
    wait_for_records(out / "predictions.jsonl", 1, first)
    second = invoke("explain", src, "--out", out, *options)
    still_running = first.poll() is None
    _, err = first.communicate()
    assert still_running, "the first run ended before the second one tried"
    assert second.exit_code == 2
    assert second.stderr == (f"Error: {out} is in use by another gradcam run (pid {first.pid}); "
                             "wait for it to end, or choose another --out folder\n")
    assert first.returncode == 0, err
    records = log_records(out)
    assert [r["path"] for r in document(out)["images"]] == [str(p) for p in sorted(src.glob("*.png"))]
    assert sorted(r["path"] for r in records) == sorted(str(p) for p in src.glob("*.png"))


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, tiny):
    options, _ = tiny
    src = make_images(tmp_path / "many", 200)
    out = tmp_path / "o"
    holder = cli(src, "--out", out, "--batch-size", 1, *options)
    wait_for_records(out / "predictions.jsonl", 1, holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (out / writers.LOCK_NAME).read_text().strip() == str(holder.pid)  # the pid stays, the lock does not
    resumed = invoke("explain", src, "--out", out, "--resume", *options)
    assert resumed.exit_code == 0, resumed.stderr
    assert [r["path"] for r in document(out)["images"]] == [str(p) for p in sorted(src.glob("*.png"))]
    assert temp_files(out) == []


def test_shards_share_a_folder_but_not_with_a_whole_run_or_the_same_shard(tmp_path, tiny):
    options, images = tiny
    out = tmp_path / "o"
    out.mkdir()
    with writers.FolderLock(out, "1-of-2"):  # shard 1/2 is running (here: this process)
        other = invoke("explain", images, "--out", out, "--shard", "2/2", *options)
        same = invoke("explain", images, "--out", out, "--shard", "1/2", *options)
        whole = invoke("explain", images, "--out", out, *options)
    assert other.exit_code == 0, other.stderr
    assert (out / "predictions.2-of-2.json").is_file()
    busy = (f"Error: {out} is in use by another gradcam run (pid {os.getpid()}); "
            "wait for it to end, or choose another --out folder\n")
    assert (same.exit_code, same.stderr) == (2, busy)
    assert (whole.exit_code, whole.stderr) == (2, busy)
    assert invoke("explain", images, "--out", out, *options).exit_code == 0  # released


def test_resume_drops_a_torn_line_anywhere_in_the_log(tmp_path, tiny):
    options, images = tiny
    out = tmp_path / "o"
    assert invoke("explain", images, "--out", out, *options).exit_code == 0
    lines = (out / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + lines[3]  # torn by a concurrent writer: two records in one line
    del lines[3]
    (out / "predictions.jsonl").write_bytes(b"".join(lines))
    result = invoke("explain", images, "--out", out, "--resume", *options)
    assert result.exit_code == 0, result.stderr
    records = log_records(out)
    doc = document(out)
    assert len(records) == 6  # the 4 whole lines kept; images 2 and 3, lost with the torn line, redone
    assert doc["images"] == [next(r for r in records if r["path"] == p["path"]) for p in doc["images"]]
    assert [r["path"] for r in doc["images"]] == [str(p) for p in sorted(images.glob("*.png"))]
    assert doc["summary"] == {"images": 6, "done": 6, "failed": 0}


# ---------------------------------------------------------------------------
# 2. SIGINT / SIGTERM, 3. a closed stdout


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, tiny):
    """300 images and their uninterrupted run: (options, folder, output folder)."""
    options, _ = tiny
    root = tmp_path_factory.mktemp("long")
    src = make_images(root / "in", 300)
    result = invoke("explain", src, "--out", root / "full", "--batch-size", 4, *options)
    assert result.exit_code == 0, result.stderr
    return options, src, root / "full"


def same_results(out: pathlib.Path, reference: pathlib.Path) -> None:
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == {p.relative_to(reference).as_posix() for p in reference.rglob("*") if p.is_file()}
    doc, ref = document(out), document(reference)
    assert doc["summary"] == ref["summary"]
    assert_close(doc["images"], ref["images"])  # batches of 1 and 4 against 4: floats within FLOAT_ATOL


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_between_batches_and_resume_completes(tmp_path, long_run, signum, code):
    options, src, full = long_run
    out = tmp_path / "o"
    proc = cli(src, "--out", out, "--batch-size", 1, *options, stderr=subprocess.PIPE, text=True)
    wait_for_records(out / "predictions.jsonl", 1, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    done = log_records(out)
    assert 1 <= len(done) < 300
    assert err == f"gradcam: interrupted after {len(done)} of 300 images; rerun with --resume\n"
    doc = document(out)
    assert doc["images"] == done and doc["summary"] == {"images": len(done), "done": len(done), "failed": 0,
                                                        "interrupted": True, "inputs": 300}
    assert [r["path"] for r in done] == [str(p) for p in sorted(src.glob("*.png"))][: len(done)]
    for record in done:
        assert (out / record["predictions"][0]["overlay"]).is_file()
    assert temp_files(out) == []
    resumed = invoke("explain", src, "--out", out, "--batch-size", 4, "--resume", *options)
    assert resumed.exit_code == 0, resumed.stderr
    same_results(out, full)


def test_a_closed_stdout_stops_quietly_and_keeps_the_finished_work(tmp_path, long_run):
    options, src, _ = long_run
    out = tmp_path / "o"
    proc = cli(src, "--out", out, "--batch-size", 1, "--jsonl", *options, stdout=subprocess.PIPE,
               stderr=subprocess.PIPE)
    first = json.loads(proc.stdout.readline())
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""
    done = log_records(out)
    assert 1 <= len(done) < 300 and done[0] == first
    assert document(out)["images"] == done
    assert temp_files(out) == []


# ---------------------------------------------------------------------------
# 7. --resume with other inputs keeps the union


def test_resume_with_other_inputs_lists_the_union_and_agrees_with_the_log(tmp_path, tiny):
    options, _ = tiny
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, names in ((a, ["x0", "x1", "x2"]), (b, ["y0", "x1"])):
        folder.mkdir()
        for i, name in enumerate(names):
            Image.fromarray(np.full((30, 40, 3), 60 * i + 20, np.uint8)).save(folder / f"{name}.png")
    out = tmp_path / "o"
    assert invoke("explain", a, "--out", out, "--class", "red", *options).exit_code == 0
    result = invoke("explain", b, "--out", out, "--class", "red", "--resume", *options)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ("gradcam: --resume: predictions.json also lists 2 images of earlier runs that are not "
                             "among these inputs, after this run's; 1 earlier images whose output files this run "
                             "overwrote are left out\n")
    doc = document(out)
    assert [r["path"] for r in doc["images"]] == [str(b / "x1.png"), str(b / "y0.png"), str(a / "x0.png"),
                                                  str(a / "x2.png")]
    records = log_records(out)
    assert [r["path"] for r in records] == [str(a / f"x{i}.png") for i in range(3)] + [str(b / "x1.png"),
                                                                                       str(b / "y0.png")]
    assert doc["images"] == [records[i] for i in (3, 4, 0, 2)]
    assert doc["summary"] == {"images": 4, "done": 4, "failed": 0}
    assert sorted(p.name for p in out.glob("*.jpg")) == ["x0.class1-red.jpg", "x1.class1-red.jpg",
                                                        "x2.class1-red.jpg", "y0.class1-red.jpg"]


# ---------------------------------------------------------------------------
# 11. --threshold that keeps no label, 12. a regression output's value


def test_resume_keeps_images_whose_threshold_kept_no_label(tmp_path, tiny):
    options, images = tiny
    out = tmp_path / "o"
    assert invoke("explain", images, "--out", out, "--threshold", 0.99, *options).exit_code == 0
    before = (out / "predictions.jsonl").read_bytes()
    records = log_records(out)
    assert len(records) == 6 and all(r["status"] == "ok" and r["predictions"] == [] for r in records)
    result = invoke("explain", images, "--out", out, "--threshold", 0.99, "--resume", *options[:-1])
    assert result.exit_code == 0, result.stderr
    assert "(6 kept from the previous run)" in result.stderr
    assert (out / "predictions.jsonl").read_bytes() == before  # nothing redone, the log did not grow
    assert document(out)["images"] == records


def test_a_regression_output_reports_a_value_not_a_probability(tmp_path):
    from builders import SIZE

    model = small_cnn("regression")
    model.save(tmp_path / "reg.keras")
    pixels = np.random.default_rng(3).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"r{i}.png")
    out = tmp_path / "o"
    result = invoke("explain", folder, "--model", tmp_path / "reg.keras", "--preprocess", "scale",
                    "--target-unit", 0, "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    doc = document(out)
    assert doc["head"] == "linear"
    expected = model.predict(pixels.astype(np.float32) / 255.0, verbose=0)[:, 0]
    for record, value in zip(doc["images"], expected):
        [entry] = record["predictions"]
        assert set(entry) == {"rank", "class_index", "class_id", "label", "value", "overlay"}
        assert entry["value"] == pytest.approx(float(value), abs=1e-5)


def test_a_new_run_without_resume_removes_what_the_earlier_run_wrote(tmp_path, tiny):
    """Without --resume the earlier run's files go first, so none is left behind unlisted; files the
    run did not write stay."""
    options, images = tiny
    out = tmp_path / "o"
    options = [o for o in options if o not in ("--top", 1)]
    assert invoke("explain", images, "--out", out, "--top", 2, "--save-raw", *options).exit_code == 0
    (out / "notes.txt").write_text("mine")
    again = invoke("explain", images, "--out", out, "--top", 1, *options)
    assert again.exit_code == 0, again.stderr
    assert again.stderr == (f"gradcam: {out} held an earlier run: its 24 files were removed first (--resume keeps "
                            "and completes a run instead)\n")  # 6 images x 2 maps x (overlay + raw)
    listed = {p["overlay"] for r in document(out)["images"] for p in r["predictions"]}
    assert {p.name for p in out.glob("*.jpg")} == listed and len(listed) == 6
    assert not list(out.glob("*.npy")) and (out / "notes.txt").read_text() == "mine"
