"""`gradcam explain`: the main job. Flags -> typed settings -> the folder runner."""

from __future__ import annotations

import json
import os
import sys

import click

from gradcam_cli.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_SOME_FAILED,
    errors,
    make_cam,
    make_cam_without_weights,
    model_options,
    model_settings,
)
from gradcam_cli.cli.main import main
from gradcam_cli.methods import method_names


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


def _methods(ctx, param, value):
    from gradcam_cli.methods import get_method

    try:
        names = tuple(get_method(name).name for name in value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if len(set(names)) != len(names):
        raise click.BadParameter(f"each method may be given once, got {', '.join(names)}")
    return names


def _colormap(ctx, param, value):
    from gradcam_cli.render.overlay import colormap_id

    try:
        colormap_id(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


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
@click.option("--method", "methods", multiple=True, default=("gradcam",), show_default=True, callback=_methods,
              metavar="NAME", help=f"CAM method: {', '.join(method_names())} (see README: What it computes). "
                   "Repeatable: several methods come from one forward and backward pass, and their files "
                   "are named NAME.METHOD.jpg.")
@click.option("--scorecam-batch", default=256, show_default=True, type=click.IntRange(1),
              help="Score-CAM: masked inputs per forward pass (bounds its memory).")
@click.option("--scorecam-channels", default=None, type=click.IntRange(1), metavar="M",
              help="Score-CAM: use only the M channels of highest spatial variance (Faster Score-CAM).")
@click.option("--aug-smooth", is_flag=True,
              help="Average each map over horizontal flip x input times 0.9/1.0/1.1 (6 passes; classes from the plain one).")
@click.option("--eigen-smooth", is_flag=True,
              help="Map = first principal component of the weighted activations instead of their sum.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def explain(inputs, out_dir, top, classes, target_unit, threshold, labels_csv, batch_size, precision, alpha,
            colormap, quality, save_raw, no_recursive, extensions, null, max_pixels, jsonl, resume, shard, dry_run,
            methods, scorecam_batch, scorecam_channels, aug_smooth, eigen_smooth, quiet, **model_params) -> None:
    """Explain images with Grad-CAM: overlays for each image's top classes, plus predictions.json.

    INPUTS are image files, folders (searched recursively), glob patterns, or '-'
    to read paths from stdin, one per line.
    """
    from gradcam_cli.run.settings import RunSettings

    if target_unit is not None:
        if classes:
            raise click.UsageError("give either --class or --target-unit, not both")
        classes = (str(target_unit),)
    shard_kn = _parse_shard(shard)
    refs = _inputs(inputs, no_recursive, extensions, null, shard_kn)
    settings = RunSettings(
        model=model_settings(model_params, precision), methods=tuple(methods), top=top, classes=tuple(classes),
        threshold=threshold, labels_csv=None if labels_csv is None else os.path.abspath(labels_csv), alpha=alpha,
        colormap=colormap, quality=quality, save_raw=save_raw, max_pixels=max_pixels,
        scorecam_batch=scorecam_batch, scorecam_channels=scorecam_channels, aug_smooth=aug_smooth,
        eigen_smooth=eigen_smooth,
    )
    if dry_run:
        _dry_run(settings, refs, jsonl)
        return
    summary = _run(settings, refs, out_dir, batch_size, resume, shard_kn, jsonl, quiet)
    _report(summary, quiet)
    sys.exit(EXIT_SOME_FAILED if summary.failed else EXIT_OK)


def _parse_shard(shard: str | None) -> tuple[int, int] | None:
    from gradcam_cli.io.discover import parse_shard

    if shard is None:
        return None
    try:
        return parse_shard(shard)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--shard'") from None


def _inputs(inputs, no_recursive, extensions, null, shard):
    from gradcam_cli.io.discover import DEFAULT_EXTENSIONS, in_shard, iter_inputs

    if null and "-" not in inputs:
        raise click.UsageError("--null only applies when '-' (paths on stdin) is among the inputs")
    exts = tuple(e if e.startswith(".") else f".{e}" for e in extensions) or DEFAULT_EXTENSIONS
    refs = [
        ref
        for ref in iter_inputs(inputs, recursive=not no_recursive, extensions=exts, stdin=sys.stdin, null=null)
        if shard is None or in_shard(ref, *shard)
    ]
    if not refs:
        click.echo(f"gradcam: no images found in {' '.join(inputs)}", err=True)
    return refs


def _run(settings, refs, out_dir, batch_size, resume, shard, jsonl, quiet):
    """Check what can be checked, load the model, run the folder; return the summary."""
    from gradcam_cli.io.writers import check_writable
    from gradcam_cli.run.settings import RunOptions

    labels = None
    if settings.labels_csv is not None:
        from gradcam_cli.io.labels_csv import load_labels_csv

        with errors():
            labels = load_labels_csv(settings.labels_csv)
    with errors():
        check_writable(out_dir)
    cam = make_cam(settings.model)
    from gradcam_cli.engine.cam import auto_batch_size
    from gradcam_cli.run.folder import run_folder

    with errors():
        cam.resolve_classes(settings.classes)
        truth = {path: cam.class_names.resolve(label, cam.split.num_classes) for path, label in (labels or {}).items()}
    options = RunOptions(out_dir=out_dir, batch_size=auto_batch_size() if batch_size == "auto" else batch_size,
                         resume=resume, shard=shard)
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
        with errors():
            return run_folder(cam, refs, settings, options, truth=truth, on_record=on_record)
    finally:
        bar.close()


def _report(summary, quiet: bool) -> None:
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


def _dry_run(settings, refs, as_jsonl) -> None:
    """Resolve everything a run would use without loading weights (a backbone's graph is built
    with random initialisation only, to check the target layer and pick the engine path)."""
    cam = make_cam_without_weights(settings.model)
    from gradcam_cli.engine.cam import engine_description

    profile, split = cam.profile, cam.split
    weights = settings.model.weights
    described = {
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
    for key, value in described.items():
        click.echo(f"{key}: {value}", err=True)
    for ref in refs:
        click.echo(json.dumps({"path": ref.path, "out_stem": ref.out_stem}, ensure_ascii=False) if as_jsonl else ref.path)
