"""Hardening of the command line: progress in a log file, arguments checked before anything loads,
mirrored output names, small frictions, documented defaults and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    progress = Progress(100, quiet=False, stream=stream, clock=lambda: now[0])
    for _ in range(30):  # 30 images, one every 0.5 s: a line 10 s after the first (21 done, 20 since the first)
        now[0] += 0.5
        progress.update()
    progress.write("gradcam: skipped x.jpg: empty file")
    progress.close()
    assert stream.getvalue() == ("gradcam: 21 of 100 images (21%), 2.0 img/s, 0m40s left\n"
                                 "gradcam: skipped x.jpg: empty file\n")
    assert "\r" not in stream.getvalue()
    quiet = io.StringIO()
    silent = Progress(100, quiet=True, stream=quiet, clock=lambda: now[0])
    for _ in range(30):
        now[0] += 1.0
        silent.update()
    assert quiet.getvalue() == ""


def test_the_rate_and_time_left_leave_out_the_start_up():
    import io

    from gradcam_cli.cli.progress import Progress

    now = [0.0]
    stream = io.StringIO()
    progress = Progress(400, quiet=False, stream=stream, clock=lambda: now[0])
    for k in range(12):  # a minute of start-up (the model, Ray and its actors), then a batch of 16 every second
        for i in range(16):
            now[0] = 60.0 + k + i / 1000
            progress.update()
    # the first line 10 s after the first batch: the 145 images since it over those 10 s
    assert stream.getvalue() == "gradcam: 161 of 400 images (40%), 14.5 img/s, 0m16s left\n"


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
