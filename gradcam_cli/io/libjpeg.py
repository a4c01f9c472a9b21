"""libjpeg's warnings ("Corrupt JPEG data: ..."), which it prints on stderr from C, kept per image.

OpenCV's JPEG decoder leaves libjpeg's message output as it is: a warning is one line written
to file descriptor 2, without the file's name, while the image decodes "fine". While any decode
runs, :func:`noting` diverts fd 2 into an unnamed temporary file; whatever else was written
there meanwhile (progress lines, other libraries) is copied back to the real stderr as each
decode ends, libjpeg's lines left out. A decode that ran alone owns the libjpeg lines of its
window. When decodes overlapped and such a line showed up, each of them is decoded again on
its own, with no other decode running, to learn whose it was: that costs only for damaged
files, and the I/O threads otherwise decode in parallel. fd 2 is restored before the last copy,
so a write that starts after it reaches the real stderr; one whose system call began just before
the restore and ends after the copy (a window of microseconds) can be lost; the only other writer
in a run is the progress line, once every 10 s.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from typing import Callable, TypeVar

__all__ = ["noting"]

T = TypeVar("T")

#: libjpeg's warnings (jerror.h's JWRN_* texts), each printed as one line
_WARNING = re.compile(rb"(Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters|Inconsistent progression"
                      rb"|Unknown Adobe color transform|Warning: unknown JFIF|Application transferred too many)[^\n]*\n?")


class _Diverted:
    """fd 2 diverted while ``active`` decodes run; ``exclusive``: one decode runs alone."""

    def __init__(self):
        self.cond = threading.Condition()
        self.active = self.starts = self.copied = 0
        self.exclusive = False
        self.file = None
        self.saved = -1

    def enter(self) -> tuple[int, int, int]:
        """(offset, starts, active) at the start of a decode's window; call under ``cond``."""
        if self.active == 0:
            self.file, self.copied = tempfile.TemporaryFile(), 0
            self.saved = os.dup(2)
            os.dup2(self.file.fileno(), 2)
        self.active += 1
        self.starts += 1
        return os.fstat(self.file.fileno()).st_size, self.starts, self.active

    def leave(self, start: tuple[int, int, int]) -> tuple[list[str], bool]:
        """libjpeg's lines in the window since ``start`` and whether the decode ran alone; call under ``cond``."""
        offset, starts, active = start
        fd = self.file.fileno()
        window = os.pread(fd, os.fstat(fd).st_size - offset, offset)
        alone = active == 1 and starts == self.starts
        self.active -= 1
        last = self.active == 0
        if last:  # fd 2 back first: then nothing more lands in the file, and copying all of it loses nothing
            os.dup2(self.saved, 2)
        self._copy_back(fd, last=last)
        if last:
            os.close(self.saved)
            self.file.close()
            self.file = None
        said = [m.group(0).decode("utf-8", "replace").strip() for m in _WARNING.finditer(window)]
        return said, alone

    def _copy_back(self, fd: int, last: bool) -> None:
        """What else was written to fd 2 (whole lines; everything at the ``last`` decode's end) to the real stderr."""
        data = os.pread(fd, os.fstat(fd).st_size - self.copied, self.copied)
        if not last:
            data = data[:data.rfind(b"\n") + 1]
        self.copied += len(data)
        data = _WARNING.sub(b"", data)
        while data:
            try:
                data = data[os.write(self.saved, data):]
            except OSError:  # stderr closed: nothing to keep
                return


_DIVERTED = _Diverted()


def _run(fn: Callable[[], T], alone: bool) -> tuple[T, list[str], bool]:
    state = _DIVERTED
    with state.cond:
        if alone:
            while state.exclusive:
                state.cond.wait()
            state.exclusive = True
        while state.active if alone else state.exclusive:
            state.cond.wait()
        start = state.enter()
    try:
        result = fn()
    finally:
        with state.cond:
            said, ran_alone = state.leave(start)
            if alone:
                state.exclusive = False
            state.cond.notify_all()
    return result, said, ran_alone


def noting(decode: Callable[[], T], notes: list | None) -> T:
    """``decode()`` (a libjpeg decode) with libjpeg's warnings kept off stderr and appended to ``notes``
    (None: dropped)."""
    result, said, alone = _run(decode, alone=False)
    if said and not alone:  # overlapping decodes: whose line was it? decode again on its own
        result, said, _ = _run(decode, alone=True)
    if notes is not None:
        notes.extend(said)
    return result
