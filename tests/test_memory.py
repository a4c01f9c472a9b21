"""glibc keeps freed large blocks for reuse once ``keep_large_blocks`` ran (the CLI's explain does)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import ctypes, resource, sys
sys.path.insert(0, {repo!r})
from gradcam_cli.run.memory import keep_large_blocks
took = keep_large_blocks() if {tune} else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 48 << 20  # a 4000x3000 RGB image and a third: over glibc's own largest mmap threshold
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(took, *faults)
"""


def faults_per_block(tune: bool) -> tuple[str, list[int]]:
    import pathlib

    repo = str(pathlib.Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", PROBE.format(repo=repo, tune=tune)], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], [int(n) for n in out[1:]]


def test_freed_large_blocks_are_reused_not_faulted_in_again():
    took, plain = faults_per_block(False)
    assert min(plain) > 0  # glibc's default: every 48 MB block is mapped afresh (12,288 4K pages here)
    took, tuned = faults_per_block(True)
    assert took == "True"
    assert tuned[0] > 0 and 10 * max(tuned[1:]) < min(plain)  # faulted in once, then reused
