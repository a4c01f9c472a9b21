"""The folder runner: inputs -> decode (threads) -> batch step -> records, with nothing lost.

Decoding the next batch and writing the previous ones overlap with the model in
one bounded thread pool. Each image's record is appended to ``predictions.jsonl``
as soon as its files are written; ``predictions.json`` (records in input order,
under the run header) is written at the end.
"""

from __future__ import annotations

import pathlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from gradcam_cli import __version__
from gradcam_cli.engine.cam import batched
from gradcam_cli.io import writers
from gradcam_cli.methods import get_method
from gradcam_cli.run.naming import JSON_NAME, JSONL_NAME, RUN_FILE, result_names
from gradcam_cli.run.resume import Resumed, ResumeIndex, check_same_settings
from gradcam_cli.run.step import BatchStep, Item, decode_item

#: batches whose overlays may still be being written while the model runs (bounds memory)
WRITE_DEPTH = 2


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    resumed: int = 0
    records: int = 0
    out_dir: str = ""
    labelled: int = 0
    top1: int = 0
    top5: int = 0
    misclassified: list[str] = field(default_factory=list)

    def add(self, record: dict, resumed: bool) -> None:
        self.records += 1
        self.resumed += resumed
        if "true_label" in record:
            rank = record["true_label"]["rank"]
            self.labelled += 1
            self.top1 += rank == 1
            self.top5 += rank <= 5
            if rank != 1:
                self.misclassified.append(record["path"])
        if record["status"] == "ok":
            self.done += 1
        else:
            self.failed += 1

    def accuracy(self) -> dict | None:
        if not self.labelled:
            return None
        return {
            "labelled": self.labelled,
            "top1": self.top1 / self.labelled,
            "top5": self.top5 / self.labelled,
            "misclassified": self.misclassified,
        }


def run_header(cam: Any, settings: Any, options: Any) -> dict:
    """The header of ``predictions.json``: tool, the model's description, method, settings."""
    described = cam.describe()
    header = {"tool": "gradcam-cli", "version": __version__}
    for key, value in described.items():
        if key == "precision":
            header["method"] = settings.methods[0] if len(settings.methods) == 1 else list(settings.methods)
        if key != "output":
            header[key] = value
    agnostic = [m for m in settings.methods if get_method(m).class_agnostic]
    if agnostic:  # their maps are the same for every class of an image
        header["class_agnostic"] = agnostic
    header["options"] = {**recorded_settings(cam, settings), "batch_size": options.batch_size,
                         "shard": None if options.shard is None else f"{options.shard[0]}/{options.shard[1]}"}
    if "output" in described:
        header["output"] = described["output"]
    return header


def recorded_settings(cam: Any, settings: Any) -> dict:
    """The settings as the run file records them (the backbone resolved to the profile in use)."""
    recorded = settings.to_json()
    recorded["model.backbone"] = cam.profile.name
    return recorded


def run_folder(cam: Any, refs: Sequence[Any], settings: Any, options: Any, *,
               truth: dict[str, int] | None = None, on_record: Callable[[dict], None] | None = None) -> Summary:
    """Explain every input of ``refs`` (``InputRef``: ``.path``, ``.out_stem``) into ``options.out_dir``.

    ``settings``: :class:`~gradcam_cli.run.settings.RunSettings`; ``options``:
    :class:`~gradcam_cli.run.settings.RunOptions`; ``truth``: real path -> true class
    index (test-set mode). A bad image becomes an error record; the run goes on. With
    ``options.resume``, images whose outputs are complete are not computed again.
    """
    out_dir = writers.check_writable(options.out_dir)
    names = result_names(options.shard)
    jsonl_path = out_dir / names[JSONL_NAME]
    step = BatchStep(cam, settings, out_dir, truth=truth)
    recorded = recorded_settings(cam, settings)
    if options.resume:
        check_same_settings(out_dir / names[RUN_FILE], recorded)
    resume = ResumeIndex(out_dir, jsonl_path, step.outputs, options.resume)
    writers.write_json(out_dir / names[RUN_FILE], {"settings": recorded})
    summary = Summary(out_dir=str(out_dir))
    offsets: dict[str, int] = {}

    with writers.JsonLines(jsonl_path, append=options.resume) as log, \
            ThreadPoolExecutor(options.workers, thread_name_prefix="gradcam-io") as pool:
        def emit(item: Any) -> None:
            if isinstance(item, Resumed):
                record, offset = item.record, item.offset
            else:
                record = item.result() if isinstance(item, Future) else item  # a write's OutputError stops the run
                offset = log.write(record)
            offsets[record["path"]] = offset
            summary.add(record, isinstance(item, Resumed))
            if on_record is not None:
                on_record(record)

        def start_decoding(chunk: list) -> list:
            """Per input: a Resumed when complete already, else a decode future."""
            return [resume.lookup(ref.path) or pool.submit(decode_item, ref, cam.profile, settings.max_pixels,
                                                            step.true_class(ref.path)) for ref in chunk]

        decoding: deque = deque()  # batches being decoded (one ahead of the model)
        writing: deque = deque()  # batches whose records or write futures wait to be emitted, in order
        for chunk in batched(refs, options.batch_size):
            decoding.append(start_decoding(chunk))
            if len(decoding) > 1:
                writing.append(_compute(step, decoding.popleft(), pool))
            while len(writing) > WRITE_DEPTH:
                for item in writing.popleft():
                    emit(item)
        while decoding:
            writing.append(_compute(step, decoding.popleft(), pool))
        while writing:
            for item in writing.popleft():
                emit(item)

    _write_document(cam, settings, options, out_dir / names[JSON_NAME], jsonl_path, summary,
                    [offsets[ref.path] for ref in refs if ref.path in offsets])
    return summary


def _compute(step: BatchStep, pending: list, pool: ThreadPoolExecutor) -> list:
    """Wait for a batch's decodes; run the step on the good images; keep everything in input order."""
    resolved = [item.result() if isinstance(item, Future) else item for item in pending]
    good = [i for i, value in enumerate(resolved) if isinstance(value, Item)]
    for i, written in zip(good, step([resolved[i] for i in good], submit=pool.submit)):
        resolved[i] = written
    return resolved


def _write_document(cam: Any, settings: Any, options: Any, path: pathlib.Path, jsonl_path: pathlib.Path,
                    summary: Summary, ordered: list[int]) -> None:
    header = run_header(cam, settings, options)
    header["summary"] = {"images": summary.records, "done": summary.done, "failed": summary.failed}
    if summary.accuracy() is not None:
        header["summary"]["accuracy"] = summary.accuracy()
    if cam.max_batch is not None:  # the model ran out of memory and the batch was halved
        header["summary"]["batch_size_after_out_of_memory"] = cam.max_batch
    writers.write_json_document(path, header, writers.read_records_at(jsonl_path, ordered))
