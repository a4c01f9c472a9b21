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
    from gradcam_cli.io.walk import holds_run
    from gradcam_cli.io.writers import LOCK_NAME
    from gradcam_cli.run.evaluate import EVAL_FILES
    from gradcam_cli.run.naming import result_names

    names = [LOCK_NAME, ".gradcam.2-of-4.lock", EVAL_FILES.document, EVAL_FILES.log, EVAL_FILES.run_file]
    for shard in (None, (1, 1), (2, 4), (10, 12)):
        names += result_names(shard).values()
    for name in names:
        assert holds_run([name]), name
    assert not holds_run(["a.jpg", "predictions.csv", "my-predictions.json", ".gradcam"])
