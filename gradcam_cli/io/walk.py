"""Walk the inputs' file tree for :func:`gradcam_cli.io.discover.iter_inputs`.

The listing state of one call (:class:`Listing`: seen files, taken output stems,
walked folders), the directory walk, the loop-safe glob expansion and the paths
read from stdin. Nothing here reads image data; the rules are in
:mod:`gradcam_cli.io.discover`.
"""

from __future__ import annotations

import fnmatch
import glob as _glob
import os
import re
import stat
import sys
import unicodedata
from typing import IO, Callable, Iterable, Iterator, Sequence

from gradcam_cli.io.access import taken
from gradcam_cli.io.marks import holds_run

# --------------------------------------------------------------------------- #
# listing


def normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    out = set()
    for ext in extensions:
        ext = ext.strip().lower()
        if not ext:
            continue
        if not ext.startswith("."):
            ext = "." + ext
        out.add(ext)
    return frozenset(out)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _split_name(name: str) -> tuple[str, str]:
    """``"a.b.png"`` -> ``("a.b", ".png")``; ``".x"`` -> ``(".x", "")``."""
    return os.path.splitext(name)


def _safe_component(part: str) -> str:
    # Never emit empty, "." or ".." components (nor absolute stems).
    if part in ("", ".", ".."):
        return "_" + part.replace(".", "_") if part else "_"
    return part


def _stem_key(stem: str) -> str:
    # Stems are compared case-insensitively and after Unicode normalisation so
    # that the outputs do not collide on case-insensitive / normalising file
    # systems (macOS, Windows) either.
    return unicodedata.normalize("NFC", stem).casefold()


def _folder_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class Listing:
    """State of one ``iter_inputs`` call: seen files, taken stems, walked dirs.

    ``skip``: folders never walked into (the run's ``--out``; one that does not exist yet holds
    nothing to skip). ``left_out`` collects (folder, reason) for every folder not walked into
    because it is one of them or holds a gradcam run (:func:`holds_run`).
    """

    def __init__(self, recursive: bool, extensions: frozenset[str], skip: Sequence[str] = ()):
        self.recursive = recursive
        self.extensions = extensions
        self.seen_files: set = set()
        self.taken_stems: set[str] = set()
        self.walked_dirs: set[tuple[int, int]] = set()
        self.bases: list[str] = []  # absolute folders the inputs came from (a folder argument, a file's folder)
        self.skip = {key for key in map(_folder_key, skip) if key is not None}
        self.left_out: list[tuple[str, str]] = []

    def leaves_out(self, path: str, key: tuple[int, int] | None, names: Iterable[str] | None = None) -> bool:
        """Whether folder ``path`` (``key``: its (st_dev, st_ino); ``names``: its listing, read when
        None) is not to be walked into; noted in ``left_out`` when so."""
        if key is not None and key in self.skip:
            self.left_out.append((path, "is this run's output folder (--out)"))
            return True
        if names is None:
            try:
                names = os.listdir(path)
            except OSError:
                return False
        if holds_run(names):
            self.left_out.append((path, "holds a gradcam run's output"))
            return True
        return False

    # -- identity ----------------------------------------------------------- #

    def _file_key(self, path: str, st: os.stat_result | None):
        if st is not None:
            return ("ino", st.st_dev, st.st_ino)
        return ("path", os.path.realpath(path))

    def first_time(self, path: str, st: os.stat_result | None) -> bool:
        key = self._file_key(path, st)
        if key in self.seen_files:
            return False
        self.seen_files.add(key)
        return True

    # -- stems -------------------------------------------------------------- #

    def claim_stem(self, parent_parts: Sequence[str], name: str) -> str:
        """Unique stem for file ``name`` in relative folder ``parent_parts``.

        1. ``parent/stem``; 2. ``parent/stem_ext`` (the extension with its dot
        replaced by ``_``); 3. ``parent/stem_ext~2``, ``~3``, ...
        """
        prefix = "/".join(_safe_component(p) for p in parent_parts)
        prefix = prefix + "/" if prefix else ""
        base, ext = _split_name(name)
        candidates = [_safe_component(base)]
        if ext:
            candidates.append(_safe_component(base + "_" + ext[1:]))
        for cand in candidates:
            stem = prefix + cand
            if _stem_key(stem) not in self.taken_stems:
                self.taken_stems.add(_stem_key(stem))
                return stem
        last = prefix + candidates[-1]
        i = 2
        while True:
            stem = f"{last}~{i}"
            if _stem_key(stem) not in self.taken_stems:
                self.taken_stems.add(_stem_key(stem))
                return stem
            i += 1

    # -- producers ---------------------------------------------------------- #

    def explicit(self, path: str) -> Iterator[tuple[str, str]]:
        """A path named by the user (argument or stdin line)."""
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            yield from self.walk(path, st)
            return
        if not self.first_time(path, st):
            return
        name = os.path.basename(os.path.normpath(path)) or path
        self.bases.append(_folder_of(path))
        yield path, name

    def walk(self, root: str, root_st: os.stat_result) -> Iterator[tuple[str, str]]:
        """Walk directory argument ``root``: (path, file name) of each image."""
        # Iterative depth-first walk. Each stack entry is (path, rel_parts, st).
        self.bases.append(os.path.abspath(root))
        stack: list[tuple[str, tuple[str, ...], os.stat_result]] = [(root, (), root_st)]
        while stack:
            dpath, rel, dst = stack.pop()
            dkey = (dst.st_dev, dst.st_ino)
            if dkey in self.walked_dirs:  # symlink loop or overlapping argument
                continue
            self.walked_dirs.add(dkey)
            try:
                with os.scandir(dpath) as it:
                    entries = sorted(it, key=lambda e: e.name)
                if self.leaves_out(dpath, dkey, [e.name for e in entries]):
                    continue
            except OSError:
                # Cannot list it (permission denied, vanished...). Rather than
                # dropping it silently, hand the directory itself on: decoding
                # reports it as ``unreadable`` in the error records.
                if not self.first_time(dpath, dst):
                    continue
                yield dpath, (rel[-1] if rel else os.path.basename(os.path.normpath(dpath)))
                continue
            subdirs = []
            for entry in entries:
                if not _is_hidden(entry.name):
                    yield from self._entry(entry, subdirs)
            # push in reverse so the smallest name is processed first
            for entry in reversed(subdirs):
                try:
                    st = entry.stat()
                except OSError:  # a folder that may not be entered: decoding names the cause
                    if self.first_time(entry.path, None):
                        yield entry.path, entry.name
                    continue
                stack.append((entry.path, rel + (entry.name,), st))

    def _entry(self, entry: os.DirEntry, subdirs: list) -> Iterator[tuple[str, str]]:
        """One listed entry: an image file yielded, a folder noted in ``subdirs``. What cannot be read
        (a broken link, a symlink loop, a folder that may not be entered) is yielded when its name
        could be an input (an image extension, or none: a folder), for decoding to name the cause."""
        try:
            is_dir = entry.is_dir()  # follows symlinks
            is_file = not is_dir and entry.is_file()
            broken = not is_dir and not is_file and entry.is_symlink()
        except OSError:  # permission denied on this folder, a symlink loop...
            is_dir = is_file = False
            broken = True
        ext = _split_name(entry.name)[1].lower()
        if is_dir:
            if self.recursive:
                subdirs.append(entry)
            return
        if broken and (ext in self.extensions or not ext) and self.first_time(entry.path, None):
            yield entry.path, entry.name
        if not is_file or not taken(entry.path, ext, self.extensions):  # a fifo, socket, device... is not an input
            return
        try:
            st = entry.stat()  # follows symlinks
        except OSError:
            st = None  # decoding names the cause
        if self.first_time(entry.path, st):
            yield entry.path, entry.name

    def glob(self, pattern: str) -> Iterator[tuple[str, str]]:
        """Expand a glob pattern; see :func:`~gradcam_cli.io.discover.iter_inputs`."""
        for match in _expand_glob(pattern, lambda path: self.leaves_out(path, _folder_key(path))):
            try:
                st = os.stat(match)
            except OSError:  # a broken link, a loop, no search permission: decoding names the cause
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                yield from self.walk(match, st)
                continue
            if st is not None and not stat.S_ISREG(st.st_mode):
                continue
            name = os.path.basename(match)
            if not taken(match, _split_name(name)[1].lower(), self.extensions):
                continue
            if not self.first_time(match, st):
                continue
            self.bases.append(_folder_of(match))
            yield match, name


def _folder_of(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def common_folder(bases: Sequence[str]) -> str | None:
    try:
        return os.path.commonpath(bases) if bases else None
    except ValueError:  # different drives (Windows)
        return None


def relative_parts(path: str, common: str | None) -> tuple[str, ...]:
    """The folders from ``common`` down to ``path``'s folder (none when it is not below it)."""
    if common is None:
        return ()
    rel = os.path.relpath(_folder_of(os.path.normpath(path)), common)
    parts = () if rel == os.curdir else tuple(rel.split(os.sep))
    return () if os.pardir in parts else parts


def _expand_glob(pattern: str, avoid: Callable[[str], bool] = lambda path: False) -> Iterator[str]:
    """Deterministic, loop-safe glob expansion.

    Like :func:`glob.glob` with ``recursive=True``, except that results come
    out in sorted order (component by component, depth-first), ``**`` never
    follows a directory (symlink loop) twice, and wildcards never match hidden
    names. A literal hidden component (``.cache/*.jpg``) is honoured. ``**`` never descends into
    a folder for which ``avoid(path)`` is true.
    """
    drive, rest = os.path.splitdrive(pattern)
    if os.path.isabs(rest):
        root = drive + rest[: len(rest) - len(rest.lstrip("/\\"))]
        rest = rest.lstrip("/\\")
    else:
        root = drive
    parts = [p for p in re.split(r"[/\\]" if os.sep == "\\" else "/", rest) if p != ""]
    if not parts:
        return
    yield from _glob_parts(root, parts, set(), avoid)


def _join(base: str, name: str) -> str:
    return os.path.join(base, name) if base else name


def _sorted_listing(dirpath: str) -> list[os.DirEntry]:
    try:
        with os.scandir(dirpath or ".") as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def _glob_parts(base: str, parts: list[str], rec_seen: set, avoid: Callable[[str], bool]) -> Iterator[str]:
    head, tail = parts[0], parts[1:]
    if head == "**":
        # Each real directory is expanded once per remaining pattern, so
        # symlink loops terminate.
        try:
            st = os.stat(base or ".")
        except OSError:
            return
        key = (st.st_dev, st.st_ino, tuple(tail))
        if key in rec_seen:
            return
        rec_seen.add(key)
        # zero directories ...
        if tail:
            yield from _glob_parts(base, tail, rec_seen, avoid)
        elif base:
            yield base if base.endswith(os.sep) else base + os.sep
        # ... or one more (non-hidden) directory level
        for entry in _sorted_listing(base):
            if _is_hidden(entry.name):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                if not avoid(_join(base, entry.name)):
                    yield from _glob_parts(_join(base, entry.name), parts, rec_seen, avoid)
            elif not tail:
                yield _join(base, entry.name)
        return
    if not _glob.has_magic(head):
        path = _join(base, head)
        if not tail:
            if os.path.lexists(path):
                yield path
        elif os.path.isdir(path):
            yield from _glob_parts(path, tail, rec_seen, avoid)
        return
    for entry in _sorted_listing(base):
        name = entry.name
        if _is_hidden(name) and not head.startswith("."):
            continue
        if not fnmatch.fnmatchcase(name, head):
            continue
        path = _join(base, name)
        if not tail:
            yield path
        else:
            try:
                if entry.is_dir():
                    yield from _glob_parts(path, tail, rec_seen, avoid)
            except OSError:
                continue


def _read_stdin_paths(stream: IO[str], null: bool) -> Iterator[str]:
    if null:
        buf = ""
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            buf += chunk
            *items, buf = buf.split("\0")
            for item in items:
                if item.strip():
                    yield item
        if buf.endswith("\n"):  # the newline that echo or a here-doc adds after the last path
            buf = buf[:-1]
        if buf.strip():
            yield buf
        return
    for line in stream:
        line = line.rstrip("\n")
        if line.endswith("\r"):
            line = line[:-1]
        if line.strip():
            yield line


def found_files(inputs: Sequence[str], listing: Listing, stdin: IO[str] | None, null: bool) -> Iterator[tuple[str, str]]:
    """(path, file name) of every input image, in order, each file once."""
    stdin_used = False
    for arg in inputs:
        if arg == "-":
            if stdin_used:
                continue
            stdin_used = True
            stream = stdin if stdin is not None else sys.stdin
            for line in _read_stdin_paths(stream, null):
                yield from listing.explicit(line)
            continue
        if os.path.lexists(arg) or not _glob.has_magic(arg):
            yield from listing.explicit(arg)
        else:
            yield from listing.glob(arg)
