"""Keep freed large blocks in the process instead of handing them back to the kernel (glibc).

glibc serves every block over its mmap threshold (which it raises by itself to at most 32 MiB)
with a fresh ``mmap`` and unmaps it on free, so each 12-megapixel image (36 MB decoded, as much
again for each colour, blend and resize) is page-faulted in anew: measured, 35 ms of kernel time
per decode of a 4000x3000 JPEG on top of its ~80 ms of libjpeg, and 80-90 ms of the ~300 ms of
CPU each full-size top-1 overlay image costs in the folder runner (6-16 ms with this).

Raising the mmap and trim thresholds lets freed blocks be reused from the heap. What it costs:
memory is not returned to the system before the process ends, and the peak is higher (a run over
4000x3000 JPEGs: 988 MiB instead of 848, still flat in the number of images). What it leaves: a
worker thread's own heaps hold at most 64 MiB each in glibc, so a block over that (one image over
~21 megapixels) is still mapped afresh, as is a thread's third or fourth live 36 MB buffer.

Process-wide, so the CLI calls it (``gradcam explain``, and each Ray actor), not the library. A
user who tunes glibc's malloc through its environment variables keeps their settings.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 256 << 20  # a 4000x3000 RGB image is 36 MB; a 64-megapixel one 192 MB
TRIM_THRESHOLD = 1 << 30

#: the environment through which a user tunes glibc's malloc; when any is set, theirs stands
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                 "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")


def keep_large_blocks(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when glibc took both. False,
    with nothing changed, on another C library or when the user set glibc's malloc variables."""
    for value in (mmap_threshold, trim_threshold):
        if not 0 <= value < 2**31:
            raise ValueError(f"a malloc threshold must be in [0, 2**31), got {value}")
    if not sys.platform.startswith("linux") or any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no mallopt thresholds)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
