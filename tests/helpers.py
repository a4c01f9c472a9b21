"""Small helpers shared by the test files (no test imports another test file)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
from PIL import Image
from click.testing import CliRunner

from gradcam_cli.cli import main

#: the checkout (tests run from it: sample_images/ and README.md are read relative to it)
REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_images"


def invoke(*args, input=None):
    """Run ``gradcam ARGS`` in process; exceptions propagate (a traceback is a failure, not an exit code)."""
    return CliRunner().invoke(main, list(map(str, args)), input=input, catch_exceptions=False)


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Preprocessed-looking float32 input batches in [-1, 1)."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, size, size, 3)).astype(np.float32)


def one_line(exc) -> str:
    """The message of a ``pytest.raises`` result, asserted to be one line."""
    message = str(exc.value)
    assert "\n" not in message
    return message


def kill_after_records(proc, jsonl, count: int, timeout: float = 120.0) -> int:
    """SIGKILL ``proc`` (a ``gradcam explain`` subprocess) once its JSON Lines log ``jsonl`` holds
    ``count`` records; returns how many whole records the log kept."""
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and (not jsonl.exists() or jsonl.read_text().count("\n") < count):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return jsonl.read_text().count("\n")


# Numbers computed by the model differ in their last digits between batch sizes, thread counts and
# CPUs (oneDNN picks its GEMM blocking by shape and ISA): 1e-7 seen for probabilities between batches
# of 3 and 4. 1e-5 is a hundred times that, and still far below any difference a bug would make.
FLOAT_ATOL = 1e-5


def assert_close(a, b, where: str = "", atol: float = FLOAT_ATOL) -> None:
    """Equal JSON values: same keys, lengths, strings, ints and bools; floats within ``atol``."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}", atol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]", atol)
    elif isinstance(a, float):
        assert isinstance(b, (int, float)) and not isinstance(b, bool) and abs(a - b) <= atol, f"{where}: {a} != {b}"
    else:
        assert a == b, where


def assert_same_pictures(a, b, where: str = "") -> None:
    """Two written overlays (paths) alike: same size, mean absolute difference under half a grey
    level. A map differing in its 7th digit can move a colormap level at a boundary, and the JPEG
    encoder spreads that change over its block, so bytes are not compared."""
    from PIL import Image

    x, y = (np.asarray(Image.open(p), dtype=np.float64) for p in (a, b))
    assert x.shape == y.shape and np.abs(x - y).mean() < 0.5, where


def assert_same_raws(a, b, where: str = "") -> None:
    """Two saved ``.npy`` maps (paths) equal within ``FLOAT_ATOL``."""
    np.testing.assert_allclose(np.load(a), np.load(b), atol=FLOAT_ATOL, err_msg=where)


# ---------------------------------------------------------------------------
# runs of a small own model on generated images (the ``tiny`` fixture of conftest.py)


def make_images(folder: pathlib.Path, n: int, size: int = 40) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(folder / f"im{i:03d}.png")
    return folder


def cli(*args, command: str = "explain", **popen) -> subprocess.Popen:
    """``python -m gradcam_cli COMMAND ARGS`` in a child process (this checkout's code)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "gradcam_cli", command, *map(str, args)], env=env, **popen)


def wait_for_records(jsonl: pathlib.Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {n} records in {jsonl} (exit {proc.poll()})")


def log_records(out: pathlib.Path, name: str = "predictions.jsonl") -> list[dict]:
    lines = (out / name).read_bytes().splitlines()
    return [json.loads(line) for line in lines]  # every line is JSON


def document(out: pathlib.Path, name: str = "predictions.json") -> dict:
    return json.loads((out / name).read_text())


def temp_files(out: pathlib.Path) -> list[str]:
    return [p.name for p in out.rglob("*") if ".tmp-" in p.name]


# ---------------------------------------------------------------------------
# permissions: the tests run as root, whom no permission bit stops (CAP_DAC_OVERRIDE)


def run_bound_by_permissions(argv, cwd, timeout: float = 600) -> subprocess.CompletedProcess:
    """``argv`` in a child process (this checkout's code) that permission bits bind: as root, it
    drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its bounding set before exec, so the owner's
    bits apply to it (root's own files included: chmod 0o300 makes a folder unlistable to it); as
    another user they bind already."""
    import ctypes

    def drop():
        if os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH; 24 is PR_CAPBSET_DROP
                if libc.prctl(24, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(list(map(str, argv)), cwd=cwd, env=env, preexec_fn=drop, capture_output=True, text=True,
                          timeout=timeout)


def dicom_copy(name: str, dest: pathlib.Path, **tags) -> pathlib.Path:
    """A copy of pydicom's bundled test file ``name`` at ``dest``, with ``tags`` (keyword=value) set."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file(name))
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest)
    return dest


def truncated_copy(source: pathlib.Path, dest: pathlib.Path, fraction: float) -> pathlib.Path:
    """The first ``fraction`` of ``source``'s bytes at ``dest`` (a file cut short in a copy)."""
    data = pathlib.Path(source).read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def full_range_values(size: int = 32) -> np.ndarray:
    """uint16 (size, size) over the whole range, 0 and 65535 included, that no 8-bit copy holds: the
    first 156 of the 256 levels k as 257 k + 100 (0.39 of a level above k on the 0..255 scale, where
    a shift by 8, v / 257 rounded and v * 255 // 65535 all give k), the rest as 257 k (exact). Any
    8-bit copy is off by 0.39 level on most pixels, always in the same direction: even the mean of
    the image moves (by 0.24 level), not only single pixels."""
    k = np.arange(size * size) % 256
    values = np.where(k < 156, 257 * k + 100, 257 * k).astype(np.uint16)
    values[0], values[-1] = 0, 65535
    return values.reshape(size, size)


def eight_bit_copies(values: np.ndarray) -> list[np.ndarray]:
    """The 8-bit levels an 8-bit decode could make of 16-bit ``values``: shifted by 8 (Pillow's and
    this package's 8-bit path), v / 257 rounded, v * 255 // 65535."""
    v = np.asarray(values, np.int64)
    return [v >> 8, np.rint(v / 257.0), v * 255 // 65535]
