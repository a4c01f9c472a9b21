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
    refused = [("--engine ray", ray), ("--labels-csv", settings.targets.labels_csv is not None),
               (f"--target {settings.targets.kind}", settings.targets.kind != "class"),
               ("--sidecar", bool(settings.targets.sidecar)), ("--method guided", "guided" in settings.methods)]
    for flag, given in refused:
        if given:
            raise click.UsageError(f"{flag} applies to images, and the inputs hold videos ({videos[0].path}); "
                                   "explain the videos in a run without it")
    return videos, [ref for ref in refs if not is_video(ref.path)]


def explain_videos(cam, videos: list, settings, video, options, on_record, stop):
    """The videos' run (``videos.json``); the summary."""
    from gradcam_cli.run.video import run_videos

    return run_videos(cam, videos, settings, video, options, on_record=on_record, stop=stop)


def add_up(first, second):
    """Two runs' summaries as one (the videos' and the images' of one command)."""
    for name in ("done", "failed", "resumed", "records", "total", "earlier", "replaced", "cleared"):
        setattr(second, name, getattr(first, name) + getattr(second, name))
    second.interrupted = first.interrupted or second.interrupted
    return second
