"""Progress on stderr: tqdm's bar on a terminal, a plain line every ~10 s in a log file, nothing with -q."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

#: seconds between plain progress lines when stderr is not a terminal
PLAIN_INTERVAL = 10.0
#: images done within this many seconds of the first one came with it (the rest of its batch): start-up, not rate
FIRST_BURST = 0.1


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """Count images as they are done. ``write`` prints a diagnostic line without breaking the bar.

    The rate and the time left are measured from the first image done (with the rest of its
    batch): loading the model, starting Ray and its actors are not images, and would make the
    first lines' rate too low and their time left too long. The first plain line comes
    ``interval`` seconds after the first image.
    """

    def __init__(self, total: int, quiet: bool, stream: TextIO | None = None, interval: float = PLAIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, unit: str = "img", noun: str = "images"):
        self.total, self.quiet, self.stream = total, quiet, stream or sys.stderr
        self.unit, self.noun = unit, noun
        self.interval, self.clock = interval, clock
        self.done = 0
        self.start = self.last = clock()
        self.first: int | None = None  # images done by the time the rate's clock started (None: not yet)
        self.bar = None
        if not quiet and _isatty(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, file=self.stream, dynamic_ncols=True, delay=0.5)

    def update(self, n: int = 1) -> None:
        now = self.clock()
        if self.first is None:
            self.start = self.last = now
        if now - self.start < FIRST_BURST:
            self.first = self.done + n
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif not self.quiet and self.clock() - self.last >= self.interval:
            self.last = self.clock()
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        """``gradcam: 120 of 3000 images (4%), 12.3 img/s, 3m54s left``"""
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = (self.done - (self.first or 0)) / elapsed
        left = f", {_duration((self.total - self.done) / rate)} left" if rate > 0 else ""
        share = 100 * self.done / self.total if self.total else 100
        return f"gradcam: {self.done} of {self.total} {self.noun} ({share:.0f}%), {rate:.1f} {self.unit}/s{left}"

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
