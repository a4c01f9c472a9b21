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


def grid_name(stem: str) -> str:
    """An image's grid (``--grid``): ``cats/chelsea.grid.jpg``."""
    return f"{stem}.grid.jpg"


def gif_name(stem: str) -> str:
    """An image's GIF (``--gif``): ``cats/chelsea.gif``."""
    return f"{stem}.gif"


#: the record fields naming a map's file: one method's (no method in the name, but ``guided`` beside
#: heat maps is ``NAME.guided.png``), and several methods' dicts method -> file (``NAME.METHOD.ext``)
_MAP_FILES = (("overlay", None), ("raw", None), ("guided", "guided"))
_MAP_DICTS = ("overlays", "raws")


def stem_of(record: dict) -> str | None:
    """A record's output stem, read back from the name of one of its map files by :func:`map_name`
    and :func:`method_name` (records do not list it); None when it names no map file so made
    (an error record, no label kept, or no per-map file written). Finds an image's per-image
    files (:func:`grid_name`, :func:`gif_name`) whether or not the record lists them."""
    for entry in record.get("predictions") or []:
        if not isinstance(entry, dict):
            continue
        tail = f"-{safe_label(str(entry.get('label', '')))}"
        for file, method in _map_files(entry):
            base, _, ext = file.rpartition(".")
            if not (base and ext.isascii() and ext.isalnum()):
                continue
            bare = [base[: -len(method) - 1]] if method and base.endswith(f".{method}") else []
            for name in bare + [base]:  # NAME.METHOD.ext (several methods), or NAME.ext
                stem = _stem_before(name, tail, entry.get("rank"))
                if stem:
                    return stem
    return None


_KIND = re.compile(r"top(\d+)|class\d+|true", re.ASCII)  # map_name's kinds of map


def _map_files(entry: dict) -> list[tuple[str, str | None]]:
    files = [(entry[key], method) for key, method in _MAP_FILES if isinstance(entry.get(key), str)]
    for key in _MAP_DICTS:
        if isinstance(entry.get(key), dict):
            files += [(file, str(method)) for method, file in entry[key].items() if isinstance(file, str)]
    return files


def _stem_before(name: str, tail: str, rank) -> str | None:
    """``stem`` of a map's base name ``stem.KIND-LABEL`` (``tail``: ``-LABEL``); the rank, when
    known, must be a ``top`` map's number."""
    if not name.endswith(tail):
        return None
    stem, _, kind = name[: -len(tail)].rpartition(".")
    match = _KIND.fullmatch(kind)
    if not match or (match.group(1) and isinstance(rank, int) and int(match.group(1)) != rank):
        return None
    return stem or None


def result_names(shard: tuple[int, int] | None) -> dict[str, str]:
    """``predictions.json`` etc., or ``predictions.2-of-4.json`` for shard 2/4."""
    if shard is None:
        return {name: name for name in (JSON_NAME, JSONL_NAME, RUN_FILE)}
    tag = f"{shard[0]}-of-{shard[1]}"
    return {name: name.replace(".json", f".{tag}.json") for name in (JSON_NAME, JSONL_NAME, RUN_FILE)}
