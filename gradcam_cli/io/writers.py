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
from gradcam_cli.io.locks import LOCK_NAME, FolderLock  # noqa: F401  (re-exported: the folder lock lives there)


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


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, header: Any = None) -> None:
    """A float32 NIfTI file (``.nii``, or gzip-compressed for ``.nii.gz``) of ``array`` on the grid ``affine``,
    with ``header``'s fields (a volume's own, so a viewer lays the map over it; its scaling reset)
    or a fresh NIfTI-1 header; atomically, as every write."""
    import gzip

    import nibabel

    data = np.ascontiguousarray(array, dtype=np.float32)
    kind = nibabel.Nifti2Image if isinstance(header, nibabel.Nifti2Header) else nibabel.Nifti1Image
    head = None if header is None else header.copy()
    if head is not None and head.endianness != "<":  # a big-endian header: the map is written little-endian
        head = head.as_byteswapped("<")
    image = kind(data, np.asarray(affine, np.float64), head)
    image.header.set_data_dtype(np.float32)
    image.header.set_slope_inter(1.0, 0.0)
    payload = image.to_bytes()
    write_bytes(path, gzip.compress(payload, compresslevel=6, mtime=0) if str(path).endswith(".gz") else payload)


def check_creatable(directory: str | os.PathLike) -> None:
    """Raise :class:`OutputError` when ``directory`` could not be created or written into,
    creating nothing (the run creates it when it starts)."""
    directory = pathlib.Path(directory)
    probe = directory
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "it is" if probe == directory else f"{probe} is"
        raise OutputError(f"cannot write {directory}: {where} a file, not a folder; "
                          "pass a folder path to --out (it is created if missing)")
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {directory}: permission denied on {probe}; choose another --out directory")


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


def repair_json_lines(path: str | os.PathLike) -> int:
    """Drop every line of a JSON Lines log that is not a whole JSON object (a torn tail, or a line
    torn by a killed or concurrent writer anywhere in the file); returns how many were dropped.

    The log is rewritten atomically only when something is dropped."""
    path = pathlib.Path(path)
    if not path.exists():
        return 0
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _describe(exc, path) from None
    kept, dropped = [], 0
    for line in data.splitlines(keepends=True):
        try:
            whole = line.endswith(b"\n") and isinstance(json.loads(line), dict)
        except (json.JSONDecodeError, UnicodeDecodeError):
            whole = False
        if whole:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_bytes(path, b"".join(kept), sync=True)
    return dropped


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


class VideoFile:
    """A video written frame by frame (OpenCV, FFmpeg's MPEG-4 part 2 ``mp4v``) into a hidden temp file
    in ``directory``; :meth:`finish` renames it into place under a name chosen at the end (an overlay
    video is named after the class it shows most), :meth:`abort` removes it. A killed run leaves only
    the temp file, which the next run in the folder removes (:func:`remove_stale_temps`)."""

    def __init__(self, directory: str | os.PathLike, hint: str, fps: float, size: tuple[int, int],
                 fourcc: str = "mp4v"):
        import cv2

        self.directory = pathlib.Path(directory)
        self.tmp = _temp_name(self.directory / f"{hint}.mp4", ".mp4")
        self.size = (int(size[0]), int(size[1]))  # (width, height)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _describe(exc, self.directory) from None
        self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), self.size)
        if not self._writer.isOpened():
            self.abort()
            raise OutputError(f"cannot write {self.directory / hint}.mp4: OpenCV's FFmpeg has no '{fourcc}' "
                              f"encoder for a {self.size[0]}x{self.size[1]} video here; choose another --out or "
                              "install opencv-python-headless from PyPI")

    def write(self, frame_bgr: np.ndarray) -> None:
        self._writer.write(frame_bgr)

    def finish(self, path: str | os.PathLike) -> None:
        path = pathlib.Path(path)
        self._writer.release()
        try:
            os.replace(self.tmp, path)
        except OSError as exc:
            self.abort()
            raise _describe(exc, path) from None

    def abort(self) -> None:
        self._writer = getattr(self, "_writer", None)
        if self._writer is not None:
            self._writer.release()
        with contextlib.suppress(OSError):
            self.tmp.unlink()
