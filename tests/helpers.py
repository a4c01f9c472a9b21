"""Small helpers shared by the test files (no test imports another test file)."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from gradcam_cli.cli import main


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
