"""The folder runner: inputs -> decode (threads) -> batch step -> records, with nothing lost.

Decoding the next batch and writing the previous ones overlap with the model in
one bounded thread pool. Each image's record is appended to ``predictions.jsonl``
as soon as its files are written; ``predictions.json`` (records in input order,
under the run header) is written at the end.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

from gradcam_cli.engine.cam import batched
from gradcam_cli.run.journal import RunJournal, Summary, run_header  # noqa: F401  (run_header: the old home)
from gradcam_cli.run.resume import Resumed
from gradcam_cli.run.step import BatchStep, Item, decode_item

#: batches whose overlays may still be being written while the model runs (bounds memory)
WRITE_DEPTH = 2


def run_folder(cam: Any, refs: Sequence[Any], settings: Any, options: Any, *,
               truth: dict[str, int] | None = None, on_record: Callable[[dict], None] | None = None) -> Summary:
    """Explain every input of ``refs`` (``InputRef``: ``.path``, ``.out_stem``) into ``options.out_dir``.

    ``settings``: :class:`~gradcam_cli.run.settings.RunSettings`; ``options``:
    :class:`~gradcam_cli.run.settings.RunOptions`; ``truth``: real path -> true class
    index (test-set mode). A bad image becomes an error record; the run goes on. With
    ``options.resume``, images whose outputs are complete are not computed again.
    """
    step = BatchStep(cam, settings, options.out_dir, truth=truth)
    with RunJournal(cam, settings, options, step.outputs, on_record=on_record) as journal, \
            ThreadPoolExecutor(options.workers, thread_name_prefix="gradcam-io") as pool:

        def emit(item: Any) -> None:
            journal.add(item.result() if isinstance(item, Future) else item)  # a write's OutputError stops the run

        def start_decoding(chunk: list) -> list:
            """Per input: a Resumed when complete already, else a decode future."""
            return [journal.lookup(ref.path) or pool.submit(decode_item, ref, cam.profile, settings.max_pixels,
                                                             step.true_class(ref.path)) for ref in chunk]

        decoding: deque = deque()  # batches being decoded (one ahead of the model)
        writing: deque = deque()  # batches whose records or write futures wait to be emitted, in order
        for chunk in batched(refs, options.batch_size):
            decoding.append(start_decoding(chunk))
            if len(decoding) > 1:
                writing.append(compute_batch(step, decoding.popleft(), pool))
            while len(writing) > WRITE_DEPTH:
                for item in writing.popleft():
                    emit(item)
        while decoding:
            writing.append(compute_batch(step, decoding.popleft(), pool))
        while writing:
            for item in writing.popleft():
                emit(item)
        return journal.finish(refs, cam.max_batch)


def compute_batch(step: BatchStep, pending: list, pool: ThreadPoolExecutor) -> list:
    """Wait for a batch's decodes (futures, or records and :class:`Resumed` kept as they are); run the
    step on the good images, its writes submitted to ``pool``; everything in input order."""
    resolved = [item.result() if isinstance(item, Future) else item for item in pending]
    good = [i for i, value in enumerate(resolved) if isinstance(value, Item)]
    for i, written in zip(good, step([resolved[i] for i in good], submit=pool.submit)):
        resolved[i] = written
    return resolved
