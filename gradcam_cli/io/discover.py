"""Turn command-line inputs into an ordered, de-duplicated stream of images.

Nothing here reads image data: :func:`iter_inputs` only lists directories and
stats files, and keeps a set of already seen files and output stems. DICOM files
alone are looked into: an extension-less file's first 132 bytes (the ``DICM``
preamble) and a DICOM file's header (its number of frames: each frame of a
multi-frame file is an input of its own, ``frame`` 1..N, stem ``NAME.frameK``).

Rules (see :func:`iter_inputs` for the details):

* An argument is, in this order of precedence: ``-`` (read paths from stdin),
  an existing directory (walked), an existing file or any other path without
  glob magic (kept as is, even if missing), or a glob pattern (``*``, ``?``,
  ``[...]``, ``**``).
* Walks and glob expansion skip hidden names (starting with ``.``) and keep
  only files whose extension is in ``extensions`` (case-insensitive), and,
  when ``.dcm`` is among them, extension-less files that start like DICOM.
  Explicitly named files are always kept.
* The same file is yielded once, the first time it is reached.
* Every :class:`InputRef` has an ``out_stem`` that is unique in the run: its
  path below the inputs' common folder, without extension (the tree is mirrored).

Sharding (:func:`in_shard`) hashes ``out_stem``; see its docstring.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import itertools
import os
import re
from dataclasses import dataclass
from typing import IO, Iterable, Iterator, Sequence

from gradcam_cli.io.walk import Listing, common_folder, found_files, normalise_extensions, relative_parts

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom")

__all__ = [
    "DEFAULT_EXTENSIONS",
    "InputRef",
    "iter_inputs",
    "missing_arguments",
    "parse_shard",
    "in_shard",
    "frame_key",
]


@dataclass(frozen=True)
class InputRef:
    """One input image to process.

    ``path`` is the path to open, exactly as given or as built while walking
    (``os.path.join(directory_argument, *relative_parts)``); it is not
    resolved. ``out_stem`` is the relative output stem (POSIX separators, no
    extension, never absolute, never containing ``..``), unique within one
    :func:`iter_inputs` call, e.g. ``"cats/chelsea"``.
    """

    path: str
    out_stem: str
    frame: int | None = None  # a multi-frame DICOM file's frame, 1..N (each frame is an input)

    @property
    def key(self) -> str:
        """What tells this input from every other in a run's records: its path, or its path and
        frame (:func:`frame_key`)."""
        return frame_key(self.path, self.frame)


def frame_key(path: str, frame: int | None) -> str:
    """A record's identity in a run: ``path``, or for a frame of a multi-frame file ``path`` and the
    frame joined by a NUL (which no path holds). Never written anywhere."""
    return path if frame is None else f"{path}\0{int(frame)}"


# --------------------------------------------------------------------------- #
# public API


def iter_inputs(
    inputs: Sequence[str],
    *,
    recursive: bool = True,
    extensions: Iterable[str] = DEFAULT_EXTENSIONS,
    stdin: IO[str] | None = None,
    null: bool = False,
    skip: Sequence[str] = (),
    left_out: list | None = None,
) -> Iterator[InputRef]:
    """Yield one :class:`InputRef` per input image, in a deterministic order.

    Each element of ``inputs`` is handled in order:

    * ``"-"``: read paths from ``stdin`` (``sys.stdin`` when ``None``), one per
      line (blank lines ignored, a trailing ``\\r`` stripped) or, with
      ``null=True``, NUL-separated (``find -print0``). Each path is then
      treated like an argument, except that it is never glob-expanded (it is
      a literal name). ``-`` is read only the first time it appears.
    * An existing directory: walked (recursively unless ``recursive=False``).
      Walk order: a directory's own files in sorted name order (Python string
      order), then its subdirectories, each fully, depth-first, in sorted
      order. Hidden files and directories are skipped, files are kept only if
      their extension is in ``extensions`` (case-insensitive), symlinks are
      followed but no directory is walked twice (``(st_dev, st_ino)``), so
      symlink loops terminate. What cannot be read (a folder that cannot be
      listed, a broken link, a symlink loop, what lies in a folder without
      search permission; a link only if its name has an input extension or
      none) is yielded for decoding to name the cause, never dropped silently.
      A folder holding a gradcam run (:func:`~gradcam_cli.io.marks.holds_run`)
      or in ``skip`` (the run's ``--out``) is never walked into, be it an
      argument or below one; ``left_out`` (a list) receives (folder, reason).
    * An existing file, or a path without glob magic characters: yielded as
      is, whatever its extension or hidden-ness, and even if it does not
      exist (decoding then reports ``missing``). A path that exists is never
      treated as a glob, so a file
      literally named ``a[1].jpg`` works.
    * Otherwise a glob pattern (``*``, ``?``, ``[...]``, ``**`` for any depth).
      Matches come in sorted order; wildcards never match hidden names, and
      ``**`` leaves out the folders a directory walk leaves out;
      matched files are filtered by ``extensions``; a matched directory is
      walked as if it were a directory argument (as after shell expansion).
      **A glob that
      matches nothing yields nothing** (the caller may warn); it is not
      reported as a missing file.

    The same file reached twice (named twice, via overlapping directories, a
    symlink, a glob and a directory...) is yielded only the first time; files
    are compared by ``(st_dev, st_ino)`` when they can be stat'ed, else by
    ``os.path.realpath``.

    ``out_stem`` mirrors the tree below the inputs' *common folder*: the
    deepest folder that contains every directory input (a folder argument, a
    folder matched by a glob or listed on stdin) and the folder of every file
    input (a file argument, a file matched by a glob, a path on stdin). A
    file's stem is its path relative to that folder, without extension
    (absolute paths are compared, not resolved, so a symlinked folder keeps
    its name). One folder argument: stems relative to it
    (``D/cats/chelsea.jpg`` -> ``cats/chelsea``); one file: its name;
    ``x/a.jpg y/a.jpg``: ``x/a`` and ``y/a``. A file outside the common folder
    (only a directory that cannot be listed, given itself) uses its name.
    ``gradcam explain --dry-run --jsonl`` prints each input's ``out_stem``.

    ``out_stem`` is unique within the call (compared case-insensitively after
    NFC normalisation, so outputs cannot collide on case-insensitive file
    systems either). When the natural stem is taken, the later file uses its
    name with the extension's dot replaced by ``_`` (``a.png`` -> ``a_png``);
    if that is taken too, ``~2``, ``~3``, ... is appended (``a_png~2``).
    Since inputs are processed in a deterministic order, the same arguments
    over the same file tree always give the same stems.
    """
    listing = Listing(recursive, normalise_extensions(extensions), skip)
    found = list(found_files(inputs, listing, stdin, null))
    if left_out is not None:
        left_out.extend(listing.left_out)
    common = common_folder(listing.bases)
    for path, name in found:
        yield from _refs(listing, path, name, relative_parts(path, common))


def _refs(listing: Listing, path: str, name: str, parts: tuple[str, ...]) -> Iterator[InputRef]:
    """The inputs of one file: itself, or each frame of a multi-frame DICOM file (stems
    ``NAME.frameK``, K zero-padded to the width of the count)."""
    frames = _frames(path)
    if frames == 1:
        yield InputRef(path, listing.claim_stem(parts, name))
        return
    base, ext = os.path.splitext(name)
    width = len(str(frames))
    for frame in range(1, frames + 1):  # an extension-less file's stems claimed as if it were .dcm
        yield InputRef(path, listing.claim_stem(parts, f"{base}.frame{frame:0{width}d}{ext or '.dcm'}"), frame)


def _frames(path: str) -> int:
    """How many inputs a file is: the frames of a multi-frame DICOM file (read from its header,
    :func:`gradcam_cli.io.dicom.frame_count`), else 1."""
    from gradcam_cli.io import dicom

    if not dicom.is_dicom(path):
        return 1
    return dicom.frame_count(path)


def missing_arguments(inputs: Sequence[str]) -> list[str]:
    """The arguments that name nothing: not ``-``, not an existing path, not a glob pattern.
    (A glob that matches nothing is not missing; it yields no image.)"""
    return [arg for arg in inputs if arg != "-" and not _exists(arg) and not _glob.has_magic(arg)]


def _exists(path: str) -> bool:
    """Whether ``path`` names something (a broken link does); one in a folder that may not be entered
    is not known to be missing (decoding reports the permission)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


_SHARD_RE = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` (1 <= K <= N) into ``(K, N)``; ``ValueError`` otherwise."""
    m = _SHARD_RE.fullmatch(text or "")
    if not m:
        raise ValueError(
            f"invalid shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/4"
        )
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise ValueError(
            f"invalid shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/4"
        )
    return k, n


def in_shard(ref: InputRef, k: int, n: int) -> bool:
    """Whether ``ref`` belongs to shard ``k`` of ``n`` (1-based).

    The shard is ``blake2b(out_stem) mod n``. ``out_stem`` is used (rather than
    the path) because it contains nothing machine-specific (no absolute
    prefix), it is what names the outputs (so shards write disjoint output
    files), and it does not depend on an input's position in the listing.
    Every process that lists the same arguments over the same file tree gets
    the same stems, so shards ``1/n .. n/n`` partition the inputs exactly.
    """
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"invalid shard {k}/{n}: expected 1 <= K <= N")
    if n == 1:
        return True
    digest = hashlib.blake2b(
        ref.out_stem.encode("utf-8", "surrogateescape"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % n == k - 1


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
