"""The ``gradcam`` command. Option parsing and output formatting only.

TensorFlow is imported lazily, so ``gradcam --help`` and ``gradcam backbones``
stay fast. Data goes to stdout; progress and diagnostics go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import click

from . import __version__
from .errors import GradcamError, OptionError, OutputError, ProfileError, ResumeError, TargetError
from .profiles import DEFAULT_BACKBONE

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_OUTPUT = 3
EXIT_MODEL = 4

EXIT_CODES_HELP = """\b
Exit codes:
  0  every image was explained
  1  some images failed (each has an error record; the rest are done)
  2  usage error: a bad flag, an unknown backbone or class, or a model option
     that does not fit the model (--layer, --output, --input-size, --custom-objects)
  3  the output directory cannot be written (read-only, full disk, ...)
  4  the model or its weights cannot be loaded (missing, corrupt, not a Keras model)
"""


class CliError(click.ClickException):
    """One line on stderr, ``Error: ...``, with a chosen exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _fail(exc: GradcamError) -> CliError:
    if isinstance(exc, OutputError):
        return CliError(str(exc), EXIT_OUTPUT)
    if isinstance(exc, (ProfileError, TargetError, ResumeError, OptionError)):
        return CliError(str(exc), EXIT_USAGE)  # the fix is a flag or a profile
    return CliError(str(exc), EXIT_MODEL)


@contextlib.contextmanager
def _errors():
    try:
        yield
    except GradcamError as exc:
        raise _fail(exc) from None


def _quiet_tensorflow() -> None:
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


def _registry(config_dirs):
    from .profiles import load_registry

    with _errors():
        return load_registry(config_dirs)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradcam")
def main() -> None:
    """Grad-CAM heatmaps for Keras image classifiers.

    \b
    gradcam explain sample_images/ --out out/   # overlays + predictions.json
    gradcam backbones                           # the registered backbones
    """


config_dir_option = click.option(
    "--config-dir",
    "config_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Extra folder of backbone profiles (*.toml); repeatable. Also $GRADCAM_CONFIG_DIR.",
)


@main.command()
@config_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def backbones(config_dirs, as_json) -> None:
    """List the registered backbones (name, input size, target layer, weights)."""
    registry = _registry(config_dirs)
    rows = [
        {
            "name": p.name,
            "input_size": list(p.input_size) if p.input_size else None,
            "target_layer": p.target_layer,
            "preprocessing": p.preprocessing,
            "weights_source": p.weights_source(),
            "offline": p.weights_offline(),
            "default": p.name == DEFAULT_BACKBONE,
            "profile": p.source,
        }
        for p in registry.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ("name", "input", "target layer", "weights", "offline")
    table = [
        (
            r["name"] + (" *" if r["default"] else ""),
            "x".join(map(str, r["input_size"])) if r["input_size"] else "model's",
            r["target_layer"],
            r["weights_source"],
            "yes" if r["offline"] else "no",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    for row in (headers, *table):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    click.echo("\n* default. 'offline: no' means the weights must be downloaded once or passed with --weights PATH.")




def _unit_interval(ctx, param, value):
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"must be between 0 and 1, got {value}")
    return value


def _batch_size(ctx, param, value):
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= 4096:
        raise click.BadParameter(f"must be a whole number from 1 to 4096, or 'auto'; got {value!r}")
    return size


def _colormap(ctx, param, value):
    from .render import colormap_id

    try:
        colormap_id(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


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


def _make_cam(params: dict, precision: str = "float32"):
    """Build the GradCAM object the options describe (TensorFlow is imported here)."""
    ctx = click.get_current_context()
    model_path = params["model_path"]
    if model_path and ctx.get_parameter_source("backbone") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("give either --backbone or --model, not both")
    if model_path and ctx.get_parameter_source("weights") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--weights applies to --backbone; a saved --model carries its own weights")
    registry = _registry(params["config_dirs"])
    with _errors():
        from .profiles import get_profile

        profile = None if model_path else get_profile(registry, params["backbone"])
    _quiet_tensorflow()
    from .pipeline import GradCAM

    labels = params["labels"]
    with _errors():
        return GradCAM(
            profile=profile, model=model_path, weights=params["weights"], layer=params["layer"],
            output=params["output"], input_size=params["input_size"], preprocessing=params["preprocess"],
            mean=params["mean"], std=params["std"], labels=None if labels is None else os.path.abspath(labels),
            custom_objects=params["custom_objects"], precision=precision,
        )


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", default="gradcam_out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder: overlays mirror the input tree; predictions.json(l) at its top.")
@model_options
@click.option("-n", "--top", default=3, show_default=True, type=click.IntRange(1, 1000),
              help="Explain each image's N most probable classes.")
@click.option("-c", "--class", "classes", multiple=True,
              help="Explain this class instead (index or name, case-insensitive); repeatable.")
@click.option("--target-unit", default=None, type=click.IntRange(0),
              help="Explain this output unit (regression or any scalar output); like --class INDEX.")
@click.option("--threshold", default=None, type=float, callback=_unit_interval,
              help="Multi-label: keep only the labels at least this probable (of the top N).")
@click.option("--labels-csv", default=None, type=click.Path(),
              help="Test-set mode: a CSV of path,label. Adds the true label and its map to each image, and "
                   "top-1 / top-5 accuracy and the misclassified images to the summary.")
@click.option("--batch-size", default="16", show_default=True, callback=_batch_size,
              help="Images per batch, or 'auto': the largest that fits on the GPU (16 on the CPU). "
                   "On out-of-memory the batch is halved and no image is lost.")
@click.option("--precision", type=click.Choice(["float32", "mixed"]), default="float32", show_default=True,
              help="'mixed': float16 compute (for GPUs with tensor cores); maps stay float32.")
@click.option("--alpha", default=0.4, show_default=True, type=float, callback=_unit_interval,
              help="Heatmap opacity in the overlay.")
@click.option("--colormap", default="jet", show_default=True, callback=_colormap,
              help="Any OpenCV colormap name: jet, turbo, viridis, inferno, magma, hot, ...")
@click.option("--quality", default=90, show_default=True, type=click.IntRange(1, 100), help="JPEG quality.")
@click.option("--save-raw", is_flag=True, help="Also write each map as float32 .npy at the target layer's resolution.")
@click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders.")
@click.option("--ext", "extensions", multiple=True,
              help="File extension to take from folders (repeatable; default: common image types).")
@click.option("--null", is_flag=True, help="With '-': paths on stdin are NUL-separated (find -print0).")
@click.option("--max-pixels", type=click.IntRange(1), default=None,
              help="Refuse images with more pixels than this (decompression-bomb guard).")
@click.option("--jsonl", is_flag=True, help="Stream one JSON object per image on stdout as it is done.")
@click.option("--resume", is_flag=True,
              help="Skip images whose outputs in --out are complete; redo the rest (same options required).")
@click.option("--shard", default=None, metavar="K/N",
              help="Take a deterministic 1/N of the inputs (K = 1..N), for N machines or a job array.")
@click.option("--dry-run", is_flag=True,
              help="List the inputs and the resolved backbone, layer and preprocessing; compute nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def explain(inputs, out_dir, top, classes, target_unit, threshold, labels_csv, batch_size, precision, alpha,
            colormap, quality, save_raw, no_recursive, extensions, null, max_pixels, jsonl, resume, shard, dry_run,
            quiet, **model_params) -> None:
    """Explain images with Grad-CAM: overlays for each image's top classes, plus predictions.json.

    INPUTS are image files, folders (searched recursively), glob patterns, or '-'
    to read paths from stdin, one per line.
    """
    from .discover import DEFAULT_EXTENSIONS, in_shard, iter_inputs, parse_shard

    if target_unit is not None:
        if classes:
            raise click.UsageError("give either --class or --target-unit, not both")
        classes = (str(target_unit),)
    if shard is not None:
        try:
            shard_k, shard_n = parse_shard(shard)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--shard'") from None
    if null and "-" not in inputs:
        raise click.UsageError("--null only applies when '-' (paths on stdin) is among the inputs")
    exts = tuple(e if e.startswith(".") else f".{e}" for e in extensions) or DEFAULT_EXTENSIONS
    refs = [
        ref
        for ref in iter_inputs(inputs, recursive=not no_recursive, extensions=exts, stdin=sys.stdin, null=null)
        if shard is None or in_shard(ref, shard_k, shard_n)
    ]
    if not refs:
        click.echo(f"gradcam: no images found in {' '.join(inputs)}", err=True)

    if dry_run:
        _dry_run(model_params, refs, jsonl)
        return

    truth = None
    if labels_csv is not None:
        from .pipeline import load_labels_csv

        with _errors():
            truth = load_labels_csv(labels_csv)
    with _errors():
        from .writers import check_writable

        check_writable(out_dir)
    cam = _make_cam(model_params, precision)
    from .pipeline import RunOptions, auto_batch_size, run_folder

    with _errors():
        cam.resolve_classes(classes)
        for label in set((truth or {}).values()):
            cam.class_names.resolve(label, cam.split.num_classes)
    if batch_size == "auto":
        batch_size = auto_batch_size()
    options = RunOptions(out_dir=out_dir, top=top, classes=classes, batch_size=batch_size, alpha=alpha,
                         colormap=colormap, quality=quality, save_raw=save_raw, max_pixels=max_pixels,
                         resume=resume, shard=(shard_k, shard_n) if shard else None, threshold=threshold,
                         truth=truth)
    header_options = {k: v for k, v in click.get_current_context().params.items()}
    header_options["inputs"] = list(inputs)

    from tqdm import tqdm

    bar = tqdm(total=len(refs), unit="img", disable=quiet, file=sys.stderr, dynamic_ncols=True, delay=0.5)

    def on_record(record: dict) -> None:
        bar.update(1)
        if record["status"] != "ok":
            bar.write(f"gradcam: skipped {record['path']}: {record['message']}", file=sys.stderr)
        if jsonl:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            sys.stdout.flush()

    try:
        with _errors():
            summary = run_folder(cam, refs, options, header_options=header_options, on_record=on_record)
    finally:
        bar.close()
    accuracy = summary.accuracy()
    if accuracy is not None:
        click.echo(
            f"gradcam: top-1 accuracy {accuracy['top1']:.3f}, top-5 {accuracy['top5']:.3f} over "
            f"{accuracy['labelled']} labelled images; {len(accuracy['misclassified'])} misclassified "
            "(summary.accuracy.misclassified in the predictions JSON)",
            err=True,
        )
    if not quiet:
        resumed = f" ({summary.resumed} kept from the previous run)" if summary.resumed else ""
        click.echo(
            f"gradcam: {summary.done} explained{resumed}, {summary.failed} failed; results in {summary.out_dir}",
            err=True,
        )
    sys.exit(EXIT_SOME_FAILED if summary.failed else EXIT_OK)


def _make_cam_without_weights(model_params: dict):
    """The model the options describe, a backbone built with random weights (nothing to load)."""
    params = dict(model_params)
    if not params["model_path"]:
        params["weights"] = "none"
    return _make_cam(params)


def _dry_run(model_params, refs, as_jsonl) -> None:
    """Resolve everything a run would use without loading weights (a backbone's graph is built
    with random initialisation only, to check the target layer and pick the engine path)."""
    cam = _make_cam_without_weights(model_params)
    from .pipeline import engine_description

    profile, split = cam.profile, cam.split
    weights = model_params["weights"]
    settings = {
        "backbone": profile.name,
        "profile": profile.source or profile.model,
        "target_layer": split.layer_name,
        "target_layer_shape": list(split.feature_shape),
        "input_size": list(profile.input_size),
        "preprocessing": profile.preprocessing,
        "weights": profile.weights_source() if profile.model or weights == "imagenet" else weights,
        "weights_offline": profile.weights_offline() if weights == "imagenet" else None,
        "head": split.head_type,
        "score": split.score_description,
        "engine": engine_description(split),
        "images": len(refs),
    }
    for key, value in settings.items():
        click.echo(f"{key}: {value}", err=True)
    for ref in refs:
        click.echo(json.dumps({"path": ref.path, "out_stem": ref.out_stem}, ensure_ascii=False) if as_jsonl else ref.path)


@main.command()
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def layers(as_json, **model_params) -> None:
    """List the layers Grad-CAM can target (4-D outputs with spatial extent), marking the one
    `auto` picks (*) and the one in use (>). Backbones are built without weights."""
    cam = _make_cam_without_weights(model_params)
    from .backbones import auto_layer, candidate_layers

    with _errors():
        rows = candidate_layers(cam.model)
        auto = auto_layer(cam.model, output=cam.profile.output)
    table = [
        {"layer": r.name, "shape": list(r.shape), "type": r.kind, "auto": r.name == auto, "target": r.name == cam.layer}
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    width = max([len(r["layer"]) for r in table] + [5])
    for r in table:
        mark = (">" if r["target"] else " ") + ("*" if r["auto"] else " ")
        shape = "x".join(map(str, r["shape"]))
        click.echo(f"{mark} {r['layer'].ljust(width)}  {shape.ljust(14)}  {r['type']}")
    click.echo(f"\n* picked by --layer auto   > in use ({cam.layer})")
