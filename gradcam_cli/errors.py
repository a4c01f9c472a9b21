"""Narrow exception types.

The library raises these; only the CLI turns them into exit codes and one-line
messages. Every message says what was expected, what was received, and the fix.
"""

from __future__ import annotations


class GradcamError(Exception):
    """Base class for every error this package raises on purpose."""


class ProfileError(GradcamError):
    """A backbone profile (TOML) is missing, malformed or invalid."""


class ModelError(GradcamError):
    """A model or its target layer cannot be built, loaded or used."""


class OptionError(ModelError):
    """The model is readable, but an option does not fit it or it needs one: the fix is a flag.

    ``--layer`` (unknown, ambiguous, not 4-D), ``--output``, ``--input-size``,
    ``--custom-objects`` (missing, broken, or a class the model needs and the file
    lacks), ``--precision mixed`` with ``--model``.
    """


class WeightsError(ModelError):
    """Weights cannot be found, read or converted."""


class TargetError(GradcamError):
    """A requested class (by index or name) does not exist."""


class ImageError(GradcamError):
    """One input image cannot be used.

    ``kind`` is a short machine-readable tag (``empty``, ``truncated``,
    ``not_an_image``, ``unreadable``, ``missing``, ``too_large``, ...)
    written into the error record of that image.
    """

    def __init__(self, path: str, kind: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.kind = kind
        self.message = message


class OutputError(GradcamError):
    """The output directory or a file in it cannot be written."""


class BusyError(GradcamError):
    """Another run holds the output folder's lock (``pid``: its process id, None when unknown)."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


class ResumeError(GradcamError):
    """``--resume`` on an output folder that was made with different settings."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), at most ``limit`` chars."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class InputError(GradcamError):
    """The inputs or a test-set file cannot be used as given (a missing path, a malformed labels CSV):
    the fix is an argument or a flag."""


class ReportError(GradcamError):
    """The report of a run cannot be built: its ``predictions.json`` is missing or unreadable."""


class BoxesError(GradcamError):
    """A ground-truth boxes CSV (``--boxes-csv``) cannot be read or has a malformed row."""


class EngineError(GradcamError):
    """The Ray engine cannot run: Ray is not installed, the cluster cannot host the workers asked
    for, or a worker differs from the driver (another gradcam-cli version, another model)."""
