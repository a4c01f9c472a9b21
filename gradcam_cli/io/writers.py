"""The only module that writes files. Every file appears whole or not at all.

Each file is written to a temporary name in its own directory, then renamed
into place (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pathlib
import re
import socket
from typing import IO, Any, Iterable, Iterator

import numpy as np

from gradcam_cli.errors import OutputError


def _describe(exc: OSError, path: pathlib.Path) -> OutputError:
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EDQUOT: "the disk quota is exceeded",
    }.get(exc.errno, exc.strerror or str(exc))
    return OutputError(f"cannot write {path}: {reason}; choose another --out directory or free space")


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TEMP = re.compile(r"^\..+\.tmp-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)(\.[A-Za-z0-9.]+)?$")


def _temp_name(path: pathlib.Path, suffix: str = "") -> pathlib.Path:
    """``dir/.name.tmp-HOST-PID[suffix]``: hidden, in the same directory (same file system), owner
    traceable; ``suffix`` for writers that insist on a file ending (Keras: ``.weights.h5``)."""
    return path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}{suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Delete temp files left by killed runs of this host (their process is gone). Returns the count."""
    removed = 0
    for root, _, files in os.walk(directory):
        for name in files:
            match = _TEMP.match(name)
            if match and match["host"] == _HOST and not _pid_alive(int(match["pid"])):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except OSError:
                    pass
    return removed


@contextlib.contextmanager
def _atomic(path: str | os.PathLike, mode: str = "wb", *, sync: bool = False) -> Iterator[IO]:
    """Open a temp file beside ``path``; on success rename it into place, on any error remove it."""
    path = pathlib.Path(path)
    tmp = _temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _describe(exc, path) from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[pathlib.Path]:
    """A temp path beside ``path`` for a writer that takes a file name (Keras' ``save_weights``);
    renamed into place when the block succeeds, removed when it fails."""
    path = pathlib.Path(path)
    tmp = _temp_name(path, suffix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise _describe(exc, path) from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, then rename)."""
    with _atomic(path, "wb", sync=sync) as handle:
        handle.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), sync=True)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
    write_bytes(path, buffer.getvalue())


def check_writable(directory: str | os.PathLike) -> pathlib.Path:
    """Create ``directory`` if needed and prove a file can be written there."""
    directory = pathlib.Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".gradcam-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _describe(exc, directory) from None
    return directory


class JsonLines:
    """An append-only JSON Lines log, flushed after every record.

    A killed run keeps every record written before the kill; a torn last line
    (killed mid-write) is cut off when the log is reopened for appending, and
    skipped by :func:`read_json_lines_with_offsets`.
    """

    def __init__(self, path: str | os.PathLike, *, append: bool = False):
        self.path = pathlib.Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if append and self.path.exists():
                _truncate_torn_tail(self.path)
            self._handle = open(self.path, "ab" if append else "wb")
        except OSError as exc:
            raise _describe(exc, self.path) from None

    def write(self, record: dict) -> int:
        """Append ``record`` and flush; returns its byte offset in the file."""
        try:
            offset = self._handle.tell()
            self._handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            self._handle.flush()
        except OSError as exc:
            raise _describe(exc, self.path) from None
        return offset

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "JsonLines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_torn_tail(path: pathlib.Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def read_json_lines_with_offsets(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(byte offset, record) for each whole line of a JSON Lines file; a torn tail is skipped."""
    offset = 0
    with open(path, "rb") as handle:
        for line in handle:
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                return
            try:
                yield start, json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue


def read_record_at(path: str | os.PathLike, offset: int) -> dict:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return json.loads(handle.readline())


def read_records_at(path: str | os.PathLike, offsets: Iterable[int]) -> Iterator[dict]:
    """The records starting at ``offsets``, in that order (one open file, nothing held)."""
    with open(path, "rb") as handle:
        for offset in offsets:
            handle.seek(offset)
            yield json.loads(handle.readline())


def write_json_document(path: str | os.PathLike, header: dict, records: Iterable[dict], key: str = "images") -> None:
    """Write ``{**header, key: [records...]}`` atomically, streaming the records."""
    with _atomic(path, "w", sync=True) as handle:
        head = json.dumps(header, indent=2, ensure_ascii=False)
        handle.write(head[:-1].rstrip() + (",\n" if header else "\n") + f'  "{key}": [')
        for i, record in enumerate(records):
            handle.write(("," if i else "") + "\n    " + json.dumps(record, ensure_ascii=False))
        handle.write("\n  ]\n}\n")
