"""One run's claim on an output folder (:class:`FolderLock`): its lock files are the only files it
writes, and they hold no output (``gradcam_cli.io.writers`` re-exports it, where it was first)."""

from __future__ import annotations

import os
import pathlib

from gradcam_cli.errors import BusyError


def _describe(exc: OSError, path: pathlib.Path):
    from gradcam_cli.io.writers import _describe as describe

    return describe(exc, path)


LOCK_NAME = ".gradcam.lock"


class FolderLock:
    """One run's claim on an output folder: an OS file lock (``flock``), so it dies with the
    process (a SIGKILL never leaves a stale lock). The lock file holds the holder's pid.

    ``part`` None: the whole folder (an exclusive lock on ``.gradcam.lock``). ``part`` a tag
    (``"2-of-4"`` for a shard): a shared lock on ``.gradcam.lock`` plus an exclusive one on
    ``.gradcam.2-of-4.lock``, so shards with distinct names share a folder but never a
    whole-folder run, and one shard never runs twice at once. A refused lock raises
    :class:`BusyError` naming the other run's pid. Where ``fcntl`` is missing (Windows) it
    locks nothing.
    """

    def __init__(self, directory: str | os.PathLike, part: str | None = None):
        self.directory, self.part = pathlib.Path(directory), part
        self._handles: list = []

    def __enter__(self) -> "FolderLock":
        self._acquire(create=True)
        return self

    def check_free(self) -> None:
        """Raise :class:`BusyError` now if another run holds what this lock would take; creates
        nothing and keeps nothing (the run still takes the lock when it starts)."""
        try:
            self._acquire(create=False)
        finally:
            self.release()

    def _acquire(self, create: bool) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        main = self.directory / LOCK_NAME
        try:
            if self.part is None:
                self._take(main, fcntl.LOCK_EX, create, write_pid=True)
            else:
                self._take(main, fcntl.LOCK_SH, create, write_pid=False)
                self._take(self.directory / f".gradcam.{self.part}.lock", fcntl.LOCK_EX, create, write_pid=True)
        except BaseException:
            self.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        for handle in reversed(self._handles):
            handle.close()  # closing drops the flock
        self._handles.clear()

    def _take(self, path: pathlib.Path, mode: int, create: bool, write_pid: bool) -> None:
        import fcntl

        if not create and not path.is_file():
            return  # no run ever locked it
        try:
            handle = open(path, "a+b" if create else "rb")
        except OSError as exc:
            raise _describe(exc, path) from None
        try:
            fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            pid = _lock_holder(self.directory, path)
            raise BusyError(
                f"{self.directory} is in use by another gradcam run (pid {pid if pid else 'unknown'}); "
                "wait for it to end, or choose another --out folder", pid) from None
        self._handles.append(handle)
        if write_pid and create:
            os.ftruncate(handle.fileno(), 0)
            os.pwrite(handle.fileno(), f"{os.getpid()}\n".encode(), 0)


def _read_pid(path: pathlib.Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _held(path: pathlib.Path) -> bool:
    import fcntl

    try:
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            return False  # closing releases the probe
    except OSError:
        return False


def _lock_holder(directory: pathlib.Path, refused: pathlib.Path) -> int | None:
    """The pid of the run holding ``refused``: a part's holder when parts hold the main lock."""
    if refused.name == LOCK_NAME:
        for part in sorted(directory.glob(".gradcam.*.lock")):
            if _held(part):
                return _read_pid(part)
    return _read_pid(refused)
