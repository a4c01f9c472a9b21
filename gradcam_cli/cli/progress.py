"""Progress on stderr: tqdm's bar on a terminal, a plain line every ~10 s in a log file, nothing with -q."""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

#: seconds between plain progress lines when stderr is not a terminal
PLAIN_INTERVAL = 10.0
#: items done within this many seconds of the first one came with it (the rest of its batch): start-up, not rate
FIRST_BURST = 0.1


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """Count items as they are done. ``write`` prints a diagnostic line without breaking the bar.

    On a terminal, tqdm's bar; otherwise (a log file) a plain line every ``interval`` seconds,
    also while nothing finishes (a ticker thread; ``ticker=False`` leaves the ticking to
    :meth:`tick`, for tests with their own ``clock``). The rate and the time left count from
    the first items done (with the rest of their batch: :data:`FIRST_BURST`), so the start-up
    (loading the model, the first batch's compile, starting Ray and its actors) does not enter
    them; below one item a second the rate reads as seconds per item."""

    def __init__(self, total: int, quiet: bool, stream: TextIO | None = None, interval: float = PLAIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, unit: str = "img", noun: str = "images",
                 ticker: bool = True):
        self.total, self.quiet, self.stream = total, quiet, stream or sys.stderr
        self.unit, self.noun = unit, noun
        self.interval, self.clock = interval, clock
        self.done = 0
        self.last = clock()
        self.first: tuple[float, int] | None = None  # (when, how many) the first items were done
        self.bar = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if not quiet and _isatty(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, file=self.stream, dynamic_ncols=True, delay=0.5)
        elif not quiet and ticker:
            threading.Thread(target=self._tick_until_closed, name="gradcam-progress", daemon=True).start()

    def update(self, n: int = 1) -> None:
        with self._lock:
            now = self.clock()
            if self.first is None or now - self.first[0] < FIRST_BURST:  # the first lot: the rest of its batch
                self.first = (now if self.first is None else self.first[0], self.done + n)
            self.done += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            self.tick()

    def tick(self) -> None:
        """Print the plain line when ``interval`` has passed since the last one."""
        if self.quiet or self.bar is not None:
            return
        with self._lock:
            if self._closed.is_set() or self.clock() - self.last < self.interval:
                return
            self.last = self.clock()
            try:
                self.stream.write(self._line() + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed under us: progress is not worth an error
                self._closed.set()

    def _tick_until_closed(self) -> None:
        while not self._closed.wait(min(1.0, self.interval / 4)):
            self.tick()

    def line(self) -> str:
        """``gradcam: 120 of 3000 images (4%), 12.3 img/s, 3m54s left``"""
        with self._lock:
            return self._line()

    def _line(self) -> str:
        share = 100 * self.done / self.total if self.total else 100
        line = f"gradcam: {self.done} of {self.total} {self.noun} ({share:.0f}%)"
        if self.first is None or self.done <= self.first[1] or self.clock() <= self.first[0]:
            return line  # no rate before a second lot of items is done
        rate = (self.done - self.first[1]) / (self.clock() - self.first[0])
        speed = f"{rate:.1f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit}"
        return f"{line}, {speed}, {_duration((self.total - self.done) / rate)} left"

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            with self._lock:
                self.stream.write(line + "\n")
                self.stream.flush()

    def close(self) -> None:
        with self._lock:
            self._closed.set()
        if self.bar is not None:
            self.bar.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
