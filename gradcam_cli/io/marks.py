"""What marks a folder as a gradcam run's output: the walk never enters one (:mod:`gradcam_cli.io.walk`)."""

from __future__ import annotations

import re
from typing import Iterable

__all__ = ["holds_run"]

#: The names a gradcam run leaves in its output folder: explain's run file, log and document (run/naming.py;
#: a shard's carry ``.K-of-N``), evaluate's (run/evaluate.py's EVAL_FILES) and the folder lock (io/writers.py's
#: LOCK_NAME; a shard's ``.gradcam.K-of-N.lock``). io may not import run: tests/io/test_walk.py keeps them in step.
_RUN_MARK = re.compile(r"(\.gradcam-(run|evaluate)|predictions|evaluation)(\.[0-9]+-of-[0-9]+)?\.jsonl?"
                       r"|\.gradcam(\.[0-9]+-of-[0-9]+)?\.lock")


def holds_run(names: Iterable[str]) -> bool:
    """Whether a folder holding files ``names`` holds a gradcam run's output (never walked into)."""
    return any(_RUN_MARK.fullmatch(name) for name in names)
