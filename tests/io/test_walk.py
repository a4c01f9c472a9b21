"""Walking the inputs: folders a run owns are never walked into, and what cannot be read is reported."""

from __future__ import annotations

import os

import pytest

from gradcam_cli.io.discover import iter_inputs


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded here")


def _paths(refs):
    return [ref.path for ref in refs]


# --------------------------------------------------------------------------- #
# item 4: a folder holding a gradcam run, and the run's own --out, are never walked into

MARKS = [".gradcam-run.json", ".gradcam-run.2-of-4.json", ".gradcam-evaluate.json", ".gradcam.lock",
         "predictions.json", "predictions.jsonl", "predictions.1-of-3.jsonl", "evaluation.json"]


@pytest.mark.parametrize("mark", MARKS)
def test_a_folder_holding_a_run_is_not_walked(tmp_path, monkeypatch, mark):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "photos" / "a.jpg")
    _touch(tmp_path / "photos" / "heat" / "a.top1-cat.jpg")
    _touch(tmp_path / "photos" / "heat" / "deeper" / "b.top1-cat.jpg")
    _touch(tmp_path / "photos" / "heat" / mark)
    assert _paths(iter_inputs(["photos"])) == ["photos/a.jpg"]
    assert _paths(iter_inputs(["photos/**/*.jpg"])) == ["photos/a.jpg"]


def test_an_ordinary_json_file_does_not_mark_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "photos" / "sub" / "a.jpg")
    _touch(tmp_path / "photos" / "sub" / "predictions-notes.json")
    _touch(tmp_path / "photos" / "sub" / "labels.json")
    assert _paths(iter_inputs(["photos"])) == ["photos/sub/a.jpg"]


def test_the_run_output_folder_is_not_walked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "photos" / "a.jpg")
    _touch(tmp_path / "photos" / "heat" / "old.jpg")  # no run file yet: created by hand, or by a run that died early
    assert _paths(iter_inputs(["photos"], skip=["photos/heat/"])) == ["photos/a.jpg"]
    assert _paths(iter_inputs(["photos"], skip=[str(tmp_path / "photos" / "heat")])) == ["photos/a.jpg"]
    # a --out that does not exist yet skips nothing and is not created
    assert _paths(iter_inputs(["photos"], skip=["photos/new"])) == ["photos/a.jpg", "photos/heat/old.jpg"]
    assert not (tmp_path / "photos" / "new").exists()


def test_files_named_in_a_run_folder_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "heat" / "a.top1-cat.jpg")
    _touch(tmp_path / "heat" / "predictions.json")
    assert _paths(iter_inputs(["heat/a.top1-cat.jpg"])) == ["heat/a.top1-cat.jpg"]
    assert _paths(iter_inputs(["heat"])) == []


def test_the_marks_are_the_names_runs_write():
    """io may not import run: the rule lives in io, and this keeps it in step with the names."""
    from gradcam_cli.io.marks import holds_run
    from gradcam_cli.io.writers import LOCK_NAME
    from gradcam_cli.run.evaluate import EVAL_FILES
    from gradcam_cli.run.naming import result_names

    names = [LOCK_NAME, ".gradcam.2-of-4.lock", EVAL_FILES.document, EVAL_FILES.log, EVAL_FILES.run_file]
    for shard in (None, (1, 1), (2, 4), (10, 12)):
        names += result_names(shard).values()
    for name in names:
        assert holds_run([name]), name
    assert not holds_run(["a.jpg", "predictions.csv", "my-predictions.json", ".gradcam"])


# --------------------------------------------------------------------------- #
# item 12: what the walk cannot read gets an error record naming the cause (in a child bound by
# permission bits:
# root reads through any permission bit unless it drops CAP_DAC_OVERRIDE)

_DECODE_ALL = """
import json, sys
from gradcam_cli.errors import ImageError
from gradcam_cli.io.discover import iter_inputs, missing_arguments
from gradcam_cli.io.images import decode
rows = []
for ref in iter_inputs(sys.argv[1:]):
    try:
        decode(ref.path)
        rows.append([ref.path, "ok", ""])
    except ImageError as exc:
        rows.append([ref.path, exc.kind, exc.message])
print(json.dumps({"rows": rows, "missing": missing_arguments(sys.argv[1:])}))
"""


@pytest.fixture
def denied_tree(tmp_path):
    """t/a.png, an unlistable folder, a folder without search permission, broken links, a loop."""
    from PIL import Image

    t = tmp_path / "t"
    for rel in ["a.png", "locked/b.png", "noenter/c.png", "noenter/sub/d.png"]:
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(t / rel)
    os.symlink("nowhere.jpg", t / "broken.jpg")
    os.symlink("gone", t / "old_photos")  # no extension: it may have been a folder
    os.symlink("notes-gone.txt", t / "notes.txt")  # not an image name: not an input
    os.symlink("loop.jpg", t / "loop.jpg")
    (t / "locked").chmod(0o300)  # may be entered, not listed
    (t / "noenter").chmod(0o600)  # may be listed, not entered
    yield tmp_path
    for folder in (t / "locked", t / "noenter"):
        folder.chmod(0o755)


def _bound(root, *args):
    import json
    import sys

    from helpers import run_bound_by_permissions

    done = run_bound_by_permissions([sys.executable, "-c", _DECODE_ALL, *args], cwd=root)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_walk_reports_what_it_cannot_read(denied_tree):
    got = _bound(denied_tree, "t")
    rows = {path: (kind, message) for path, kind, message in got["rows"]}
    assert [path for path, _, _ in got["rows"]] == [
        "t/a.png", "t/broken.jpg", "t/loop.jpg", "t/old_photos", "t/locked", "t/noenter/c.png", "t/noenter/sub"]
    assert rows["t/a.png"][0] == "ok"
    assert rows["t/broken.jpg"] == ("missing", "broken symbolic link to nowhere.jpg (fix or remove the link)")
    assert rows["t/old_photos"] == ("missing", "broken symbolic link to gone (fix or remove the link)")
    assert rows["t/loop.jpg"][0] == "unreadable" and "symlink loop" in rows["t/loop.jpg"][1]
    assert rows["t/locked"][0] == "unreadable"
    assert "permission denied" in rows["t/locked"][1] and "cannot be listed" in rows["t/locked"][1]
    for path in ("t/noenter/c.png", "t/noenter/sub"):
        assert rows[path][0] == "unreadable"
        assert "permission denied on folder t/noenter" in rows[path][1] and "chmod" in rows[path][1]


def test_a_file_in_a_folder_without_search_permission_is_not_missing(denied_tree):
    got = _bound(denied_tree, "t/noenter/c.png", "t/broken.jpg", "t/loop.jpg")
    assert got["missing"] == []
    assert [kind for _, kind, _ in got["rows"]] == ["unreadable", "missing", "unreadable"]
    assert "permission denied on folder t/noenter" in got["rows"][0][2]


def test_same_records_walked_or_named(denied_tree):
    walked = {path: (kind, message) for path, kind, message in _bound(denied_tree, "t")["rows"]}
    named = _bound(denied_tree, "t/broken.jpg", "t/loop.jpg", "t/noenter/c.png")["rows"]
    for path, kind, message in named:
        assert walked[path] == (kind, message)
