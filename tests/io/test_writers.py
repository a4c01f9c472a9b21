"""Atomic writes, the JSON Lines log and stale temp files."""

from __future__ import annotations

import json
import os

import pytest

from gradcam_cli.io import writers
from gradcam_cli.errors import OutputError


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "predictions.json"
    writers.write_json_document(target, {"v": 1}, [{"a": 1}])

    def records():
        yield {"a": 2}
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        writers.write_json_document(target, {"v": 2}, records())
    assert json.loads(target.read_text()) == {"v": 1, "images": [{"a": 1}]}
    assert os.listdir(tmp_path) == ["predictions.json"]


def test_unwritable_target_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*file/sub/a\.jpg: "):
        writers.write_bytes(blocker / "sub" / "a.jpg", b"data")


def test_json_lines_offsets_and_a_torn_tail(tmp_path):
    path = tmp_path / "log.jsonl"
    with writers.JsonLines(path) as log:
        offsets = [log.write({"path": "a"}), log.write({"path": "b", "x": "é"})]
    with open(path, "ab") as handle:
        handle.write(b'{"path": "c", "tor')  # killed mid-write
    assert [o for o, _ in writers.read_json_lines_with_offsets(path)] == offsets
    assert list(writers.read_records_at(path, reversed(offsets))) == [{"path": "b", "x": "é"}, {"path": "a"}]
    with writers.JsonLines(path, append=True) as log:  # reopening cuts the torn line off
        log.write({"path": "d"})
    assert [r["path"] for _, r in writers.read_json_lines_with_offsets(path)] == ["a", "b", "d"]


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    live = writers._temp_name(tmp_path / "a.jpg")  # this process: alive
    dead = tmp_path / f".b.jpg.tmp-{writers._HOST}-999999999"
    other_host = tmp_path / ".c.jpg.tmp-otherhost-1"
    for path in (live, dead, other_host):
        path.write_bytes(b"partial")
    assert writers.remove_stale_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_host.name])
