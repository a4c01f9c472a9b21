"""Keep freed large blocks in the process instead of handing them back to the kernel (glibc).

glibc serves every block over its mmap threshold (at most 32 MiB by its own rule) with a fresh
``mmap`` and unmaps it on free, so each 12-megapixel image (36 MB decoded, as much again for each
colour, blend and resize) is page-faulted in anew: measured, 35 ms of kernel time per decode of a
4000x3000 JPEG on top of its ~80 ms of libjpeg, and 80-90 ms of the ~300 ms CPU each full-size
top-1 overlay image costs in the folder runner. Raising the mmap and trim thresholds lets freed
blocks be reused from the heap; peak memory is unchanged (the folder runner bounds what is held
at once), but memory is not returned to the system before the process ends.

Process-wide, so the CLI calls it (``gradcam explain``, before the folder run), not the library.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 256 << 20  # a 4000x3000 RGB image is 36 MB; a 64-megapixel one 192 MB
TRIM_THRESHOLD = 1 << 30


def keep_large_blocks(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when glibc took both, False
    on another C library (nothing changed there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no mallopt thresholds)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
