"""`gradcam explain --engine ray`: the same outputs as the local engine, through killed workers and
killed drivers. One local Ray (2 CPUs, small object store, no dashboard, auth off) for the module;
the real offline EfficientNet-Lite0; a folder of photos, crops, a corrupt and an empty file."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import (REPO, assert_close, assert_same_pictures, assert_same_raws, cli, invoke, make_images,
                     temp_files, wait_for_records)
from PIL import Image

from gradcam_cli.errors import EngineError, ImageError, OutputError

pytestmark = pytest.mark.ray

SAMPLES = REPO / "sample_images"
OPTIONS = ["--top", "2", "--save-raw", "--batch-size", "2", "--labels-csv", "labels.csv", "-q"]
INPUTS = 10  # 4 photos, 4 crops, a corrupt and an empty file


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """``images/`` (10 inputs, two of them bad) and ``labels.csv`` (test-set mode for three)."""
    base = tmp_path_factory.mktemp("ray")
    images = base / "images"
    (images / "more").mkdir(parents=True)
    photos = sorted(SAMPLES.glob("*.jpg"))
    rng = np.random.default_rng(16)
    for i, src in enumerate(photos):
        shutil.copy(src, images / src.name)
        rgb = np.asarray(Image.open(src).convert("RGB"))
        h, w = rgb.shape[:2]
        y, x = int(rng.integers(0, h // 3)), int(rng.integers(0, w // 3))
        Image.fromarray(np.ascontiguousarray(rgb[y:y + h // 2, x:x + w // 2][:, ::-1])).save(images / "more" / f"crop{i}.png")
    (images / "more" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (images / "empty.png").write_bytes(b"")
    (base / "labels.csv").write_text("path,label\nimages/chelsea.jpg,tabby\nimages/coffee.jpg,967\n"
                                     "images/more/crop1.png,tiger cat\n")
    return base


@pytest.fixture(scope="module")
def local_run(base):
    """The local engine's run of the folder: the reference."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        result = invoke("explain", "images", "--out", "local", *OPTIONS)
    assert result.exit_code == 1, result.stderr  # the corrupt and the empty file
    return base / "local"


def files(out: pathlib.Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def log_records(path: pathlib.Path) -> list[dict]:
    from gradcam_cli.io.writers import read_json_lines_with_offsets

    return [record for _, record in read_json_lines_with_offsets(path)]


def assert_same_run(out: pathlib.Path, reference: pathlib.Path, name: str = "predictions.json",
                    header: bool = True, resumed: bool = False) -> list[dict]:
    """Same files (names), same records in input order (numbers within 1e-5), maps within 1e-5,
    overlays alike, and the log holding each record once (``resumed``: its last record of each
    image is the document's). Returns ``out``'s records."""
    ours, theirs = json.loads((out / name).read_text()), json.loads((reference / "predictions.json").read_text())
    if header:
        assert_close({k: v for k, v in ours.items() if k != "images"},
                     {k: v for k, v in theirs.items() if k != "images"}, "header")
    paths = [r["path"] for r in theirs["images"]]
    mine = {r["path"]: r for r in theirs["images"]}
    if name == "predictions.json":
        assert files(out) == files(reference)
    else:  # a shard: the reference is the whole run
        mine = {r["path"]: r for r in ours["images"]}
        paths = [p for p in paths if p in mine]
    assert [r["path"] for r in ours["images"]] == paths
    for record in ours["images"]:
        assert_close(record, {r["path"]: r for r in theirs["images"]}[record["path"]], record["path"])
        for entry in record.get("predictions", []):
            assert_same_raws(out / entry["raw"], reference / entry["raw"], entry["raw"])
            assert_same_pictures(out / entry["overlay"], reference / entry["overlay"], entry["overlay"])
    log = log_records((out / name).with_suffix(".jsonl"))
    if not resumed:
        assert sorted(r["path"] for r in log) == sorted(mine)  # each image once, in any order
    assert {r["path"]: r for r in log} == {r["path"]: r for r in ours["images"]}
    assert not [f for f in files(out) if ".tmp-" in f]
    return ours["images"]


def test_without_ray_one_line_says_how_to_install_it(base, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is absent
    monkeypatch.setitem(sys.modules, "ray.data", None)
    monkeypatch.chdir(base)
    result = invoke("explain", "images", "--out", "no-ray", "--engine", "ray")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "Error: --engine ray needs Ray, which is not installed; install the [ray] extra: pip install -e '.[ray]' in a "
        "clone of gradcam-cli"]
    assert not (base / "no-ray").exists()
    result = invoke("explain", "images", "--out", "no-ray", "--workers", "2")
    assert result.exit_code == 2 and "--workers apply to --engine ray" in result.stderr


def test_one_actor_writes_what_the_local_engine_writes(ray_address, base, local_run, monkeypatch):
    monkeypatch.chdir(base)
    result = invoke("explain", "images", "--out", "ray1", "--engine", "ray", "--workers", "1", *OPTIONS)
    assert result.exit_code == 1, result.stderr
    records = assert_same_run(base / "ray1", local_run)
    assert len(records) == INPUTS
    errors = {r["path"]: r for r in records if r["status"] == "error"}
    assert sorted(errors) == ["images/empty.png", "images/more/corrupt.jpg"]
    for path, record in errors.items():  # what the project's decoder says, in-process
        from gradcam_cli.io.images import decode

        with pytest.raises(ImageError) as raised:
            decode(path)
        assert (record["kind"], record["message"]) == (raised.value.kind, raised.value.message)
    labelled = {r["path"]: r["true_label"]["class_index"] for r in records if "true_label" in r}
    assert labelled == {"images/chelsea.jpg": 281, "images/coffee.jpg": 967, "images/more/crop1.png": 282}


def test_two_actors_write_the_same_in_any_order(ray_address, base, local_run, monkeypatch):
    monkeypatch.chdir(base)
    result = invoke("explain", "images", "--out", "ray2", "--engine", "ray", "--workers", "2", *OPTIONS)
    assert result.exit_code == 1, result.stderr
    assert_same_run(base / "ray2", local_run)


def faulty_actor(marker: pathlib.Path) -> type:
    """The engine's actor, but the first batch of the run (one marker file for all) writes its files,
    starts one more, and the process dies mid-write (Ray restarts the actor and re-runs the batch)."""
    from gradcam_cli.io import writers
    from gradcam_cli.run.ray_engine import ExplainActor

    class FaultyActor(ExplainActor):  # defined in a function: pickled by value for the workers
        def __call__(self, batch):
            result = super().__call__(batch)
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return result
            with writers.atomic_path(self.out_dir / f"{batch['out_stem'][0]}.half.jpg") as temp:
                temp.write_bytes(b"\xff\xd8 the first half of a JPEG")
                os._exit(1)

    return FaultyActor


def test_a_worker_killed_mid_batch_is_replaced_and_nothing_is_lost_or_doubled(ray_address, base, local_run,
                                                                           lite0_cam, monkeypatch):
    from gradcam_cli.io.discover import iter_inputs
    from gradcam_cli.io.labels_csv import load_labels_csv
    from gradcam_cli.run.ray_engine import RayOptions, run_ray
    from gradcam_cli.settings import RunOptions, RunSettings

    monkeypatch.chdir(base)
    marker = base / "fault-happened"
    refs = list(iter_inputs(["images"]))
    truth = {path: lite0_cam.class_names.resolve(label, 1000) for path, label in load_labels_csv("labels.csv").items()}
    settings = RunSettings.from_json({"top": 2, "save_raw": True, "labels_csv": str(base / "labels.csv")})
    summary = run_ray(lite0_cam, refs, settings, RunOptions(out_dir="killed-worker", batch_size=2),
                      RayOptions(workers=1), truth=truth, actor=faulty_actor(marker))
    assert marker.exists()  # the fault happened
    assert (summary.records, summary.done, summary.failed) == (INPUTS, 8, 2)
    assert_same_run(base / "killed-worker", local_run, header=False)


def test_resume_completes_a_ray_run_whose_driver_was_killed(ray_address, base, local_run, monkeypatch):
    out = base / "killed-driver"
    log = out / "predictions.jsonl"
    with open(base / "driver.err", "wb") as err:
        driver = subprocess.Popen(
            [sys.executable, "-c", "from gradcam_cli.cli import main; main()", "explain", "images", "--out", out.name,
             "--engine", "ray", "--ray-address", ray_address, "--workers", "1", *OPTIONS],
            cwd=base, stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SAMPLES.parent), os.environ.get("PYTHONPATH")]))})
        deadline = time.monotonic() + 300
        while not (log.exists() and log.read_bytes().count(b"\n") >= 1) and driver.poll() is None:
            assert time.monotonic() < deadline, "the driver wrote no record in 300 s"
            time.sleep(0.02)
        driver.send_signal(signal.SIGKILL)
        assert driver.wait() == -signal.SIGKILL, (base / "driver.err").read_text()
    before = log_records(log)
    assert 1 <= len(before) < INPUTS and not (out / "predictions.json").exists()
    kept = sum(record["status"] == "ok" for record in before)  # error records are tried again

    monkeypatch.chdir(base)
    result = invoke("explain", "images", "--out", out.name, "--engine", "ray", "--workers", "1", "--resume",
                    *[o for o in OPTIONS if o != "-q"])
    assert result.exit_code == 1, result.stderr
    assert (f"({kept} kept from the previous run)" in result.stderr) if kept else ("kept" not in result.stderr)
    assert_same_run(out, local_run, resumed=True)
    assert len(log_records(log)) == len(before) + INPUTS - kept


def test_a_shard_on_ray_is_the_local_runs_shard_and_resumes_on_the_local_engine(ray_address, base, local_run,
                                                                               monkeypatch):
    from gradcam_cli.io.discover import in_shard, iter_inputs

    monkeypatch.chdir(base)
    expected = [ref.path for ref in iter_inputs(["images"]) if in_shard(ref, 2, 3)]
    assert 0 < len(expected) < INPUTS
    result = invoke("explain", "images", "--out", "shard", "--engine", "ray", "--shard", "2/3", *OPTIONS)
    assert result.exit_code in (0, 1), result.stderr
    records = assert_same_run(base / "shard", local_run, name="predictions.2-of-3.json", header=False)
    assert [r["path"] for r in records] == expected
    again = invoke("explain", "images", "--out", "shard", "--shard", "2/3", "--resume", *OPTIONS[:-1])
    assert again.exit_code == result.exit_code
    done = sum(r["status"] == "ok" for r in records)
    assert f"gradcam: {done} explained ({done} kept from the previous run)" in again.stderr  # nothing redone


def test_a_worker_with_another_version_is_refused_in_one_line(ray_address, base, monkeypatch):
    import gradcam_cli.run.ray_engine as engine

    monkeypatch.setattr(engine, "__version__", "0.0.1-driver")  # what the driver sends; the workers have the real one
    monkeypatch.chdir(base)
    result = invoke("explain", "images/chelsea.jpg", "--out", "versions", "--engine", "ray", "-q")
    assert result.exit_code == 2
    from gradcam_cli import __version__

    assert result.stderr.strip().splitlines() == [
        f"Error: a Ray worker on {os.uname().nodename} has gradcam-cli {__version__}, the driver 0.0.1-driver; "
        "install the same version on every node"]


def test_an_out_folder_a_worker_cannot_write_is_refused_in_one_line(tmp_path, monkeypatch):
    from gradcam_cli.run.ray_engine import ExplainActor, WorkerSpec
    from gradcam_cli.settings import RunSettings

    monkeypatch.chdir(tmp_path)  # the actor enters the driver's folder: give this process its own back afterwards

    (tmp_path / "a-file").write_text("")
    spec = WorkerSpec(settings=RunSettings(), out_dir=str(tmp_path / "a-file" / "out"), cwd=str(tmp_path),
                      version=__import__("gradcam_cli").__version__, recorded={}, described={}, threads=1)
    actor = ExplainActor(spec)  # refuses on its first batch (what Ray passes back whole)
    with pytest.raises(OutputError) as raised:
        actor({"index": np.arange(1), "path": np.array(["x.jpg"]), "out_stem": np.array(["x"]),
               "true_class": np.array([-1])})
    assert "\n" not in str(raised.value) and f"cannot write {tmp_path / 'a-file' / 'out'}" in str(raised.value)


def test_the_pool_fits_the_cluster_or_is_refused():
    from gradcam_cli.run.ray_engine import RayOptions, _blocks, plan_pool

    assert [_blocks(b, 2) for b in (1, 5, 8, 100, 62_500)] == [1, 5, 8, 13, 7813]  # a batch a block, then up to 8

    assert plan_pool([{"CPU": 16}], RayOptions(), batches=100) == (4, 0.0, 4.0)  # one node each: the cluster
    assert plan_pool([{"CPU": 16, "GPU": 4}], RayOptions(), batches=100) == (4, 1.0, 1.0)
    assert plan_pool([{"CPU": 16, "GPU": 4}], RayOptions(), batches=3) == (3, 1.0, 1.0)  # no idle actors
    assert plan_pool([{"CPU": 2}], RayOptions(workers=2, cpus_per_worker=1), batches=5) == (2, 0.0, 1.0)
    assert plan_pool([{"CPU": 2}], RayOptions(workers=2), batches=5) == (2, 0.0, 1.0)  # the CPUs shared out
    assert plan_pool([{"CPU": 32}], RayOptions(workers=2), batches=5) == (2, 0.0, 4.0)
    with pytest.raises(EngineError, match=r"^the Ray cluster has 2 CPUs and 0 GPUs on 1 nodes, room for 2 workers x "
                                          r"\(1 CPUs, 0 GPUs\), but 3 were asked for"):
        plan_pool([{"CPU": 2}], RayOptions(workers=3, cpus_per_worker=1), batches=5)
    with pytest.raises(EngineError, match="lower --cpus-per-worker or --gpus-per-worker"):
        plan_pool([{"CPU": 8}], RayOptions(gpus_per_worker=1), batches=5)


def test_a_local_run_is_finished_on_ray_redoing_only_what_is_incomplete(ray_address, base, local_run, monkeypatch):
    out = base / "local-then-ray"
    shutil.copytree(local_run, out)
    records = json.loads((out / "predictions.json").read_text())["images"]
    ok = [r for r in records if r["status"] == "ok"]
    for record in ok[::3]:  # an overlay lost: that image is incomplete
        (out / record["predictions"][0]["overlay"]).unlink()
    (out / "predictions.json").unlink()
    kept = len(ok) - len(ok[::3])
    monkeypatch.chdir(base)
    result = invoke("explain", "images", "--out", out.name, "--engine", "ray", "--workers", "1", "--resume",
                    *[o for o in OPTIONS if o != "-q"])
    assert result.exit_code == 1, result.stderr
    assert f"({kept} kept from the previous run)" in result.stderr
    assert_same_run(out, local_run, resumed=True)
    assert len(log_records(out / "predictions.jsonl")) == INPUTS + INPUTS - kept  # the old log, then the redone


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """200 small images, for runs that are stopped part-way."""
    return make_images(tmp_path_factory.mktemp("many") / "in", 200)


def ray_driver(ray_address, tiny, src, out, *more, **popen) -> subprocess.Popen:
    """``gradcam explain`` on the module's Ray in a child process: the small model, one image a batch, one actor."""
    return cli(src, "--out", out, *tiny[0], "--batch-size", 1, "--engine", "ray", "--ray-address", ray_address,
               "--workers", 1, *more, **popen)


def assert_stopped_run(out: pathlib.Path, src: pathlib.Path, total: int) -> list[dict]:
    """What a stopped run leaves: the images begun are done and listed in input order, no temp file."""
    done = log_records(out / "predictions.jsonl")
    assert 1 <= len(done) < total
    order = [str(p) for p in sorted(src.glob("*.png"))]
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["images"] == sorted(done, key=lambda r: order.index(r["path"]))
    assert doc["summary"] == {"images": len(done), "done": len(done), "failed": 0, "interrupted": True,
                              "inputs": total}
    for record in done:
        assert (out / record["predictions"][0]["overlay"]).is_file()
    assert temp_files(out) == []
    return done


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_a_ray_run_between_batches(ray_address, tiny, many, tmp_path, signum, code):
    out = tmp_path / "o"
    proc = ray_driver(ray_address, tiny, many, out, stderr=subprocess.PIPE, text=True)
    wait_for_records(out / "predictions.jsonl", 1, proc, timeout=240)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    done = assert_stopped_run(out, many, 200)
    assert err == f"gradcam: interrupted after {len(done)} of 200 images; rerun with --resume\n"  # none of Ray's lines


def test_a_closed_stdout_stops_a_ray_run_quietly(ray_address, tiny, many, tmp_path):
    out = tmp_path / "o"
    proc = ray_driver(ray_address, tiny, many, out, "--jsonl", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = json.loads(proc.stdout.readline())
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""
    assert first in assert_stopped_run(out, many, 200)


def test_a_pool_no_node_can_host_is_refused_before_anything_is_loaded_or_made(ray_address, tiny, tmp_path):
    result = invoke("explain", tiny[1], "--out", tmp_path / "o", *tiny[0], "--engine", "ray", "--cpus-per-worker", 3)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: no node of the Ray cluster can host a worker of 3 CPUs and 0 GPUs (its 1 nodes have at most 2 CPUs "
        "and 0 GPUs each); lower --cpus-per-worker or --gpus-per-worker, or add a larger node"]
    assert not (tmp_path / "o").exists()
