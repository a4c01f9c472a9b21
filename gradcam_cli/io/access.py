"""Why a path cannot be read as an image file: the first check of :func:`gradcam_cli.io.images.decode`.

The cause is named as it is: a broken symbolic link (with its target), a symlink loop, a
folder that cannot be listed, a folder on the way that cannot be entered (no search
permission), or a path that is not there. The walk (:mod:`gradcam_cli.io.walk`) hands on
what it cannot read, so a path met while walking gets the same record as when named.
"""

from __future__ import annotations

import errno
import os
import stat

from gradcam_cli.errors import ImageError

__all__ = ["check_regular_file", "has_preamble", "taken"]


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _closed_folder(path: str) -> str | None:
    """The first folder on ``path``'s way that may not be entered (no search permission), as written
    in ``path`` (or absolute, above a relative path's start); None when every one may be."""
    head = os.path.dirname(os.path.normpath(path))
    folders = []
    while head and head not in folders:
        folders.append(head)
        head = os.path.dirname(head)
    above = [] if os.path.isabs(path) else [os.path.abspath(os.curdir)]
    while above and os.path.dirname(above[-1]) != above[-1]:
        above.append(os.path.dirname(above[-1]))
    for folder in [*reversed(above), *reversed(folders)]:
        if not os.access(folder, os.X_OK):
            return folder
    return None


def _denied(path: str) -> ImageError:
    folder = _closed_folder(path)
    if folder is None:
        return ImageError(path, "unreadable", "permission denied (check the folder's permissions)")
    return ImageError(path, "unreadable", f"permission denied on folder {folder}: it may not be entered "
                                          f"(give it search permission: chmod +x '{folder}')")


def check_regular_file(path: str) -> None:
    """Raise :class:`ImageError` (``missing`` or ``unreadable``, naming the cause) unless ``path`` is an
    existing regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(path, "missing", f"broken symbolic link to {os.readlink(path)} "
                                              "(fix or remove the link)") from None
        raise ImageError(path, "missing", "file not found (check the path; it may have been moved or deleted)") from None
    except NotADirectoryError:
        raise ImageError(path, "missing", "file not found (a parent in the path is a file, not a folder)") from None
    except PermissionError:
        raise _denied(path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(path, "unreadable", "a symlink loop (the link leads back to itself; "
                                                 "fix or remove it)") from None
        raise ImageError(path, "unreadable", f"cannot access file: {_describe(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        try:
            os.scandir(path).close()
        except PermissionError:
            raise ImageError(path, "unreadable", "permission denied: the folder cannot be listed, so its images "
                                                 f"are left out (give it read permission: chmod +r '{path}')") from None
        except OSError as exc:
            raise ImageError(path, "unreadable", f"the folder cannot be listed: {_describe(exc)}") from None
        raise ImageError(path, "unreadable", "is a directory, not an image file (list its images or pass the folder as an input)")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(path, "unreadable", "is not a regular file (device, pipe or socket)")


def has_preamble(path: str) -> bool:
    """Whether ``path`` starts with DICOM's 128-byte preamble and ``DICM`` (False when unreadable)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def taken(path: str, ext: str, extensions) -> bool:
    """Whether a listed regular file is an input: its extension (lower case) is among ``extensions``,
    or it has none, ``.dcm`` is among them and it starts like DICOM (a scanner's ``IM0001``)."""
    if ext in extensions:
        return True
    return not ext and ".dcm" in extensions and has_preamble(path)
