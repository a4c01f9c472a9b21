"""What the commands share: exit codes, error translation, option bundles, building the model."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from gradcam_cli.config.profiles import DEFAULT_BACKBONE
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
     installed, workers that differ)
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


config_dir_option = click.option(
    "--config-dir",
    "config_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Extra folder of backbone profiles (*.toml); repeatable. Also $GRADCAM_CONFIG_DIR.",
)


def model_options(command):
    """The options that choose and adapt the model, shared by `explain` and `layers`."""
    options = [
        click.option("-b", "--backbone", default=DEFAULT_BACKBONE, show_default=True,
                     help="Backbone profile name (see `gradcam backbones`)."),
        click.option("--weights", default="imagenet", show_default=True,
                     help="'imagenet' (the profile's pretrained weights), 'none' (random), or a local weights file."),
        click.option("-m", "--model", "model_path", default=None, type=click.Path(),
                     help="Your own saved model (.keras or .h5) instead of a backbone."),
        click.option("--custom-objects", default=None, type=click.Path(),
                     help="A Python file defining the custom layers / functions your model needs."),
        click.option("--layer", default=None,
                     help="Target layer: a name, a nested path (resnet50/conv5_block3_out), or 'auto' "
                          "(the last 4-D layer with spatial extent; the default for --model)."),
        click.option("--output", default=None, help="Which output of a multi-output model to explain (name or index)."),
        click.option("--input-size", default=None, type=click.IntRange(32, 4096),
                     help="Resize images to this many pixels square (default: the profile's or the model's)."),
        click.option("--preprocess", default=None,
                     type=click.Choice(["caffe", "tf", "torch", "none", "scale", "mean_std"]),
                     help="Input normalisation (default: the profile's; 'none' = raw 0..255 for --model)."),
        click.option("--mean", default=None, type=float, help="With --preprocess mean_std: the mean (0..255)."),
        click.option("--std", default=None, type=float, help="With --preprocess mean_std: the std (0..255)."),
        click.option("--labels", default=None, type=click.Path(),
                     help="Class names: a text file (one per line) or JSON list, in output order."),
        config_dir_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def model_settings(params: dict, precision: str = "float32") -> ModelSettings:
    """The :class:`ModelSettings` that the model options describe (checks flags that exclude each other)."""
    ctx = click.get_current_context()
    model_path = params["model_path"]
    if model_path and ctx.get_parameter_source("backbone") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("give either --backbone or --model, not both")
    if model_path and ctx.get_parameter_source("weights") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--weights applies to --backbone; a saved --model carries its own weights")
    labels = params["labels"]
    return ModelSettings(
        backbone=None if model_path else params["backbone"], model=model_path, weights=params["weights"],
        layer=params["layer"], output=params["output"], input_size=params["input_size"],
        preprocessing=params["preprocess"], mean=params["mean"], std=params["std"],
        labels=None if labels is None else os.path.abspath(labels), custom_objects=params["custom_objects"],
        config_dirs=tuple(params["config_dirs"]), precision=precision,
    )


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


def make_cam(settings: ModelSettings):
    """Build the GradCAM object the settings describe (TensorFlow is imported here)."""
    reg = registry(settings.config_dirs)
    with errors():
        from gradcam_cli.config.profiles import get_profile

        profile = None if settings.model else get_profile(reg, settings.backbone)
    quiet_tensorflow()
    from gradcam_cli.cam import GradCAM

    with errors():
        return GradCAM.from_settings(settings, profile=profile)


def make_cam_without_weights(settings: ModelSettings):
    """The model the settings describe, a backbone built with random weights (nothing to load)."""
    from dataclasses import replace

    return make_cam(settings if settings.model else replace(settings, weights="none"))
