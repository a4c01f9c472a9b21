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
