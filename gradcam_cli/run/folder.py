"""The folder runner: inputs -> decode (threads) -> batch step -> records, with nothing lost.

Decoding the next batch and writing the previous ones overlap with the model in
one bounded thread pool. Each image's record goes to the run's journal
(:class:`~gradcam_cli.run.journal.ExplainJournal`: ``predictions.jsonl`` as soon as its
files are written, ``predictions.json`` in input order at the end), the same journal
the Ray engine writes, so either can resume the other's run.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Sequence

from gradcam_cli.io.discover import batched
from gradcam_cli.run.journal import ExplainJournal, Summary
from gradcam_cli.run.step import BatchStep, Item, decode_item
from gradcam_cli.settings import RunOptions, RunSettings

if TYPE_CHECKING:
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.io.discover import InputRef

#: batches whose overlays may still be being written while the model runs. With one batch being
#: decoded ahead and one in the model, at most WRITE_DEPTH + 2 batches of decoded images are held
#: at once, whatever the number of threads: that bounds memory (docs/performance.md: Feeding a GPU).
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


def run_folder(cam: GradCAM, refs: Sequence[InputRef], settings: RunSettings, options: RunOptions, *,
               truth: dict[str, int] | None = None, on_record: Callable[[dict], None] | None = None,
               stop: Callable[[], bool] | None = None) -> Summary:
    """Explain every input of ``refs`` (``InputRef``: ``.path``, ``.out_stem``) into ``options.out_dir``.

    ``truth``: real path -> true class index (test-set mode). A bad image becomes an error record; the run goes on. With
    ``options.resume``, images whose outputs are complete are not computed again, and
    ``predictions.json`` keeps every record of the log: these inputs first, in input
    order, then earlier runs' images that are not among them (``Summary.earlier``).

    The folder is locked for the run (``BusyError`` when another run holds it). ``stop``
    is asked before each new batch: when it returns True, no new batch starts, the
    batches in flight are finished and written, ``predictions.json`` lists what is done,
    and ``Summary.interrupted`` is set.
    """
    stop = stop or (lambda: False)
    step = BatchStep(cam, settings, options.out_dir, truth=truth)
    with ExplainJournal(cam, settings, options, step.outputs, on_record=on_record, total=len(refs)) as journal, \
            ThreadPoolExecutor(io_threads(options.workers), thread_name_prefix="gradcam-io") as pool:
        def emit(item: Item | dict | Future) -> None:
            journal.add(item.result() if isinstance(item, Future) else item)  # a write's OutputError stops the run

        def start_decoding(chunk: list) -> list:
            """Per input: a Resumed when complete already, else a decode future."""
            return [journal.lookup(ref.key) or pool.submit(decode_item, ref, cam.profile, settings.max_pixels,
                                                            step.true_class(ref.path), step.decode_floor,
                                                            settings.depth)
                    for ref in chunk]

        run_pipeline(refs, options.batch_size, step, pool, start_decoding, emit, stop)
        return journal.finish(refs, cam.max_batch)


def run_pipeline(refs: Sequence[InputRef], batch_size: int, step: Callable, pool: ThreadPoolExecutor,
                 start_decoding: Callable[[list], list], emit: Callable, stop: Callable[[], bool]) -> None:
    """Decode one batch ahead, compute in order, emit with at most WRITE_DEPTH batches in flight.

    ``start_decoding(refs)``: per input, a kept record or a decode future; ``step(items,
    submit=)``: records (or write futures) of the decoded :class:`Item` s, in order (the
    :class:`BatchStep` of ``explain``, ``evaluate``'s evaluator); ``emit``: each, in input order;
    ``stop()`` -> True: take no new batch."""
    decoding: deque = deque()  # batches being decoded (one ahead of the model)
    writing: deque = deque()  # batches whose records or write futures wait to be emitted, in order
    for chunk in batched(refs, batch_size):
        if stop():
            break
        decoding.append(start_decoding(chunk))
        if len(decoding) > 1:
            writing.append(compute_batch(step, decoding.popleft(), pool))
        while len(writing) > WRITE_DEPTH:
            for item in writing.popleft():
                emit(item)
    while decoding and not stop():
        writing.append(compute_batch(step, decoding.popleft(), pool))
    for pending in decoding:  # stopped: batches not computed yet are dropped
        for item in pending:
            if isinstance(item, Future):
                item.cancel()
    while writing:  # computed batches are finished: their files written, their records logged
        for item in writing.popleft():
            emit(item)


def compute_batch(step: Callable, pending: list, pool: ThreadPoolExecutor) -> list:
    """Wait for a batch's decodes; run the step on the good images; keep everything in input order."""
    resolved = [item.result() if isinstance(item, Future) else item for item in pending]
    good = [i for i, value in enumerate(resolved) if isinstance(value, Item)]
    for i, written in zip(good, step([resolved[i] for i in good], submit=pool.submit)):
        resolved[i] = written
    return resolved
