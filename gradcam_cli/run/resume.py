"""``--resume``: same settings or a refusal; which images are already complete."""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Callable

from gradcam_cli.errors import ResumeError
from gradcam_cli.io import writers
from gradcam_cli.io.discover import frame_key


@dataclass(frozen=True)
class Resumed:
    """An image whose outputs a previous run completed: its record, where it is in the log."""

    offset: int  # of its record in predictions.jsonl
    record: dict


#: keys an older run file lacks -> what its run did: ``centred`` maps (``--centre-activations``) and Score-CAM's
#: ``masked_toward`` (``--scorecam-baseline``) came later
BEFORE_THE_KEY = {"centred": False, "masked_toward": "zero"}
#: a resolved key that differs -> the options that give the earlier run's maps
_HINTS = {"centred": "--centre-activations off or on", "masked_toward": "--scorecam-baseline zero or mean"}


def _differs(before, now) -> bool:
    """Whether two recorded values differ; dicts on the keys both hold (a newer version adds keys)."""
    if isinstance(before, dict) and isinstance(now, dict):
        return any(_differs(before[k], now[k]) for k in now if k in before)
    return before != now


def check_same_settings(run_file: pathlib.Path, settings: dict) -> None:
    """Refuse a folder whose run file records other settings (keys both sides know; a key of
    :data:`BEFORE_THE_KEY` an older run file lacks holds the value its run had)."""
    if not run_file.exists():
        return
    try:
        before = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
    except (OSError, ValueError):
        return
    if set(before) == {"settings"} and "settings" not in settings:  # evaluate's run file before 0.3 nested it
        before = before["settings"]
    before = {**{k: v for k, v in BEFORE_THE_KEY.items() if k in settings}, **before}
    changed = [k for k in settings if k in before and _differs(before[k], settings[k])]
    if changed:
        what = ", ".join(f"{k} {before[k]!r} -> {settings[k]!r}" for k in changed)
        raise ResumeError(
            f"cannot --resume in {run_file.parent}: it was made with other settings ({what}); "
            "use the same options" + "".join(f" ({_HINTS[k]} gives its maps)" for k in changed if k in _HINTS)
            + ", or another --out folder"
        )


def record_key(record: dict) -> str:
    """A record's identity in a run: its path, or its path and frame (a multi-frame DICOM file's;
    :func:`gradcam_cli.io.discover.frame_key`, as ``InputRef.key``)."""
    frame = record.get("frame")
    return frame_key(record["path"], frame if isinstance(frame, int) else None)


def previous_records(jsonl_path: pathlib.Path) -> dict[str, int]:
    """record key (:func:`record_key`) -> byte offset of its last record in an existing JSON Lines log."""
    index: dict[str, int] = {}
    if not jsonl_path.exists():
        return index
    for offset, record in writers.read_json_lines_with_offsets(jsonl_path):
        if isinstance(record, dict) and "path" in record:
            index[record_key(record)] = offset
    return index


class ResumeIndex:
    """The complete images (``complete(record)``) of a previous run in ``out_dir`` (empty when not resuming)."""

    def __init__(self, out_dir: pathlib.Path, jsonl_path: pathlib.Path, complete: Callable[[dict], bool],
                 enabled: bool):
        self.out_dir, self.jsonl_path, self.complete = out_dir, jsonl_path, complete
        #: lines of the log that were not whole JSON objects, dropped before reading it
        self.dropped = writers.repair_json_lines(jsonl_path) if enabled else 0
        self.offsets = previous_records(jsonl_path) if enabled else {}
        if enabled:
            writers.remove_stale_temps(out_dir)

    def lookup(self, key: str) -> Resumed | None:
        offset = self.offsets.get(key)
        if offset is None:
            return None
        record = writers.read_record_at(self.jsonl_path, offset)
        return Resumed(offset, record) if self.complete(record) else None
