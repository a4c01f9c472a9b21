"""After a run: the shards of one ``--out`` merged into one ``predictions.json``, and any run's
predictions as CSV. Files only; the model is never loaded.

Shards (``explain --shard K/N``) each write ``predictions.K-of-N.json``; :func:`merge_shards`
checks that all N are there and were made with the same settings, and writes
``predictions.json``: shard 1's header (``options.shard`` null, ``merged_from`` naming the
shards), a summary counted afresh over every record (accuracy too, for a labelled test set),
and every record sorted by its path and frame (a sharded run's own order is per shard).
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
import re

from gradcam_cli.errors import InputError
from gradcam_cli.io import writers
from gradcam_cli.run.journal import Summary
from gradcam_cli.run.naming import JSON_NAME
from gradcam_cli.run.resume import record_key

_SHARD = re.compile(r"^predictions\.(\d+)-of-(\d+)\.json$")
#: a run's settings that may differ between shards
_PER_SHARD = ("shard", "batch_size")
CSV_NAME = "predictions.csv"
CSV_COLUMNS = ("path", "status", "width", "height", "rank", "class_index", "class_id", "label", "probability",
               "value", "true_class", "overlay", "message", "frame")  # frame: a multi-frame DICOM file's


def _load(path: pathlib.Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}; expected a predictions file of `gradcam explain`") from None
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise InputError(f"{path} is not a gradcam-cli predictions file (no 'images' list)")
    return document


def load_predictions(out_dir, predictions: str = JSON_NAME) -> dict:
    """The parsed predictions file ``out_dir/predictions`` of a run, for the commands that read a
    finished run (``export``, ``pictures``); InputError, one line, when it is missing (naming
    the shards the folder holds instead), unreadable or not a run's."""
    source = pathlib.Path(out_dir) / predictions
    if not source.exists():
        shards = sorted(p.name for p in pathlib.Path(out_dir).glob("predictions.*-of-*.json") if _SHARD.match(p.name))
        if shards and predictions == JSON_NAME:
            raise InputError(f"no {predictions} in {out_dir}, which holds the shards {', '.join(shards)}: "
                              f"`gradcam merge {out_dir}` first, or pass --predictions {shards[0]} for one shard")
        raise InputError(f"no {predictions} in {out_dir}: expected a folder that `gradcam explain ... --out "
                          f"{out_dir}` wrote (`gradcam merge` first for shards)")
    return _load(source)


def shard_documents(out_dir: pathlib.Path) -> list[tuple[str, dict]]:
    """(file name, document) of every shard in ``out_dir``, shard 1 first; InputError when there is
    none, when the shards count differently, or when one is missing."""
    found = {}
    for path in out_dir.glob("predictions.*-of-*.json"):
        match = _SHARD.match(path.name)
        if match:
            found[(int(match[1]), int(match[2]))] = path
    if not found:
        raise InputError(f"no shard files (predictions.K-of-N.json) in {out_dir}: nothing to merge; "
                          "`gradcam explain ... --shard K/N` writes them")
    counts = sorted({n for _, n in found})
    if len(counts) > 1:
        raise InputError(f"{out_dir} holds shards of {' and of '.join(map(str, counts))}: merge one run's shards "
                          "(move the others away)")
    n = counts[0]
    missing = [k for k in range(1, n + 1) if (k, n) not in found]
    if missing:
        raise InputError(f"shard {missing[0]} of {n} is missing in {out_dir}: run `gradcam explain ... --shard "
                          f"{missing[0]}/{n}` into it first")
    return [(found[(k, n)].name, _load(found[(k, n)])) for k in range(1, n + 1)]


def merge_shards(out_dir) -> pathlib.Path:
    """Write ``out_dir/predictions.json`` from its shards (see the module docstring); returns its path.
    InputError when the shards differ in settings or list an image twice."""
    out_dir = pathlib.Path(out_dir)
    shards = shard_documents(out_dir)
    first_name, first = shards[0]
    same = {k: v for k, v in first.get("options", {}).items() if k not in _PER_SHARD}
    records: dict[str, dict] = {}
    for name, document in shards:
        options = {k: v for k, v in document.get("options", {}).items() if k not in _PER_SHARD}
        if options != same:
            changed = sorted(k for k in set(options) | set(same) if options.get(k) != same.get(k))
            raise InputError(f"{name} was made with other settings than {first_name} ({', '.join(changed)}); "
                              "merge the shards of one run")
        for record in document["images"]:
            key = record_key(record)  # the path, or the path and frame of a multi-frame file's frame
            if key in records:
                frame = f" frame {record['frame']}" if "frame" in record else ""
                raise InputError(f"{record['path']}{frame} is in two shards ({name} too): merge the shards of one run")
            records[key] = record
    ordered = sorted(records.values(), key=lambda r: (r["path"], r.get("frame") or 0))
    counts = Summary()
    for record in ordered:
        counts.add(record, False)
    header = {k: v for k, v in first.items() if k != "images"}
    header["options"] = {**first.get("options", {}), "shard": None}
    header["merged_from"] = [name for name, _ in shards]
    header["summary"] = {"images": counts.records, "done": counts.done, "failed": counts.failed}
    if counts.accuracy() is not None:
        header["summary"]["accuracy"] = counts.accuracy()
    path = out_dir / JSON_NAME
    writers.write_json_document(path, header, ordered)
    return path


def predictions_csv(document: dict) -> str:
    """A predictions document as CSV text: one row per explained class (an image without any, an
    error for one, gets one row of its own); several methods' overlays as ``method=file`` joined
    by ``;``."""
    buffer = io.StringIO()
    table = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    table.writeheader()
    for record in document["images"]:
        image = {k: record.get(k, "") for k in ("path", "status", "width", "height", "message", "frame")}
        for entry in record.get("predictions") or [{}]:
            overlays = entry.get("overlays")
            overlay = ";".join(f"{m}={f}" for m, f in overlays.items()) if overlays else entry.get("overlay", "")
            table.writerow({**image, **{k: entry.get(k, "") for k in ("rank", "class_index", "class_id", "label",
                                                                       "probability", "value", "true_class")},
                            "overlay": overlay})
    return buffer.getvalue()


def export_csv(out_dir, predictions: str = JSON_NAME) -> pathlib.Path:
    """Write ``out_dir/predictions.csv`` (``predictions.K-of-N.csv`` for a shard's file) from a run's
    predictions file; returns its path."""
    document = load_predictions(out_dir, predictions)
    path = (pathlib.Path(out_dir) / predictions).with_suffix(".csv")
    writers.write_bytes(path, predictions_csv(document).encode("utf-8"))
    return path
