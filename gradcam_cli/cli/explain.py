"""`gradcam explain`: the main job. Flags -> typed settings -> the folder runner."""

from __future__ import annotations

import contextlib
import json
import sys

import click

from gradcam_cli.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_SOME_FAILED,
    class_names_before_loading,
    discover_inputs,
    errors,
    make_cam,
    make_cam_without_weights,
    parse_shard_option,
    precheck_out,
    quiet_tensorflow,
)
from gradcam_cli.cli.interrupt import run_stopping_cleanly
from gradcam_cli.cli.main import main
from gradcam_cli.cli.options import (
    batch_size_value,
    depth_options,
    depth_settings,
    engine_options,
    input_options,
    io_threads_option,
    method_option,
    method_options,
    method_settings,
    model_options,
    model_settings,
    output_settings,
    overlay_options,
    picture_options,
    quiet_option,
    target_options,
    unit_interval,
)
from gradcam_cli.cli.targets import check_mask_sizes, target_settings
from gradcam_cli.cli.video import video_options
from gradcam_cli.io.discover import DEFAULT_EXTENSIONS
from gradcam_cli.settings import DEFAULT_BATCH, DEFAULT_TOP, PRECISIONS, RunOptions, RunSettings


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", default="gradcam_out", show_default=True, type=click.Path(),
              help="Output folder: overlays mirror the input tree; predictions.json(l) at its top.")
@model_options
@click.option("-n", "--top", default=DEFAULT_TOP, show_default=True, type=click.IntRange(1, 1000),
              help="Explain each image's N most probable classes.")
@click.option("-c", "--class", "classes", multiple=True,
              help="Explain this class instead (index or name, case-insensitive); repeatable.")
@target_options
@click.option("--target-unit", default=None, type=click.IntRange(0),
              help="Explain this output unit (regression or any scalar output); like --class INDEX.")
@click.option("--threshold", default=None, type=float, callback=unit_interval,
              help="Multi-label: keep only the labels at least this probable (of the top N).")
@click.option("--labels-csv", default=None, type=click.Path(),
              help="Test-set mode: a CSV of path,label. Adds the true label and its map to each image, and "
                   "top-1 / top-5 accuracy and the misclassified images to the summary.")
@click.option("--batch-size", default=str(DEFAULT_BATCH), show_default=True, callback=batch_size_value,
              help="Images per batch, or 'auto': the largest that fits on the GPU (16 on the CPU). "
                   "On out-of-memory the batch is halved and no image is lost.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=PRECISIONS[0], show_default=True,
              help="'mixed': float16 compute (for GPUs with tensor cores); maps stay float32.")
@overlay_options
@depth_options
@input_options
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
@method_option("Repeatable: several methods come from one forward and backward pass, and their files are named "
               "NAME.METHOD.jpg.")
@method_options
@picture_options
@io_threads_option
@engine_options
@video_options
@click.option("--report", "make_report", is_flag=True, help="Also write OUT/report.html (see `gradcam report`).")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(file_okay=False), default=None,
              help="Also log the finished run to TensorBoard in DIR (as `gradcam export OUT --to tensorboard`).")
@quiet_option
def explain(**params) -> None:
    """Explain images with Grad-CAM: overlays for each image's top classes, plus predictions.json.

    INPUTS are image or video files, folders (searched recursively), glob patterns, or '-'
    to read paths from stdin, one per line. Each video gets overlay videos and per-frame
    records (docs/video.md).

    Ctrl-C (or SIGTERM) finishes the batches in flight, writes predictions.json for what
    is done and exits 130 (143); rerun with --resume to go on.

    \b
    Example:
      gradcam explain photos/ --out heat/ --top 3 --method gradcam --method layercam --grid --report
    """
    run_stopping_cleanly(lambda stop: _explain(stop, params))


def _explain(stop, p: dict) -> int:
    """The command's work (``p``: the command's parameters); returns the exit code."""
    if p["tensorboard_dir"] is not None:  # its extra is checked first: before the inputs are walked
        from gradcam_cli.trackers import require

        with errors():
            require("tensorboard")
    classes = p["classes"]
    if p["target_unit"] is not None:
        if classes:
            raise click.UsageError("give either --class or --target-unit, not both")
        classes = (str(p["target_unit"]),)
    shard = parse_shard_option(p["shard"])
    ray_options = _ray_options(p["engine"], p["ray_address"], p["workers"], p["gpus_per_worker"], p["cpus_per_worker"])
    targets = target_settings(p, classes, tuple(p["methods"]))
    settings = RunSettings(
        model=model_settings(p, p["precision"]), targets=targets,
        methods=tuple(p["methods"]), method_options=method_settings(p), outputs=output_settings(p),
        max_pixels=p["max_pixels"], depth=depth_settings(p),
    )
    from gradcam_cli.cli.video import video_model_run
    from gradcam_cli.cli.volumes import slice_refs, volume_run

    code = video_model_run(stop, p, settings, shard)  # a video model's run (videos in, rank-5 model), or None
    if code is not None:
        return code
    code = volume_run(stop, p, settings, shard, ray_options)  # a 3-D model's run, or None: images
    if code is not None:
        if code in (EXIT_OK, EXIT_SOME_FAILED) and p["tensorboard_dir"] is not None and not p["dry_run"]:
            _tensorboard(p, shard)
        return code
    from gradcam_cli.cli.video import split_videos, video_extensions, video_settings

    video, axis = video_settings(p), settings.depth.slice_axis
    exts = (*(p["extensions"] or DEFAULT_EXTENSIONS), ".nii", ".gz") if axis is not None else \
        video_extensions(p["extensions"])
    refs = discover_inputs(p["inputs"], p["no_recursive"], exts, p["null"], None if axis is not None else shard,
                           p["out_dir"])
    if axis is not None:  # a 2-D model on volumes: each NIfTI input becomes its slices
        refs = slice_refs(refs, axis, shard)
    check_mask_sizes(targets, refs)
    labels = _precheck(settings, None if p["dry_run"] else p["out_dir"], shard)
    if p["dry_run"]:
        return _dry_run(stop, settings, refs, p["jsonl"])
    videos, refs = split_videos(refs, p, settings, ray_options is not None)
    options = RunOptions(out_dir=p["out_dir"], batch_size=p["batch_size"], workers=p["io_threads"], resume=p["resume"],
                         shard=shard)
    with contextlib.ExitStack() as cluster:
        if ray_options is not None:  # joined and the pool planned before the model loads and --out is made
            from gradcam_cli.run.ray_engine import cluster_nodes, connected, plan_pool

            with errors():
                cluster.enter_context(connected(ray_options))
                size = options.batch_size
                plan_pool(cluster_nodes(), ray_options, (-(-len(refs) // size) if isinstance(size, int) else len(refs))
                          + len(videos))  # a video is a task of its own
        summary = _run(stop, settings, options, refs, labels, {**p, "videos": videos, "video": video}, ray_options)
    if stop.pipe_closed:  # the consumer of --jsonl is done: keep quiet
        return EXIT_BROKEN_PIPE
    code = stop.interrupted_exit(summary)
    if code is not None:
        return code
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
    if p["tensorboard_dir"] is not None:
        _tensorboard(p, shard)
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def _tensorboard(p: dict, shard) -> None:
    from gradcam_cli.run.naming import JSON_NAME, result_names
    from gradcam_cli.trackers.export import ExportTarget, export_run

    with errors():
        where = export_run(p["out_dir"], ExportTarget("tensorboard", log_dir=p["tensorboard_dir"]),
                           result_names(shard)[JSON_NAME])
    if not p["quiet"]:
        click.echo(f"gradcam: TensorBoard log in {where}", err=True)


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


def _precheck(settings, out_dir, shard) -> dict | None:
    """Everything that can be checked before the model loads: the output folder (nothing is created),
    the class names (--class, --labels, the labels CSV's labels) when they are known without
    the model. Returns the labels CSV (real path -> label), or None."""
    if out_dir is not None:
        precheck_out(out_dir, None if shard is None else f"{shard[0]}-of-{shard[1]}", lock=True)
    labels = None
    with errors():
        if settings.targets.labels_csv is not None:
            from gradcam_cli.io.labels_csv import load_labels_csv

            labels = load_labels_csv(settings.targets.labels_csv)
        names = class_names_before_loading(settings.model)
        if names is not None and settings.targets.kind != "similarity":  # similarity's classes are its references
            for token in settings.targets.classes:
                names.resolve(token)
            for label in sorted(set((labels or {}).values())):
                names.resolve(label)
    return labels


def _run(stop, settings: RunSettings, options: RunOptions, refs: list, labels: dict | None, ui: dict,
         ray_options=None):
    """Load the model and run the folder (created now; here, or on Ray); return the summary.
    ``options.batch_size`` may still be 'auto'; ``ui``: the command's ``jsonl`` and ``quiet`` flags."""
    from dataclasses import replace

    from gradcam_cli.cli.progress import Progress

    if ray_options is not None:
        from gradcam_cli.run.ray_engine import keep_driver_off_gpus

        quiet_tensorflow()
        keep_driver_off_gpus()
    cam = make_cam(settings.model, settings.methods, settings.targets)
    from gradcam_cli.cam import auto_batch_size
    from gradcam_cli.run.folder import run_folder
    from gradcam_cli.run.memory import keep_large_blocks

    if ray_options is None:  # the driver of a Ray run decodes nothing; its actors do this themselves
        keep_large_blocks()  # big photos' buffers reused, not page-faulted in anew per image

    with errors():
        cam.resolve_classes(settings.targets.classes)
        truth = {path: cam.class_names.resolve(label, cam.split.num_classes) for path, label in (labels or {}).items()}
    if options.batch_size == "auto":
        options = replace(options, batch_size=auto_batch_size())
    jsonl, quiet = ui["jsonl"], ui["quiet"]
    videos = ui.get("videos") or []
    progress = Progress(len(refs) + len(videos), quiet)

    def on_record(record: dict) -> None:
        progress.update(1)
        if record["status"] != "ok":
            progress.write(f"gradcam: skipped {record['path']}: {record['message']}")
        for warning in record.get("warnings", ()):
            progress.write(f"gradcam: warning: {record['path']}: {warning}")
        if jsonl and not stop.pipe_closed:
            try:
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                stop.close_stdout()

    with stop.during_run(progress), errors():
        if videos:  # the videos first, with the same model and compiled pass (cli/video.py)
            from gradcam_cli.cli.video import add_up, explain_videos

            first = explain_videos(cam, videos, settings, ui["video"], options, on_record, stop, ray_options)
            if not refs or stop.signum is not None or stop.pipe_closed:
                return first
        if ray_options is None:
            summary = run_folder(cam, refs, settings, options, truth=truth, on_record=on_record, stop=stop)
        else:
            from gradcam_cli.run.ray_engine import run_ray

            summary = run_ray(cam, refs, settings, options, ray_options, truth=truth, on_record=on_record,
                              stop=stop)
        return add_up(first, summary) if videos else summary


def _report(summary, quiet: bool) -> None:
    if summary.cleared:
        click.echo(f"gradcam: {summary.out_dir} held an earlier run: its {summary.cleared} files were removed "
                   "first (--resume keeps and completes a run instead)", err=True)
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
    cam = make_cam_without_weights(settings.model, settings.targets)
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
    if settings.targets.kind != "class" or settings.targets.sidecar:  # docs/targets.md
        from gradcam_cli.cam_targets import TARGET_ENGINE

        described.update(target=settings.targets.kind, engine=TARGET_ENGINE)
    for key, value in described.items():
        click.echo(f"{key}: {value}", err=True)
    try:
        for ref in refs:
            frame = {} if ref.frame is None else {"frame": ref.frame}  # a DICOM stack's frame
            click.echo(json.dumps({"path": ref.path, **frame, "out_stem": ref.out_stem}, ensure_ascii=False)
                       if as_jsonl else ref.path + (f" (frame {ref.frame})" if ref.frame is not None else ""))
    except BrokenPipeError:
        stop.close_stdout()
        return EXIT_BROKEN_PIPE
    return EXIT_OK
