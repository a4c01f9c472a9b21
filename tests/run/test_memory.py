"""glibc keeps freed large blocks for reuse once ``keep_large_blocks`` ran (the CLI's explain does)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import REPO

from gradcam_cli.run import memory


PROBE = """
import ctypes, resource, sys, threading
sys.path.insert(0, {repo!r})
from gradcam_cli.run.memory import keep_large_blocks
took = keep_large_blocks() if {tune} else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
sizes = {sizes!r}
faults = []
def cycles():
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        blocks = [libc.malloc(n) for n in sizes]
        for block, n in zip(blocks, sizes):
            ctypes.memset(block, 1, n)
        for block in blocks:
            libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
if {thread}:
    worker = threading.Thread(target=cycles)
    worker.start()
    worker.join()
else:
    cycles()
print(took, *faults)
"""

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                           reason="glibc's mallopt thresholds: Linux with glibc only")


def faults_per_cycle(tune: bool, sizes: list[int], thread: bool) -> tuple[str, list[int]]:
    env = {k: v for k, v in os.environ.items() if k not in (*memory.USER_SETTINGS, "LD_PRELOAD")}
    code = PROBE.format(repo=str(REPO), tune=tune, sizes=sizes, thread=thread)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    took, *faults = out.stdout.split()
    return took, [int(n) for n in faults]


@glibc
@pytest.mark.parametrize("sizes, thread", [
    ([48 << 20], False),  # one block over glibc's own largest mmap threshold, in the main thread
    ([12 << 20, 36 << 20], True),  # a 4000x3000 decode and a 12 MB map, in an I/O thread
], ids=["main-48MB", "thread-12+36MB"])
def test_freed_large_blocks_are_reused_not_faulted_in_again(sizes, thread):
    _, plain = faults_per_cycle(False, sizes, thread)
    assert min(plain[2:]) > 0  # glibc's default: the 36 / 48 MB block is mapped afresh every cycle
    took, tuned = faults_per_cycle(True, sizes, thread)
    assert took == "True"
    assert tuned[0] > 0 and 10 * max(tuned[1:]) < min(plain[2:])  # faulted in once, then reused


@glibc
def test_a_users_own_malloc_settings_stand(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert memory.keep_large_blocks() is False
    with pytest.raises(ValueError, match="2\\*\\*31"):
        memory.keep_large_blocks(mmap_threshold=2**31)
