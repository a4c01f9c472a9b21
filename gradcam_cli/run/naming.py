"""Output names: one rule for every file a run writes."""

from __future__ import annotations

import re

JSONL_NAME = "predictions.jsonl"
JSON_NAME = "predictions.json"
RUN_FILE = ".gradcam-run.json"


def safe_label(label: str) -> str:
    """A class label made safe for a file name (``tiger cat`` -> ``tiger_cat``)."""
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", label).strip("_") or "class"


def map_name(stem: str, label: str, rank: int, slot: int, n: int, by_class: bool) -> str:
    """The base name (no extension) of one map's files.

    ``cats/chelsea.top1-tiger_cat`` (top-N, by rank), ``cats/chelsea.class1-tabby``
    (``--class``, by position), or ``cats/chelsea.true-tabby`` for the true class's
    extra map (``slot > n``, test-set mode). Numbers are zero-padded to the width of N.
    """
    if slot > n:
        return f"{stem}.true-{safe_label(label)}"
    kind = "class" if by_class else "top"
    number = str(slot if by_class else rank).zfill(len(str(n)))
    return f"{stem}.{kind}{number}-{safe_label(label)}"


def method_name(name: str, method: str, several: bool) -> str:
    """A map's base name for one method: ``chelsea.top1-Egyptian_cat.gradcam++`` when a run
    asks several methods, the plain ``name`` when it asks one."""
    return f"{name}.{method}" if several else name


def result_names(shard: tuple[int, int] | None) -> dict[str, str]:
    """``predictions.json`` etc., or ``predictions.2-of-4.json`` for shard 2/4."""
    if shard is None:
        return {name: name for name in (JSON_NAME, JSONL_NAME, RUN_FILE)}
    tag = f"{shard[0]}-of-{shard[1]}"
    return {name: name.replace(".json", f".{tag}.json") for name in (JSON_NAME, JSONL_NAME, RUN_FILE)}
