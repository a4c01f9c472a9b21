"""The folder runner: inputs -> decode (threads) -> batch step -> records, with nothing lost.

Decoding the next batch and writing the previous ones overlap with the model in
one bounded thread pool. Each image's record is appended to ``predictions.jsonl``
as soon as its files are written; ``predictions.json`` (records in input order,
under the run header) is written at the end.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from gradcam_cli import __version__
from gradcam_cli.engine.cam import batched
from gradcam_cli.io import writers
from gradcam_cli.run.naming import JSON_NAME, JSONL_NAME, RUN_FILE, result_names
from gradcam_cli.run.resume import Resumed, ResumeIndex, check_same_settings
from gradcam_cli.run.step import BatchStep, Item, decode_item

#: batches whose overlays may still be being written while the model runs. With one batch being
#: decoded ahead and one in the model, at most WRITE_DEPTH + 2 batches of decoded images are held
#: at once, whatever the number of threads: that bounds memory (README: Feeding a GPU).
WRITE_DEPTH = 2


def io_threads(requested: int | None = None) -> int:
    """Decode / write threads: ``requested``, else one per CPU this process may use (at least 2)."""
    if requested:
        return int(requested)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 2
    return max(2, cpus)


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
    total: int = 0  # inputs of this run
    interrupted: bool = False  # stopped before every input had a record
    earlier: int = 0  # --resume: records of earlier runs' images that are not among these inputs
    replaced: int = 0  # --resume: earlier images left out because this run wrote files of the same names

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
               truth: dict[str, int] | None = None, on_record: Callable[[dict], None] | None = None,
               stop: Callable[[], bool] | None = None) -> Summary:
    """Explain every input of ``refs`` (``InputRef``: ``.path``, ``.out_stem``) into ``options.out_dir``.

    ``settings``: :class:`~gradcam_cli.run.settings.RunSettings`; ``options``:
    :class:`~gradcam_cli.run.settings.RunOptions`; ``truth``: real path -> true class
    index (test-set mode). A bad image becomes an error record; the run goes on. With
    ``options.resume``, images whose outputs are complete are not computed again, and
    ``predictions.json`` keeps every record of the log: these inputs first, in input
    order, then earlier runs' images that are not among them (``Summary.earlier``).

    The folder is locked for the run (:class:`~gradcam_cli.io.writers.FolderLock`;
    ``BusyError`` when another run holds it). ``stop`` is asked before each new batch:
    when it returns True, no new batch starts, the batches in flight are finished and
    written, ``predictions.json`` lists what is done, and ``Summary.interrupted`` is set.
    """
    out_dir = writers.check_writable(options.out_dir)
    part = None if options.shard is None else f"{options.shard[0]}-of-{options.shard[1]}"
    with writers.FolderLock(out_dir, part):
        return _FolderRun(cam, refs, settings, options, out_dir, truth, on_record, stop).run()


class _FolderRun:
    """One locked run: the log, the resume index, the pipeline, the document."""

    def __init__(self, cam, refs, settings, options, out_dir, truth, on_record, stop):
        self.cam, self.refs, self.settings, self.options, self.out_dir = cam, refs, settings, options, out_dir
        self.on_record, self.stop = on_record, stop or (lambda: False)
        self.names = result_names(options.shard)
        self.jsonl_path = out_dir / self.names[JSONL_NAME]
        self.step = BatchStep(cam, settings, out_dir, truth=truth)
        recorded = recorded_settings(cam, settings)
        if options.resume:
            check_same_settings(out_dir / self.names[RUN_FILE], recorded)
        self.resume = ResumeIndex(out_dir, self.jsonl_path, self.step.outputs, options.resume)
        writers.write_json(out_dir / self.names[RUN_FILE], {"settings": recorded})
        self.summary = Summary(out_dir=str(out_dir), total=len(refs))
        self.offsets: dict[str, int] = {}
        self.claimed: set[str] = set()  # the files this run's records name

    def _files(self, record: dict) -> list[str]:
        return [name for output in self.step.outputs for name in output.files(record) if name] \
            if record.get("status") == "ok" else []

    def run(self) -> Summary:
        with writers.JsonLines(self.jsonl_path, append=self.options.resume) as self.log, \
                ThreadPoolExecutor(io_threads(self.options.workers), thread_name_prefix="gradcam-io") as self.pool:
            self._pipeline()
        self._write_document()
        return self.summary

    def _emit(self, item: Any) -> None:
        if isinstance(item, Resumed):
            record, offset = item.record, item.offset
        else:
            record = item.result() if isinstance(item, Future) else item  # a write's OutputError stops the run
            offset = self.log.write(record)
        self.offsets[record["path"]] = offset
        self.claimed.update(self._files(record))
        self.summary.add(record, isinstance(item, Resumed))
        if self.on_record is not None:
            self.on_record(record)

    def _start_decoding(self, chunk: list) -> list:
        """Per input: a Resumed when complete already, else a decode future."""
        cam, settings, step = self.cam, self.settings, self.step
        return [self.resume.lookup(ref.path) or self.pool.submit(decode_item, ref, cam.profile, settings.max_pixels,
                                                                  step.true_class(ref.path), step.decode_floor)
                for ref in chunk]

    def _pipeline(self) -> None:
        """Decode one batch ahead, compute in order, emit with at most WRITE_DEPTH batches in flight."""
        decoding: deque = deque()  # batches being decoded (one ahead of the model)
        writing: deque = deque()  # batches whose records or write futures wait to be emitted, in order
        for chunk in batched(self.refs, self.options.batch_size):
            if self.stop():
                break
            decoding.append(self._start_decoding(chunk))
            if len(decoding) > 1:
                writing.append(_compute(self.step, decoding.popleft(), self.pool))
            while len(writing) > WRITE_DEPTH:
                for item in writing.popleft():
                    self._emit(item)
        while decoding and not self.stop():
            writing.append(_compute(self.step, decoding.popleft(), self.pool))
        for pending in decoding:  # stopped: batches not computed yet are dropped
            for item in pending:
                if isinstance(item, Future):
                    item.cancel()
        while writing:  # computed batches are finished: their files written, their records logged
            for item in writing.popleft():
                self._emit(item)
        self.summary.interrupted = self.summary.records < len(self.refs)

    def _document_offsets(self) -> tuple[list[int], list[int]]:
        """The log offsets predictions.json lists: these inputs in input order, then (resuming) the
        log's other images in log order, except those whose output files this run replaced."""
        known = {**self.resume.offsets, **self.offsets}
        ours = [known[ref.path] for ref in self.refs if ref.path in known]
        inputs = {ref.path for ref in self.refs}
        others = sorted(offset for path, offset in known.items() if path not in inputs)
        earlier = [offset for offset, record in zip(others, writers.read_records_at(self.jsonl_path, others))
                   if not self.claimed.intersection(self._files(record))]
        self.summary.replaced = len(others) - len(earlier)
        return ours, earlier

    def _write_document(self) -> None:
        ours, earlier = self._document_offsets()
        self.summary.earlier = len(earlier)
        document = Summary()
        for record in writers.read_records_at(self.jsonl_path, ours + earlier):
            document.add(record, False)
        header = run_header(self.cam, self.settings, self.options)
        header["summary"] = {"images": document.records, "done": document.done, "failed": document.failed}
        if document.accuracy() is not None:
            header["summary"]["accuracy"] = document.accuracy()
        if self.cam.max_batch is not None:  # the model ran out of memory and the batch was halved
            header["summary"]["batch_size_after_out_of_memory"] = self.cam.max_batch
        writers.write_json_document(self.out_dir / self.names[JSON_NAME], header,
                                    writers.read_records_at(self.jsonl_path, ours + earlier))


def _compute(step: BatchStep, pending: list, pool: ThreadPoolExecutor) -> list:
    """Wait for a batch's decodes; run the step on the good images; keep everything in input order."""
    resolved = [item.result() if isinstance(item, Future) else item for item in pending]
    good = [i for i, value in enumerate(resolved) if isinstance(value, Item)]
    for i, written in zip(good, step([resolved[i] for i in good], submit=pool.submit)):
        resolved[i] = written
    return resolved
