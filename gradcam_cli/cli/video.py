"""`explain` on video files: the frame options, the checks made before the model loads, and the
video part of a run (videos first, then the images of the same inputs, with the same model)."""

from __future__ import annotations

import functools

import click


def video_options(command):
    """``--frame-stride``, ``--max-frames``, ``--start``, ``--end``, ``--temporal-smooth``."""
    options = [
        click.option("--frame-stride", default=1, show_default=True, type=click.IntRange(1),
                     help="Videos: explain every Nth frame (the overlay videos play at the frame rate / N)."),
        click.option("--max-frames", default=None, type=click.IntRange(1),
                     help="Videos: explain at most this many frames of each video."),
        click.option("--start", "video_start", default=None, type=click.FloatRange(0), metavar="SECONDS",
                     help="Videos: start at this time (seconds)."),
        click.option("--end", "video_end", default=None, type=click.FloatRange(0, min_open=True), metavar="SECONDS",
                     help="Videos: stop after this time (seconds)."),
        click.option("--temporal-smooth", default=None, type=click.FloatRange(0, 1, min_open=True), metavar="A",
                     help="Videos: smooth each class's map over time, S_t = A * M_t + (1 - A) * S_t-1 "
                          "(1: no smoothing)."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), command)


def video_settings(p: dict):
    from gradcam_cli.settings import VideoSettings

    try:
        return VideoSettings(stride=p["frame_stride"], max_frames=p["max_frames"], start=p["video_start"],
                             end=p["video_end"], smooth=p["temporal_smooth"])
    except ValueError as exc:
        raise click.UsageError(f"--start / --end: {exc}") from None


def video_extensions(extensions) -> tuple:
    """What a walk takes: ``--ext`` as given, else the image extensions and the video ones."""
    from gradcam_cli.io.discover import DEFAULT_EXTENSIONS
    from gradcam_cli.io.video import VIDEO_EXTENSIONS

    return tuple(extensions) or (*DEFAULT_EXTENSIONS, *VIDEO_EXTENSIONS)


def split_videos(refs: list, p: dict, settings, ray: bool) -> tuple[list, list]:
    """(videos, images) of the run's inputs; what videos cannot take is a usage error (exit 2), before
    the model loads."""
    from gradcam_cli.io.video import is_video

    videos = [ref for ref in refs if is_video(ref.path)]
    if not videos:
        return [], refs
    refused = [("--labels-csv", settings.targets.labels_csv is not None),
               (f"--target {settings.targets.kind}", settings.targets.kind != "class"),
               ("--sidecar", bool(settings.targets.sidecar)), ("--method guided", "guided" in settings.methods),
               ("--tensorboard", p.get("tensorboard_dir") is not None)]
    for flag, given in refused:
        if given:
            raise click.UsageError(f"{flag} applies to images, and the inputs hold videos ({videos[0].path}); "
                                   "explain the videos in a run without it")
    return videos, [ref for ref in refs if not is_video(ref.path)]


def explain_videos(cam, videos: list, settings, video, options, on_record, stop, ray_options=None):
    """The videos' run (``videos.json``), on the local engine or on Ray (one video per task); the summary."""
    if ray_options is not None:
        from gradcam_cli.run.ray_video import run_ray_videos

        return run_ray_videos(cam, videos, settings, video, options, ray_options, on_record=on_record, stop=stop)
    from gradcam_cli.run.video import run_videos

    return run_videos(cam, videos, settings, video, options, on_record=on_record, stop=stop)


def add_up(first, second):
    """Two runs' summaries as one (the videos' and the images' of one command)."""
    for name in ("done", "failed", "resumed", "records", "total", "earlier", "replaced", "cleared"):
        setattr(second, name, getattr(first, name) + getattr(second, name))
    second.interrupted = first.interrupted or second.interrupted
    return second


def video_model_run(stop, p: dict, settings, shard) -> int | None:
    """The exit code of a video model's run (input (batch, T, H, W, C) and the inputs hold videos), or
    None (an image or volume run). Decided before the model loads, from the saved model's input rank."""
    from gradcam_cli.io.discover import in_shard, iter_inputs
    from gradcam_cli.io.video import VIDEO_EXTENSIONS
    from gradcam_cli.models.input_rank import saved_input_rank

    if saved_input_rank(settings.model.model) != 5:
        return None
    found = list(iter_inputs(p["inputs"], recursive=not p["no_recursive"], extensions=VIDEO_EXTENSIONS,
                             skip=(p["out_dir"],)))
    refs = [ref for ref in found if ref.path.lower().endswith(VIDEO_EXTENSIONS)]
    if not refs:
        return None
    from gradcam_cli.cli.common import precheck_out
    from gradcam_cli.cli.volumes import check_whole_input_run

    check_whole_input_run(p, "a video model's run writes overlay videos and frame records")
    if p["engine"] != "local":
        raise click.UsageError("--engine ray runs videos through 2-D image models; a video model's run is local: "
                               "drop it (--shard splits the videos across machines)")
    split_videos(refs, p, settings, False)
    refs = [ref for ref in refs if shard is None or in_shard(ref, *shard)]
    if p["dry_run"]:
        for ref in refs:
            click.echo(ref.path)
        return 0
    precheck_out(p["out_dir"], None if shard is None else f"{shard[0]}-of-{shard[1]}", lock=True)
    return _video_model(stop, p, settings, shard, refs)


def _video_model(stop, p: dict, settings, shard, refs) -> int:
    from gradcam_cli.cli.common import errors, quiet_tensorflow
    from gradcam_cli.cli.volumes import finish_run
    from gradcam_cli.cli.progress import Progress
    from gradcam_cli.run.video import run_videos
    from gradcam_cli.run.volumes import load_volume_model
    from gradcam_cli.settings import RunOptions

    quiet_tensorflow()
    with errors():
        vm = load_volume_model(settings)
    if any(n is None for n in vm.size):
        raise click.UsageError(f"the video model takes clips of shape {vm.size} (frames, height, width): a video "
                               "model needs a fixed number of frames and size")
    progress = Progress(len(refs), p["quiet"])

    def on_record(record: dict) -> None:
        progress.update(1)
        if record["status"] != "ok":
            progress.write(f"gradcam: skipped {record['path']}: {record['message']}")

    options = RunOptions(out_dir=p["out_dir"], batch_size=1, resume=p["resume"], shard=shard, workers=p["io_threads"])
    with stop.during_run(progress), errors():
        summary = run_videos(vm, refs, settings, video_settings(p), options, on_record=on_record, stop=stop)
    return finish_run(stop, p, summary, shard, "videos")
