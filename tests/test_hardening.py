"""Hardening: a locked output folder, interrupts, broken pipes, early checks, resume semantics.

Runs use a small untrained CNN saved as .keras (fast to load) on tiny generated images."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from builders import small_cnn
from helpers import assert_close, invoke

from gradcam_cli.io import writers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model options, folder of 6 images) for a fast own-model run."""
    root = tmp_path_factory.mktemp("tiny")
    small_cnn("softmax").save(root / "model.keras")
    (root / "labels.txt").write_text("red\ngreen\nblue\n")
    images = make_images(root / "images", 6)
    return ["--model", root / "model.keras", "--labels", root / "labels.txt", "--preprocess", "scale", "--top", 1,
            "-q"], images


def make_images(folder: pathlib.Path, n: int, size: int = 40) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(folder / f"im{i:03d}.png")
    return folder


def cli(*args, **popen) -> subprocess.Popen:
    """``python -m gradcam_cli explain ARGS`` in a child process (this checkout's code)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    return subprocess.Popen([sys.executable, "-m", "gradcam_cli", "explain", *map(str, args)], env=env, **popen)


def wait_for_records(jsonl: pathlib.Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {n} records in {jsonl} (exit {proc.poll()})")


def log_records(out: pathlib.Path, name: str = "predictions.jsonl") -> list[dict]:
    lines = (out / name).read_bytes().splitlines()
    return [json.loads(line) for line in lines]  # every line is JSON


def document(out: pathlib.Path, name: str = "predictions.json") -> dict:
    return json.loads((out / name).read_text())


def temp_files(out: pathlib.Path) -> list[str]:
    return [p.name for p in out.rglob("*") if ".tmp-" in p.name]


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
    assert doc["images"] == done and doc["summary"] == {"images": len(done), "done": len(done), "failed": 0}
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
# 14. progress in a log file


def test_progress_in_a_file_is_a_plain_line_every_ten_seconds():
    import io

    from gradcam_cli.cli.progress import Progress

    now = [0.0]
    stream = io.StringIO()
    progress = Progress(100, quiet=False, stream=stream, clock=lambda: now[0])
    for _ in range(30):  # 30 images, one every 0.5 s: a line at 10 s (20 done)
        now[0] += 0.5
        progress.update()
    progress.write("gradcam: skipped x.jpg: empty file")
    progress.close()
    assert stream.getvalue() == ("gradcam: 20 of 100 images (20%), 2.0 img/s, 0m40s left\n"
                                 "gradcam: skipped x.jpg: empty file\n")
    assert "\r" not in stream.getvalue()
    quiet = io.StringIO()
    silent = Progress(100, quiet=True, stream=quiet, clock=lambda: now[0])
    for _ in range(30):
        now[0] += 1.0
        silent.update()
    assert quiet.getvalue() == ""


# ---------------------------------------------------------------------------
# 4-6. arguments checked before anything is loaded

EARLY = """
import json, sys
from gradcam_cli.cli import main
try:
    main(sys.argv[1:], prog_name="gradcam")
except SystemExit as exc:
    code = exc.code
sys.stdout.write(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules}))
"""


def early(*args, cwd=None, stdin: str = "") -> tuple[int, bool, str]:
    """(exit code, whether TensorFlow was imported, stderr) of ``gradcam ARGS`` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", EARLY, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, input=stdin, timeout=120)
    status = json.loads(done.stdout.splitlines()[-1])
    return status["code"], status["tensorflow"], done.stderr


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "texts").mkdir()
    (root / "texts" / "notes.txt").write_text("not an image")
    make_images(root / "ok", 2)
    (root / "truth.csv").write_text(f"path,label\n{root / 'ok' / 'im000.png'},tabby\n{root / 'ok' / 'im001.png'},tabyy\n")
    (root / "afile.txt").write_text("a file")
    return root


@pytest.mark.parametrize("args,code,message", [
    (["{root}/nosuch.jpg"], 2, "Error: input {root}/nosuch.jpg does not exist; check the path"),
    (["{root}/ok", "{root}/nosuch.jpg", "{root}/gone"], 2,
     "Error: input {root}/nosuch.jpg does not exist (and 1 more); check the path"),
    (["{root}/empty"], 5, "Error: no images found in {root}/empty (looked for {exts}; --ext adds others)"),
    (["{root}/texts"], 5, "Error: no images found in {root}/texts (looked for {exts}; --ext adds others)"),
    (["{root}/ok/*.jpg"], 5, "Error: no images found in {root}/ok/*.jpg (looked for {exts}; --ext adds others)"),
    (["-"], 5, "Error: no images found in stdin (looked for {exts}; --ext adds others)"),
    (["{root}/ok", "--class", "tabyy"], 2,
     "Error: unknown class 'tabyy'; close matches: 'tabby', 'tray', 'abaya'; pass a class name or an index 0..999"),
    (["{root}/ok", "--class", "1000"], 2, "Error: class index 1000 is out of range: the model has classes 0..999"),
    (["{root}/ok", "--labels-csv", "{root}/truth.csv"], 2,
     "Error: unknown class 'tabyy'; close matches: 'tabby', 'tray', 'abaya'; pass a class name or an index 0..999"),
    (["{root}/ok", "--labels", "{root}/nosuch.txt", "--class", "x"], 2, None),
    (["{root}/ok", "--backbone", "resnet51"], 2, None),
    (["{root}/ok", "--out", "{root}/afile.txt"], 3,
     "Error: cannot write {root}/afile.txt: it is a file, not a folder; pass a folder path to --out "
     "(it is created if missing)"),
    (["{root}/ok", "--out", "{root}/afile.txt/sub"], 3,
     "Error: cannot write {root}/afile.txt/sub: {root}/afile.txt is a file, not a folder; pass a folder path to "
     "--out (it is created if missing)"),
])
def test_bad_arguments_fail_at_once_without_tensorflow_and_create_nothing(bad_inputs, args, code, message):
    from gradcam_cli.io.discover import DEFAULT_EXTENSIONS

    root = bad_inputs
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    args = [a.format(root=root) for a in args]
    out = [] if "--out" in args else ["--out", root / "out"]
    exit_code, tensorflow, err = early("explain", *args, *out)
    assert exit_code == code, err
    assert not tensorflow
    assert len(err.splitlines()) == 1 and err.startswith("Error: ")
    if message is not None:
        assert err == message.format(root=root, exts=" ".join(DEFAULT_EXTENSIONS)) + "\n"
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing created


def test_a_busy_folder_is_refused_before_the_model_loads(tmp_path, bad_inputs):
    out = tmp_path / "o"
    out.mkdir()
    with writers.FolderLock(out):
        exit_code, tensorflow, err = early("explain", bad_inputs / "ok", "--out", out)
    assert (exit_code, tensorflow) == (2, False)
    assert err == (f"Error: {out} is in use by another gradcam run (pid {os.getpid()}); "
                   "wait for it to end, or choose another --out folder\n")


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


# ---------------------------------------------------------------------------
# 8. several inputs mirror the tree below their common folder


def test_dry_run_shows_the_mirrored_output_names(tmp_path, tiny):
    options, _ = tiny
    for folder in ("x", "y/z"):
        (tmp_path / folder).mkdir(parents=True)
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / folder / "a.png")
    for args, stdin in (([tmp_path / "x/a.png", tmp_path / "y/z/a.png"], None), ([f"{tmp_path}/**/a.png"], None),
                        (["-"], f"{tmp_path}/x/a.png\n{tmp_path}/y/z/a.png\n")):
        result = invoke("explain", *args, "--dry-run", "--jsonl", *options, input=stdin)
        assert result.exit_code == 0, result.stderr
        assert [json.loads(line) for line in result.stdout.splitlines()] == [
            {"path": f"{tmp_path}/x/a.png", "out_stem": "x/a"}, {"path": f"{tmp_path}/y/z/a.png", "out_stem": "y/z/a"}]


# ---------------------------------------------------------------------------
# 9. what the library's explain accepts


@pytest.fixture(scope="module")
def tiny_cam():
    from gradcam_cli.cam import GradCAM

    return GradCAM(model=small_cnn("softmax"), preprocessing="scale")


def test_explain_accepts_grey_rgba_and_float_with_a_range(tiny_cam):
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (30, 50), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    [reference] = tiny_cam.explain([rgb], top=2)
    opaque = np.dstack([rgb, np.full_like(grey, 255)])
    half = np.dstack([rgb, np.full_like(grey, 128)])
    on_white = ((rgb.astype(np.uint32) * 128 + 255 * 127 + 127) // 255).astype(np.uint8)
    same = {
        "(H, W)": tiny_cam.explain([grey], top=2),
        "(H, W, 1)": tiny_cam.explain([grey[..., None]], top=2),
        "(H, W, 4) opaque": tiny_cam.explain([opaque], top=2),
        "float 0..1": tiny_cam.explain([rgb.astype(np.float32) / 255], top=2, value_range=(0, 1)),
        "float 0..255": tiny_cam.explain([rgb.astype(np.float64)], top=2, value_range=(0, 255)),
        "(N, H, W, C) batch": tiny_cam.explain(rgb[None], top=2),
    }
    for what, [result] in same.items():
        np.testing.assert_array_equal(result.maps, reference.maps, err_msg=what)
        assert result.predictions == reference.predictions, what
    [blended] = tiny_cam.explain([half], top=2)
    [expected] = tiny_cam.explain([on_white], top=2)
    np.testing.assert_array_equal(blended.maps, expected.maps)  # alpha composited on white


@pytest.mark.parametrize("image,kwargs,message", [
    (np.zeros((8, 8, 3), np.float32), {},
     "got an array of shape (8, 8, 3) and dtype float32: a float image needs value_range=(0, 1) or (0, 255) to "
     "say its scale"),
    (np.zeros((8, 8, 2), np.uint8), {}, "images must be {accepted}; got an array of shape (8, 8, 2) and dtype uint8"),
    (np.zeros((8, 8, 3, 1), np.uint8), {},
     "images must be {accepted}; got an array of shape (8, 8, 3, 1) and dtype uint8"),
    (np.zeros(8, np.uint8), {}, "images must be {accepted}; got an array of shape (8,) and dtype uint8"),
    (np.zeros((8, 8, 3), np.int16), {}, "images must be {accepted}; got an array of shape (8, 8, 3) and dtype int16"),
    (np.zeros((8, 8, 3), bool), {}, "images must be {accepted}; got an array of shape (8, 8, 3) and dtype bool"),
    (np.zeros((8, 8, 3), np.uint8), {"value_range": (0, 1)},
     "images must be {accepted}; got an array of shape (8, 8, 3) and dtype uint8 and value_range=(0, 1)"),
    (np.zeros((8, 8, 3), np.float32), {"value_range": (-1, 1)}, "value_range must be (0, 1) or (0, 255), got (-1, 1)"),
    (np.full((8, 8, 3), np.nan, np.float32), {"value_range": (0, 1)},
     "got an array of shape (8, 8, 3) and dtype float32: it holds NaN or infinite values"),
])
def test_explain_refuses_other_arrays_with_one_line(tiny_cam, image, kwargs, message):
    from gradcam_cli.io.pixels import ACCEPTED_ARRAYS

    with pytest.raises(ValueError) as info:
        tiny_cam.explain([image], **kwargs)
    assert str(info.value) == message.format(accepted=ACCEPTED_ARRAYS)


def test_explain_refuses_one_image_given_without_a_list(tiny_cam):
    with pytest.raises(ValueError) as info:
        tiny_cam.explain(np.zeros((8, 8, 3), np.uint8))
    assert str(info.value) == ("images must be a list of images or an (N, H, W, C) batch; got one array of shape "
                               "(8, 8, 3) and dtype uint8: pass [image] for one image")


# ---------------------------------------------------------------------------
# 15. small frictions


def test_ambiguous_class_names_show_what_tells_them_apart():
    from gradcam_cli.config import classes
    from gradcam_cli.errors import TargetError

    names = classes.imagenet()
    with pytest.raises(TargetError) as info:
        names.resolve("crane")
    assert str(info.value) == ("class name 'crane' is ambiguous: 134 (crane, n02012849), 517 (crane, n03126707); "
                               "pass the index or the WordNet id instead")
    with pytest.raises(TargetError) as info:
        names.resolve("maillot")
    assert str(info.value) == ("class name 'maillot' is ambiguous: 638 (maillot, n03710637), "
                               "639 (maillot, tank suit, n03710721); pass the index or the WordNet id instead")
    assert names.resolve("n03126707") == 517 and names.resolve("n02012849") == 134
    own = classes.ClassNames(labels=("a", "a"), ids=(None, None), synonyms=(("a",), ("a",)))
    with pytest.raises(TargetError) as info:
        own.resolve("a")
    assert str(info.value) == "class name 'a' is ambiguous: 0 (a), 1 (a); pass the index instead"


def test_ambiguous_class_exits_2_before_loading():
    exit_code, tensorflow, err = early("explain", "sample_images/chelsea.jpg", "--class", "crane",
                                       cwd=pathlib.Path(__file__).resolve().parents[1])
    assert (exit_code, tensorflow) == (2, False)
    assert err == ("Error: class name 'crane' is ambiguous: 134 (crane, n02012849), 517 (crane, n03126707); "
                   "pass the index or the WordNet id instead\n")


def test_null_separated_paths_lose_the_trailing_newline(tmp_path, tiny):
    options, images = tiny
    a, b = images / "im000.png", images / "im001.png"
    result = invoke("explain", "-", "--null", "--dry-run", *options, input=f"{a}\0{b}\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [str(a), str(b)]


def test_unknown_layer_points_to_gradcam_layers(tmp_path, tiny):
    options, images = tiny
    result = invoke("explain", images, "--layer", "nosuch", "--out", tmp_path / "o", *options)
    assert result.exit_code == 2
    assert result.stderr == ("Error: model 'own_softmax' has no layer 'nosuch'; pass --layer with one of its 4-D "
                             "layers (`gradcam layers` lists them)\n")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------
# 13. documented defaults and exit codes


def test_help_and_readme_show_the_max_pixels_default_and_every_exit_code():
    import re

    from gradcam_cli.cli import common

    text = " ".join(invoke("explain", "--help").stdout.split())
    assert "Default: 178,956,970 (Pillow's)" in text
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "178,956,970" in readme
    codes = {value for name, value in vars(common).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert codes == {0, 1, 2, 3, 4, 5, 130, 141}
    table = set(int(c) for c in re.findall(r"^\| (\d+) \|", readme, flags=re.M))
    assert table == codes
    assert "143 for SIGTERM" in readme
    for code in codes:
        assert f" {code} " in text, code
