"""What a run writes besides the per-image files, the same for every engine.

The run file (settings, for ``--resume``), the JSON Lines log (one record per
image, appended as it arrives, in any order) and, at the end, the document
(``predictions.json``, ``evaluation.json``: a header, a summary, and the records in
input order). The folder runner and the Ray engine both go through
:class:`ExplainJournal`, so a run started by one can be resumed by the other;
``evaluate`` goes through the same :class:`RunJournal`.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from gradcam_cli._version import __version__
from gradcam_cli.io import writers
from gradcam_cli.methods import get_method
from gradcam_cli.run.naming import JSON_NAME, JSONL_NAME, RUN_FILE, result_names
from gradcam_cli.run.outputs import Output, outputs_for, record_complete
from gradcam_cli.run.resume import Resumed, ResumeIndex, check_same_settings, record_key
from gradcam_cli.settings import RunOptions, RunSettings

if TYPE_CHECKING:
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.io.discover import InputRef


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
    cleared: int = 0  # without --resume: files of an earlier run in the folder, removed before this one

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


def run_header(cam: GradCAM, settings: RunSettings, options: RunOptions) -> dict:
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


def recorded_settings(cam: GradCAM, settings: RunSettings) -> dict:
    """The settings as the run file records them (the backbone resolved to the profile in use)."""
    recorded = settings.to_json()
    recorded["model.backbone"] = cam.profile.name
    recorded.update(cam.resolved(settings.method_options, settings.methods))  # what the auto options resolved to here
    return recorded


@dataclass(frozen=True)
class JournalFiles:
    """The names of what a run writes beside its per-image files, inside its output folder."""

    document: str  # predictions.json, evaluation.json: a header and every record in input order
    log: str  # its JSON Lines log: one record per image, appended as each is done
    run_file: str  # the recorded settings, compared on --resume


def _no_files(record: dict) -> list[str]:
    return []


class RunJournal:
    """The run file, the JSON Lines log and the final document of one run into ``out_dir``.

    Opening it locks the folder (:class:`~gradcam_cli.io.writers.FolderLock`, per ``part`` of a
    sharded run; ``BusyError`` when another run holds it), refuses ``resume`` with other
    ``recorded`` settings (:class:`~gradcam_cli.errors.ResumeError`), repairs a torn log, removes
    stale temporary files, indexes the previous run's images that ``complete(record, out_dir)``
    accepts, and opens the log. ``files(record)``: the files a record says it wrote (a later
    record naming one of them replaces an earlier image's). ``on_record`` is called with every
    record, kept or new, as it is added. Use as a context manager; :meth:`finish` writes the
    document: these inputs first, in input order, then (resuming) the log's other images in log
    order, except those whose files this run replaced. ``explain`` (either engine) and
    ``evaluate`` share it.
    """

    def __init__(self, out_dir, names: JournalFiles, recorded: dict, *, resume: bool,
                 complete: Callable[[dict, pathlib.Path], bool], files: Callable[[dict], list[str]] = _no_files,
                 part: str | None = None, on_record: Callable[[dict], None] | None = None, total: int = 0,
                 earlier_files: Callable[[dict], Callable[[dict], list[str]]] | None = None):
        self.on_record, self.files, self.recorded = on_record, files, recorded
        self.out_dir = writers.check_writable(out_dir)
        self._lock = writers.FolderLock(self.out_dir, part).__enter__()
        try:
            self.jsonl_path, self.json_path = self.out_dir / names.log, self.out_dir / names.document
            if resume:
                check_same_settings(self.out_dir / names.run_file, recorded)
            cleared = 0 if resume else self._clear_earlier_run(names.run_file, earlier_files)
            self.resume = ResumeIndex(self.out_dir, self.jsonl_path, lambda r: complete(r, self.out_dir), resume)
            writers.write_json(self.out_dir / names.run_file, {"settings": recorded})
            self.summary = Summary(out_dir=str(self.out_dir), total=total, cleared=cleared)
            self.offsets: dict[str, int] = {}  # path -> offset of its record in the log (this run's or kept)
            self.claimed: set[str] = set()  # the files this run's records name
            self._log = writers.JsonLines(self.jsonl_path, append=resume)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def _clear_earlier_run(self, run_file: str, earlier_files: Callable | None) -> int:
        """A run without ``--resume`` into a folder that holds an earlier run's log (of the same
        part): remove the files its records name, so that none is left behind unlisted.
        ``earlier_files(settings)``: the files a record names under the earlier run's recorded
        settings (default: this run's ``files``). Only regular files inside the folder are
        removed; the folder is locked. Returns the count."""
        if not self.jsonl_path.exists():
            return 0
        files = self.files
        if earlier_files is not None:
            try:
                files = earlier_files(json.loads((self.out_dir / run_file).read_text(encoding="utf-8"))["settings"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no readable run file: what this run's outputs would name
        folder = self.out_dir.resolve()
        removed = 0
        for _, record in writers.read_json_lines_with_offsets(self.jsonl_path):
            for name in (files(record) if isinstance(record, dict) else []):
                path = (self.out_dir / name)
                if name and path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(folder):
                    path.unlink()
                    removed += 1
        return removed

    def lookup(self, key: str) -> Resumed | None:
        """The previous run's record of an input (its ``InputRef.key``: the path, or path and frame) when
        it is complete (``--resume``), else None."""
        return self.resume.lookup(key)

    def _files(self, record: dict) -> list[str]:
        return [name for name in self.files(record) if name] if record.get("status") == "ok" else []

    def add(self, item: dict | Resumed) -> bool:
        """Log a new record (or count a kept one). False, and nothing logged, when this run has a
        record of that path already (an engine that re-ran a batch whose worker died)."""
        resumed = isinstance(item, Resumed)
        record = item.record if resumed else item
        key = record_key(record)
        if key in self.offsets:
            return False
        self.offsets[key] = item.offset if resumed else self._log.write(record)
        self.claimed.update(self._files(record))
        self.summary.add(record, resumed)
        if self.on_record is not None:
            self.on_record(record)
        return True

    def _document_offsets(self, refs: Sequence[InputRef]) -> tuple[list[int], list[int]]:
        known = {**self.resume.offsets, **self.offsets}
        ours = [known[ref.key] for ref in refs if ref.key in known]
        inputs = {ref.key for ref in refs}
        others = sorted(offset for key, offset in known.items() if key not in inputs)
        earlier = [offset for offset, record in zip(others, writers.read_records_at(self.jsonl_path, others))
                   if not self.claimed.intersection(self._files(record))]
        self.summary.replaced = len(others) - len(earlier)
        return ours, earlier

    def finish(self, refs: Sequence[InputRef], header: Callable[[Summary, Callable[[], Iterator[dict]]], dict]
               ) -> Summary:
        """:meth:`write_document`, then release the folder."""
        summary = self.write_document(refs, header)
        self.close()
        return summary

    def write_document(self, refs: Sequence[InputRef],
                       header: Callable[[Summary, Callable[[], Iterator[dict]]], dict]) -> Summary:
        """Close the log and write the document (the folder stays locked). ``header(counts,
        records)``: the document's header from the counts of the records it lists and a
        function that reads those records afresh, in document order."""
        self._log.close()
        self.summary.interrupted = self.summary.records < len(refs)
        ours, earlier = self._document_offsets(refs)
        self.summary.earlier = len(earlier)
        order = {ref.path: i for i, ref in enumerate(refs)}
        self.summary.misclassified.sort(key=lambda path: order.get(path, len(order)))
        records = lambda: writers.read_records_at(self.jsonl_path, ours + earlier)  # noqa: E731
        counts = Summary()
        for record in records():
            counts.add(record, False)
        head = header(counts, records)
        if self.summary.interrupted:  # the document lists what is done: say that it is not all
            head["summary"].update(interrupted=True, inputs=len(refs))
        writers.write_json_document(self.json_path, head, records())
        return self.summary

    def close(self) -> None:
        self._log.close()
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def __enter__(self) -> "RunJournal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _files_under(recorded: dict) -> Callable[[dict], list[str]]:
    """The files an explain record names under the settings a run file recorded."""
    outputs = outputs_for(RunSettings.from_json({k: v for k, v in recorded.items() if k in RunSettings().to_json()}))
    return lambda record: [name for output in outputs for name in output.files(record)]


class ExplainJournal(RunJournal):
    """``explain``'s journal (the folder runner and the Ray engine): ``predictions.json(l)`` and
    the run file, named per shard; complete means every output file is there and whole."""

    def __init__(self, cam: GradCAM, settings: RunSettings, options: RunOptions, outputs: Sequence[Output],
                 on_record: Callable[[dict], None] | None = None, total: int = 0):
        names = result_names(options.shard)
        super().__init__(
            options.out_dir, JournalFiles(names[JSON_NAME], names[JSONL_NAME], names[RUN_FILE]),
            recorded_settings(cam, settings), resume=options.resume,
            complete=lambda record, out_dir: record_complete(record, outputs, out_dir),
            files=lambda record: [name for output in outputs for name in output.files(record)],
            part=None if options.shard is None else f"{options.shard[0]}-of-{options.shard[1]}",
            on_record=on_record, total=total, earlier_files=_files_under,
        )
        self.cam, self.settings, self.options = cam, settings, options

    def finish(self, refs: Sequence[InputRef], max_batch: int | None = None) -> Summary:  # type: ignore[override]
        """Write ``predictions.json``. ``max_batch``: the batch size the model was cut to after
        running out of memory, if it was."""

        def header(counts: Summary, records: Callable[[], Iterator[dict]]) -> dict:
            head = run_header(self.cam, self.settings, self.options)
            head["summary"] = {"images": counts.records, "done": counts.done, "failed": counts.failed}
            if counts.accuracy() is not None:
                head["summary"]["accuracy"] = counts.accuracy()
            if max_batch is not None:  # the model ran out of memory and the batch was halved
                head["summary"]["batch_size_after_out_of_memory"] = max_batch
            return head

        return super().finish(refs, header)
