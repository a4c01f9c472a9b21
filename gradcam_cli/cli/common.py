"""What the commands share: exit codes, error translation, option bundles, building the model."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from gradcam_cli.errors import (
    BusyError,
    EngineError,
    GradcamError,
    InputError,
    OptionError,
    OutputError,
    ProfileError,
    ReportError,
    ResumeError,
    TargetError,
)
from gradcam_cli.settings import ModelSettings

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_OUTPUT = 3
EXIT_MODEL = 4
EXIT_NO_IMAGES = 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM gives 143
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a process killed by it

EXIT_CODES_HELP = """\b
Exit codes:
  0  every image was explained
  1  some images failed (each has an error record; the rest are done)
  2  usage error: a bad flag, an input path that does not exist, an unknown
     backbone or class, or a model option that does not fit the model (--layer,
     --output, --input-size, --custom-objects); or --out is in use by another
     run (the message names its pid), or --engine ray that cannot run (Ray not
     installed, a cluster that cannot be joined, workers that differ)
  3  the output directory cannot be written (a file, read-only, full disk, ...)
  4  the model or its weights cannot be loaded (missing, corrupt, not a Keras model)
  5  no images found in the inputs (nothing is loaded or written)
  130  interrupted by Ctrl-C (SIGINT); 143: by SIGTERM. Finished images are kept
       and predictions.json lists them; rerun with --resume
  141  stdout was closed (--jsonl | head): finished images and predictions.json are kept
"""


class CliError(click.ClickException):
    """One line on stderr, ``Error: ...``, with a chosen exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def to_cli_error(exc: GradcamError) -> CliError:
    if isinstance(exc, OutputError):
        return CliError(str(exc), EXIT_OUTPUT)
    if isinstance(exc, (ProfileError, TargetError, ResumeError, OptionError, InputError, ReportError, BusyError,
                        EngineError)):
        return CliError(str(exc), EXIT_USAGE)  # the fix is a flag or a profile
    return CliError(str(exc), EXIT_MODEL)


@contextlib.contextmanager
def errors():
    """Turn the library's narrow exceptions into one-line CLI errors with their exit codes."""
    try:
        yield
    except GradcamError as exc:
        raise to_cli_error(exc) from None


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter kept off the terminal.

    Set GRADCAM_DEBUG=1 to see it.
    """
    if "tensorflow" in sys.modules or os.environ.get("GRADCAM_DEBUG"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    try:
        sys.stderr.flush()
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401

            tensorflow.get_logger().setLevel("ERROR")
            tensorflow.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def registry(config_dirs):
    from gradcam_cli.config.profiles import load_registry

    with errors():
        return load_registry(config_dirs)


def class_names_before_loading(settings: ModelSettings):
    """The class names a model will have, when they are known without building it: ``--labels``,
    or a registry backbone's list. None for a saved model without ``--labels``."""
    from gradcam_cli.config import classes
    from gradcam_cli.config.profiles import get_profile

    with errors():
        if settings.labels is not None:
            return classes.from_file(settings.labels)
        if settings.model:
            return None
        profile = get_profile(registry(settings.config_dirs), settings.backbone)
        if profile.model is not None or profile.classes is None:
            return None
        base = os.path.dirname(profile.source) if profile.source else None
        return classes.load(profile.classes, base)


def make_cam(settings: ModelSettings, methods: tuple = (), targets=None):
    """Build the GradCAM object the settings describe (TensorFlow is imported here); ``targets``
    (:class:`gradcam_cli.settings.TargetSettings`): a target beyond a class score gets a TargetCAM.
    A method of ``methods`` the model cannot have (attention rollout without global attention) is
    refused now, before the run."""
    reg = registry(settings.config_dirs)
    with errors():
        from gradcam_cli.config.profiles import get_profile

        profile = None if settings.model else get_profile(reg, settings.backbone)
    quiet_tensorflow()
    from gradcam_cli.cam_targets import cam_for

    with errors():
        cam = cam_for(settings, targets, profile=profile)
    from gradcam_cli.methods import get_method

    problem = getattr(cam.split, "attention_problem", None)
    if problem and any(get_method(m).kind == "attention" for m in methods):
        raise to_cli_error(OptionError(problem))
    return cam


def make_cam_without_weights(settings: ModelSettings, targets=None):
    """The model the settings describe, a backbone built with random weights (nothing to load)."""
    from dataclasses import replace

    return make_cam(settings if settings.model else replace(settings, weights="none"), targets=targets)


def parse_shard_option(shard: str | None) -> tuple[int, int] | None:
    """``--shard K/N`` as (K, N); None without it; a usage error naming the flag otherwise."""
    from gradcam_cli.io.discover import parse_shard

    if shard is None:
        return None
    try:
        return parse_shard(shard)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--shard'") from None


def discover_inputs(inputs, no_recursive: bool = False, extensions=(), null: bool = False,
                    shard: tuple[int, int] | None = None, out_dir=None) -> list:
    """The run's inputs, checked before anything is loaded: a path that does not exist is a usage
    error; no image at all (before --shard) ends the command with EXIT_NO_IMAGES. The walk never
    enters ``out_dir`` nor a folder holding a gradcam run."""
    from gradcam_cli.io.discover import DEFAULT_EXTENSIONS, in_shard, iter_inputs, missing_arguments

    if null and "-" not in inputs:
        raise click.UsageError("--null only applies when '-' (paths on stdin) is among the inputs")
    missing = missing_arguments(inputs)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CliError(f"input {missing[0]} does not exist{more}; check the path", EXIT_USAGE)
    exts = tuple(e if e.startswith(".") else f".{e}" for e in extensions) or DEFAULT_EXTENSIONS
    left_out: list = []
    refs = list(iter_inputs(inputs, recursive=not no_recursive, extensions=exts, stdin=sys.stdin, null=null,
                            skip=() if out_dir is None else (out_dir,), left_out=left_out))
    if not refs:
        where = "stdin" if list(inputs) == ["-"] else " ".join(map(str, inputs))
        why = (f"; {left_out[0][0]} {left_out[0][1]} and is never walked into (name its files to explain them)"
               if left_out else "")
        raise CliError(f"no images found in {where} (looked for {' '.join(exts)}; --ext adds others){why}",
                       EXIT_NO_IMAGES)
    _check_medical_extra(refs)
    return [ref for ref in refs if shard is None or in_shard(ref, *shard)]


def _check_medical_extra(refs) -> None:
    """A usage error before anything loads when DICOM inputs are listed and pydicom is missing."""
    from gradcam_cli.io import dicom

    first = next((ref.path for ref in refs if dicom.is_dicom(ref.path)), None)
    if first is not None and not dicom.pydicom_available():
        raise CliError(f"input {first} is a DICOM file; reading it needs the [medical] extra: {dicom.MEDICAL_EXTRA}",
                       EXIT_USAGE)


def print_table(rows, headers) -> None:
    """Rows of cells as left-aligned columns under ``headers``, two spaces apart (trailing spaces cut)."""
    widths = [max(len(str(h)), *(len(str(row[i])) for row in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def precheck_out(out_dir, part: str | None = None, lock: bool = False) -> None:
    """The output folder, before any model loads: creatable (nothing is created), and with ``lock``
    not in use by another run (of the same ``part``, a shard)."""
    from gradcam_cli.io import writers

    with errors():
        writers.check_creatable(out_dir)
        if lock and os.path.isdir(out_dir):
            writers.FolderLock(out_dir, part).check_free()
