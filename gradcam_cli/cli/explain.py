"""`gradcam explain`: the main job. Flags -> typed settings -> the folder runner."""

from __future__ import annotations

import json
import os
import sys

import click

from gradcam_cli.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_CODES_HELP,
    EXIT_NO_IMAGES,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    CliError,
    class_names_before_loading,
    errors,
    make_cam,
    make_cam_without_weights,
    model_options,
    model_settings,
    quiet_tensorflow,
)
from gradcam_cli.cli.main import main
from gradcam_cli.methods import method_names
from gradcam_cli.settings import (
    BOX_THRESHOLD,
    PRECISIONS,
    BoxSettings,
    GifSettings,
    GridSettings,
    MethodOptions,
    OutputSettings,
    OverlaySettings,
    RunOptions,
    RunSettings,
    TargetSettings,
)


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


def picture_options(command):
    """Grids, GIFs and boxes (the output plug-ins beyond overlays)."""
    options = [
        click.option("--grid", is_flag=True, help="Per image, one JPEG: the original and every overlay, titled."),
        click.option("--grid-columns", default=3, show_default=True, type=click.IntRange(1, 32),
                     help="Tiles per row of --grid."),
        click.option("--grid-tile", default=384, show_default=True, type=click.IntRange(64, 4096),
                     help="Long side of each --grid tile, in pixels."),
        click.option("--gif", is_flag=True, help="Per image, an animated GIF: original, then each overlay, captioned."),
        click.option("--gif-ms", default=800, show_default=True, type=click.IntRange(1, 60000),
                     help="Milliseconds per --gif frame."),
        click.option("--boxes", is_flag=True,
                     help="The paper's localisation box per map: in the records ('box', original pixels) and drawn "
                          "on the overlays."),
        click.option("--box-threshold", default=BOX_THRESHOLD, show_default=True, type=float, callback=_unit_interval,
                     help="--boxes: keep the map above this fraction of its maximum, then its largest segment."),
        click.option("--no-overlays", is_flag=True,
                     help="Write no overlay JPEGs: records, --save-raw maps and other asked outputs only (fastest)."),
        click.option("--overlay-max-side", default=None, type=click.IntRange(16, 65536), metavar="PX",
                     help="Overlays (grids, GIFs) at most PX on their long side (default: the original size); "
                          "large JPEGs are then decoded reduced, several times faster."),
        click.option("--io-threads", default=None, type=click.IntRange(1, 256), metavar="N",
                     help="Decode / write threads (default: one per CPU this process may use, at least 2)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def engine_options(command):
    """Where the job runs: here, or on a Ray cluster (actors with one model each)."""
    options = [
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="'ray': run on a Ray cluster (the [ray] extra: pip install -e '.[ray]' in a clone); same "
                          "outputs, and --resume works across engines. See docs/cluster.md."),
        click.option("--ray-address", default=None, metavar="ADDRESS",
                     help="--engine ray: 'auto' (the cluster this machine belongs to) or ray://host:port; "
                          "default: a local Ray started for the run."),
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="--engine ray: actors, one model each (default: as many as the cluster's GPUs, or CPUs, hold)."),
        click.option("--gpus-per-worker", type=click.FloatRange(0, 64), default=None,
                     help="--engine ray: GPUs per actor (default: 1 when the cluster has GPUs, else 0)."),
        click.option("--cpus-per-worker", type=click.FloatRange(1, 1024), default=None,
                     help="--engine ray: CPUs per actor, and its TensorFlow threads (default: 1 with GPUs, else the CPUs / --workers, at most 4)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", default="gradcam_out", show_default=True, type=click.Path(),
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
@click.option("--precision", type=click.Choice(PRECISIONS), default="float32", show_default=True,
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
              help="Refuse images with more pixels than this (decompression-bomb guard). Default: 178,956,970 "
                   "(Pillow's). One image of P pixels peaks at about 18 P bytes of memory with --top 1 (+3 P per "
                   "extra map): ~3.2 GB at the default; 20,000,000 keeps it near 0.4 GB.")
@click.option("--jsonl", is_flag=True, help="Stream one JSON object per image on stdout as it is done.")
@click.option("--resume", is_flag=True,
              help="Skip images whose outputs in --out are complete; redo the rest (same options required).")
@click.option("--shard", default=None, metavar="K/N",
              help="Take a deterministic 1/N of the inputs (K = 1..N), for N machines or a job array.")
@click.option("--dry-run", is_flag=True,
              help="List the inputs and the resolved backbone, layer and preprocessing; compute nothing.")
@click.option("--method", "methods", multiple=True, default=("gradcam",), show_default=True, callback=_methods,
              metavar="NAME", help=f"CAM method: {', '.join(method_names())} (see docs/methods.md). "
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
@picture_options
@engine_options
@click.option("--report", "make_report", is_flag=True, help="Also write OUT/report.html (see `gradcam report`).")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress (a bar on a terminal; a plain line every 10 s when stderr is a file).")
def explain(**params) -> None:
    """Explain images with Grad-CAM: overlays for each image's top classes, plus predictions.json.

    INPUTS are image files, folders (searched recursively), glob patterns, or '-'
    to read paths from stdin, one per line.

    Ctrl-C (or SIGTERM) finishes the batches in flight, writes predictions.json for what
    is done and exits 130 (143); rerun with --resume to go on.
    """
    from gradcam_cli.cli.interrupt import Interrupted, StopRequest

    stop = StopRequest()
    with stop.installed():
        try:
            code = _explain(stop, params)
        except Interrupted as exc:  # before the run started, or a second signal
            click.echo("gradcam: interrupted; rerun with --resume", err=True)
            code = 128 + exc.signum
    sys.exit(code)


def _explain(stop, p: dict) -> int:
    """The command's work (``p``: the command's parameters); returns the exit code."""
    classes = p["classes"]
    if p["target_unit"] is not None:
        if classes:
            raise click.UsageError("give either --class or --target-unit, not both")
        classes = (str(p["target_unit"]),)
    shard = _parse_shard(p["shard"])
    ray_options = _ray_options(p["engine"], p["ray_address"], p["workers"], p["gpus_per_worker"], p["cpus_per_worker"])
    refs = _inputs(p["inputs"], p["no_recursive"], p["extensions"], p["null"], shard)
    labels_csv = p["labels_csv"]
    settings = RunSettings(
        model=model_settings(p, p["precision"]),
        targets=TargetSettings(top=p["top"], classes=tuple(classes), threshold=p["threshold"],
                               labels_csv=None if labels_csv is None else os.path.abspath(labels_csv)),
        methods=tuple(p["methods"]),
        method_options=MethodOptions(scorecam_batch=p["scorecam_batch"], scorecam_channels=p["scorecam_channels"],
                                     aug_smooth=p["aug_smooth"], eigen_smooth=p["eigen_smooth"]),
        outputs=OutputSettings(
            overlay=OverlaySettings(alpha=p["alpha"], colormap=p["colormap"], quality=p["quality"],
                                    max_side=p["overlay_max_side"], enabled=not p["no_overlays"]),
            raw=p["save_raw"], boxes=BoxSettings(enabled=p["boxes"], threshold=p["box_threshold"]),
            grid=GridSettings(enabled=p["grid"], columns=p["grid_columns"], tile=p["grid_tile"]),
            gif=GifSettings(enabled=p["gif"], ms=p["gif_ms"]),
        ),
        max_pixels=p["max_pixels"],
    )
    labels = _precheck(settings, None if p["dry_run"] else p["out_dir"], shard)
    if p["dry_run"]:
        return _dry_run(stop, settings, refs, p["jsonl"])
    summary = _run(stop, settings, refs, labels, p["out_dir"], (p["batch_size"], p["io_threads"]), p["resume"], shard,
                   p["jsonl"], p["quiet"], ray_options)
    if stop.pipe_closed:  # the consumer of --jsonl is done: keep quiet
        return EXIT_BROKEN_PIPE
    if stop.signum is not None:
        click.echo(f"gradcam: interrupted after {summary.records} of {summary.total} images; rerun with --resume",
                   err=True)
        return 128 + stop.signum
    if summary.earlier or summary.replaced:
        replaced = (f"; {summary.replaced} earlier images whose output files this run overwrote are left out"
                    if summary.replaced else "")
        click.echo(f"gradcam: --resume: predictions.json also lists {summary.earlier} images of earlier runs "
                   f"that are not among these inputs, after this run's{replaced}", err=True)
    _report(summary, p["quiet"])
    if p["make_report"]:
        from gradcam_cli.report import build_report
        from gradcam_cli.run.naming import JSON_NAME, result_names

        with errors():
            path = build_report(p["out_dir"], result_names(shard)[JSON_NAME])
        if not p["quiet"]:
            click.echo(f"gradcam: report in {path}", err=True)
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def _ray_options(engine, address, workers, gpus, cpus):
    """The Ray engine's options (None for the local engine); Ray must be importable (exit 2 otherwise)."""
    if engine == "local":
        given = [flag for flag, value in (("--ray-address", address), ("--workers", workers),
                                          ("--gpus-per-worker", gpus), ("--cpus-per-worker", cpus)) if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to --engine ray")
        return None
    from gradcam_cli.run.ray_engine import RayOptions, require_ray

    with errors():
        require_ray()
    return RayOptions(address=address, workers=workers, gpus_per_worker=gpus, cpus_per_worker=cpus)


def _parse_shard(shard: str | None) -> tuple[int, int] | None:
    from gradcam_cli.io.discover import parse_shard

    if shard is None:
        return None
    try:
        return parse_shard(shard)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--shard'") from None


def _inputs(inputs, no_recursive, extensions, null, shard):
    """The run's inputs, checked before anything is loaded: a path that does not exist is a usage
    error; no image at all (before --shard) ends the command with EXIT_NO_IMAGES."""
    from gradcam_cli.io.discover import DEFAULT_EXTENSIONS, in_shard, iter_inputs, missing_arguments

    if null and "-" not in inputs:
        raise click.UsageError("--null only applies when '-' (paths on stdin) is among the inputs")
    missing = missing_arguments(inputs)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CliError(f"input {missing[0]} does not exist{more}; check the path", EXIT_USAGE)
    exts = tuple(e if e.startswith(".") else f".{e}" for e in extensions) or DEFAULT_EXTENSIONS
    refs = list(iter_inputs(inputs, recursive=not no_recursive, extensions=exts, stdin=sys.stdin, null=null))
    if not refs:
        where = "stdin" if list(inputs) == ["-"] else " ".join(inputs)
        raise CliError(f"no images found in {where} (looked for {' '.join(exts)}; --ext adds others)",
                       EXIT_NO_IMAGES)
    return [ref for ref in refs if shard is None or in_shard(ref, *shard)]


def _precheck(settings, out_dir, shard) -> dict | None:
    """Everything that can be checked before the model loads: the output folder (nothing is created),
    the class names (--class, --labels, the labels CSV's labels) when they are known without
    the model. Returns the labels CSV (real path -> label), or None."""
    from gradcam_cli.io import writers

    labels = None
    with errors():
        if out_dir is not None:
            writers.check_creatable(out_dir)
            if os.path.isdir(out_dir):
                writers.FolderLock(out_dir, None if shard is None else f"{shard[0]}-of-{shard[1]}").check_free()
        if settings.targets.labels_csv is not None:
            from gradcam_cli.io.labels_csv import load_labels_csv

            labels = load_labels_csv(settings.targets.labels_csv)
        names = class_names_before_loading(settings.model)
        if names is not None:
            for token in settings.targets.classes:
                names.resolve(token)
            for label in sorted(set((labels or {}).values())):
                names.resolve(label)
    return labels


def _run(stop, settings, refs, labels, out_dir, sizes, resume, shard, jsonl, quiet, ray_options=None):
    """Load the model and run the folder (created now; here, or on Ray); return the summary.
    ``sizes``: (batch size, I/O threads)."""
    batch_size, io_threads = sizes
    from gradcam_cli.cli.progress import Progress

    if ray_options is not None:
        from gradcam_cli.run.ray_engine import keep_driver_off_gpus

        quiet_tensorflow()
        keep_driver_off_gpus()
    cam = make_cam(settings.model)
    from gradcam_cli.cam import auto_batch_size
    from gradcam_cli.run.folder import run_folder
    from gradcam_cli.run.memory import keep_large_blocks

    if ray_options is None:  # the driver of a Ray run decodes nothing; its actors do this themselves
        keep_large_blocks()  # big photos' buffers reused, not page-faulted in anew per image

    with errors():
        cam.resolve_classes(settings.targets.classes)
        truth = {path: cam.class_names.resolve(label, cam.split.num_classes) for path, label in (labels or {}).items()}
    options = RunOptions(out_dir=out_dir, batch_size=auto_batch_size() if batch_size == "auto" else batch_size,
                         workers=io_threads,
                         resume=resume, shard=shard)
    progress = Progress(len(refs), quiet)

    def on_record(record: dict) -> None:
        progress.update(1)
        if record["status"] != "ok":
            progress.write(f"gradcam: skipped {record['path']}: {record['message']}")
        if jsonl and not stop.pipe_closed:
            try:
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                stop.close_stdout()

    stop.running = True
    try:
        with errors():
            if ray_options is None:
                return run_folder(cam, refs, settings, options, truth=truth, on_record=on_record, stop=stop)
            from gradcam_cli.run.ray_engine import run_ray

            return run_ray(cam, refs, settings, options, ray_options, truth=truth, on_record=on_record)
    finally:
        stop.running = False
        progress.close()


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


def _dry_run(stop, settings, refs, as_jsonl) -> int:
    """Resolve everything a run would use without loading weights (a backbone's graph is built
    with random initialisation only, to check the target layer and pick the engine path)."""
    cam = make_cam_without_weights(settings.model)
    from gradcam_cli.cam import engine_description

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
    try:
        for ref in refs:
            click.echo(json.dumps({"path": ref.path, "out_stem": ref.out_stem}, ensure_ascii=False) if as_jsonl
                       else ref.path)
    except BrokenPipeError:
        stop.close_stdout()
        return EXIT_BROKEN_PIPE
    return EXIT_OK
