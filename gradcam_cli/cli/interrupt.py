"""Stopping cleanly: SIGINT / SIGTERM and a closed stdout end a run between batches, not mid-file."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from typing import Callable, Iterator, NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal that must stop the process now (before the run started, or a second one)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StopRequest:
    """Asked by the folder runner before each batch (``stop()`` -> True: take no new batch).

    While ``running``, the first SIGINT / SIGTERM only sets ``signum`` so the batches in
    flight are finished and the results written; a second one, or one before the run
    starts, raises :class:`Interrupted`. A closed stdout sets ``pipe_closed``.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.pipe_closed = False
        self.running = False

    def __call__(self) -> bool:
        return self.signum is not None or self.pipe_closed

    def _handle(self, signum: int, frame: object) -> None:
        if not self.running or self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        """Handle SIGINT and SIGTERM in this block (main thread only), then restore the old handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def during_run(self, progress) -> Iterator[None]:
        """While the run goes on (``running``: a first signal only asks it to stop); then the progress bar
        (anything with ``close()``) is closed, however the block ends."""
        self.running = True
        try:
            yield
        finally:
            self.running = False
            progress.close()

    def interrupted_exit(self, summary) -> int | None:
        """After a run a signal stopped between batches: its :func:`interrupted_line` on stderr and
        128 + the signal; None when no signal came."""
        if self.signum is None:
            return None
        import click

        click.echo(interrupted_line(summary.records, summary.total), err=True)
        return 128 + self.signum

    def close_stdout(self) -> None:
        """The consumer of stdout is gone (``| head -1``): stop, and send what is still buffered
        to /dev/null so that Python's exit does not complain about the pipe."""
        self.pipe_closed = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass  # not a real file (tests' captured stdout)


def run_stopping_cleanly(work: Callable[[StopRequest], int], after: str = "rerun with --resume") -> NoReturn:
    """Exit with ``work(stop)``'s code. A command that sets ``stop.running`` while its run goes
    on finishes the batches in flight on the first SIGINT / SIGTERM and says so itself
    (:func:`interrupted_line`); before that, a second signal, or a command that never sets it,
    stops at once with one line (``gradcam: interrupted; AFTER``) and exits 130 / 143. Every
    file is whole or absent (atomic writes), so nothing is torn either way."""
    import click

    stop = StopRequest()
    with stop.installed():
        try:
            code = work(stop)
        except Interrupted as exc:
            click.echo(f"gradcam: interrupted; {after}", err=True)
            code = 128 + exc.signum
    sys.exit(code)


def interrupted_line(done: int, total: int) -> str:
    """What a run stopped between batches says."""
    return f"gradcam: interrupted after {done} of {total} images; rerun with --resume"
