"""Hardening of the command line: progress in a log file, arguments checked before anything loads,
mirrored output names, small frictions, documented defaults and exit codes."""

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

from helpers import REPO, invoke, make_images

from gradcam_cli.io import writers


# ---------------------------------------------------------------------------
# 14. progress in a log file


def test_progress_in_a_file_is_a_plain_line_every_ten_seconds():
    import io

    from gradcam_cli.cli.progress import Progress

    now = [0.0]
    stream = io.StringIO()
    progress = Progress(100, quiet=False, stream=stream, clock=lambda: now[0], ticker=False)
    for _ in range(30):  # 30 images, one every 0.5 s: a line at 10 s (20 done), rate from the first
        now[0] += 0.5
        progress.update()
    progress.write("gradcam: skipped x.jpg: empty file")
    progress.close()
    assert stream.getvalue() == ("gradcam: 20 of 100 images (20%), 2.0 img/s, 0m40s left\n"
                                 "gradcam: skipped x.jpg: empty file\n")
    assert "\r" not in stream.getvalue()
    quiet = io.StringIO()
    silent = Progress(100, quiet=True, stream=quiet, clock=lambda: now[0], ticker=False)
    for _ in range(30):
        now[0] += 1.0
        silent.update()
    assert quiet.getvalue() == ""


def test_progress_leaves_out_the_start_up_and_ticks_while_nothing_finishes():
    """A 30 s start-up, then 10 images in 10 s: 1 img/s, not 10 / 40 s; a slow item reads as s/img;
    the ticker prints every interval even when no item finishes (a long evaluate)."""
    import io
    import time

    from gradcam_cli.cli.progress import Progress

    now = [0.0]
    stream = io.StringIO()
    progress = Progress(1000, quiet=False, stream=stream, clock=lambda: now[0], interval=10.0, ticker=False)
    now[0] = 30.0  # the model loads and compiles: nothing done
    progress.tick()
    assert stream.getvalue() == "gradcam: 0 of 1000 images (0%)\n"
    for _ in range(10):
        now[0] += 1.0
        progress.update()
    now[0] += 0.5
    progress.tick()
    assert stream.getvalue().splitlines()[-1] == "gradcam: 10 of 1000 images (1%), 1.0 img/s, 16m30s left"
    slow = io.StringIO()
    evaluate = Progress(4, quiet=False, stream=slow, clock=lambda: now[0], interval=10.0, ticker=False)
    for _ in range(2):
        now[0] += 40.0
        evaluate.update()
    assert slow.getvalue().splitlines()[-1] == "gradcam: 2 of 4 images (50%), 40.0 s/img, 1m20s left"

    ticking = io.StringIO()
    real = Progress(5, quiet=False, stream=ticking, interval=0.2)
    time.sleep(1.5)  # nothing finishes
    real.close()
    assert ticking.getvalue().count("gradcam: 0 of 5 images (0%)\n") >= 2


def test_the_rate_leaves_out_the_first_batch_and_the_start_up_before_it():
    import io

    from gradcam_cli.cli.progress import Progress

    now = [0.0]
    stream = io.StringIO()
    progress = Progress(400, quiet=False, stream=stream, clock=lambda: now[0], ticker=False)
    for k in range(12):  # a minute of start-up (the model, Ray and its actors), then a batch of 16 every second
        for i in range(16):
            now[0] = 60.0 + k + i / 1000
            progress.update()
    # a line when the first batch comes (no rate yet), the next 10 s later: the 145 images since the first batch
    assert stream.getvalue() == ("gradcam: 1 of 400 images (0%)\n"
                                 "gradcam: 161 of 400 images (40%), 14.5 img/s, 0m16s left\n")


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
    env = dict(os.environ, PYTHONPATH=str(REPO))
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
    from gradcam_cli.io.video import VIDEO_EXTENSIONS

    root = bad_inputs
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    args = [a.format(root=root) for a in args]
    out = [] if "--out" in args else ["--out", root / "out"]
    exit_code, tensorflow, err = early("explain", *args, *out)
    assert exit_code == code, err
    assert not tensorflow
    assert len(err.splitlines()) == 1 and err.startswith("Error: ")
    if message is not None:
        assert err == message.format(root=root, exts=" ".join((*DEFAULT_EXTENSIONS, *VIDEO_EXTENSIONS))) + "\n"
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
                                       cwd=REPO)
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
    readme = (REPO / "README.md").read_text()
    assert "178,956,970" in readme
    codes = {value for name, value in vars(common).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert codes == {0, 1, 2, 3, 4, 5, 130, 141}
    table = set(int(c) for c in re.findall(r"^\| (\d+) \|", readme, flags=re.M))
    assert table == codes
    assert "143 for SIGTERM" in readme
    for code in codes:
        assert f" {code} " in text, code


# ---------------------------------------------------------------------------
# issue 22: 11. one Ctrl-C contract for every command, 15. options a command has, checks before loading


def _handles(pid: int, signum: int) -> bool:
    """Has process ``pid`` installed a handler for ``signum`` (Linux: SigCgt in /proc/PID/status)?"""
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signum - 1)))


@pytest.mark.parametrize("command", ["activations", "filters"])
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_inspect_commands_stop_on_a_signal_with_one_line(tmp_path, tiny, command, signum, code):
    options, images = tiny
    model = options[options.index("--model") + 1]
    out = tmp_path / "o"
    args = ([images, "--layers", "target"] if command == "activations"
            else ["--layer", "target", "--filters", "0-31", "--steps", 10000])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "gradcam_cli", command, *map(str, args), "--model", str(model),
                             "--preprocess", "scale", "--out", str(out), "-q"], env=env, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    # SIGTERM: Python itself catches SIGINT from its start; the command installs both handlers at once
    while not _handles(proc.pid, signal.SIGTERM) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # into the model's load or the work
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    if command == "activations" and proc.returncode == 0:
        pytest.fail("activations finished before the signal: give it more work")  # not a skip: the test is void
    assert proc.returncode == code, err
    assert len(err.splitlines()) == 1 and err.startswith("gradcam: interrupted; the ") and str(out) in err, err
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize("command", ["activations", "filters", "evaluate"])
def test_an_unwritable_out_is_found_before_the_model_loads(tmp_path, tiny, command):
    options, images = tiny
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_text("not a model")  # loading it would exit 4: the output folder must be checked first
    args = {"activations": [images], "filters": ["--layer", "target"], "evaluate": [images]}[command]
    result = invoke(command, *args, "--model", corrupt, "--out", blocker / "out")
    assert result.exit_code == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(blocker) in result.stderr


def test_evaluate_takes_the_input_options_its_messages_name(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    result = invoke("evaluate", folder, "--out", tmp_path / "o")
    assert result.exit_code == 5
    assert result.stderr.strip().endswith("; --ext adds others)")
    assert "--ext" in invoke("evaluate", "--help").stdout and "--no-recursive" in invoke("activations", "--help").stdout
