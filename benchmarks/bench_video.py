#!/usr/bin/env python
"""Video frames/s against the image-folder run at the same frame size, model and top-N, side by side.

The same N frames (a moving square on noise, WIDTH x HEIGHT) are written twice: as N JPEG files
(quality 95) and as one MJPG .avi (OpenCV's writer: each frame a JPEG). One loaded
:class:`~gradcam_cli.cam.GradCAM` (MobileNetV2 at 224, random weights: no download; its cost is the
real network's) explains both in the same process: the image folder through
:func:`gradcam_cli.run.folder.run_folder` (overlay JPEGs, records), the video through
:func:`gradcam_cli.run.video.run_videos` (overlay video, frame records, strip), same batch size
and top-N. Runs alternate (image, video, video, image, ...) into fresh folders, so the ratio holds on a
busy machine; frames/s = N / wall time of the run (decode, model, drawing, writing).

    python benchmarks/bench_video.py          # -> benchmarks/results/video.md (and JSON on stdout)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "video.md"
sys.path.insert(0, str(REPO))


def frames(n: int, width: int, height: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        frame = rng.integers(60, 180, (height, width, 3), dtype=np.uint8)
        x0 = (i * 7) % (width - 64)
        frame[40:104, x0:x0 + 64] = (230, 40, 40)
        out.append(frame)
    return out


def write_inputs(root: pathlib.Path, clip: list[np.ndarray]) -> tuple[pathlib.Path, pathlib.Path]:
    import cv2

    images = root / "images"
    images.mkdir(parents=True)
    for i, frame in enumerate(clip):
        cv2.imwrite(str(images / f"f{i:04d}.jpg"), frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    video = root / "video" / "clip.avi"
    video.parent.mkdir()
    height, width = clip[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
    for frame in clip:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return images, video


def measure(n: int, width: int, height: int, top: int, batch: int, rounds: int) -> dict:
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.io.discover import InputRef, iter_inputs
    from gradcam_cli.run.folder import run_folder
    from gradcam_cli.run.video import run_videos
    from gradcam_cli.settings import RunOptions, RunSettings, TargetSettings, VideoSettings

    root = pathlib.Path(tempfile.mkdtemp(prefix="bench-video-"))
    try:
        images, video = write_inputs(root, frames(n, width, height))
        cam = GradCAM("mobilenet_v2", weights="none")
        settings = RunSettings(targets=TargetSettings(top=top))
        refs = list(iter_inputs([str(images)]))
        vref = [InputRef(str(video), "clip")]

        def run_images(out):
            return run_folder(cam, refs, settings, RunOptions(out_dir=out, batch_size=batch))

        def run_video(out):
            return run_videos(cam, vref, settings, VideoSettings(), RunOptions(out_dir=out, batch_size=batch))

        runs = {"image folder": run_images, "video": run_video}
        for name, fn in runs.items():  # warm: tracing, thread pools, caches
            fn(root / f"warm-{name.replace(' ', '-')}")
        times: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(rounds):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for name in order:
                out = root / f"out-{r}-{name.replace(' ', '-')}"
                start = time.perf_counter()
                summary = runs[name](out)
                times[name].append(time.perf_counter() - start)
                assert summary.failed == 0 and summary.done == (n if name == "image folder" else 1)
                shutil.rmtree(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    fps = {name: {"best": n / min(t), "median": n / statistics.median(t)} for name, t in times.items()}
    return {"frames": n, "size": [width, height], "top": top, "batch": batch, "rounds": rounds,
            "cpus": len(os.sched_getaffinity(0)), "load": os.getloadavg()[0], "fps": fps,
            "ratio_best": fps["video"]["best"] / fps["image folder"]["best"],
            "ratio_median": fps["video"]["median"] / fps["image folder"]["median"]}


def table(results: list[dict]) -> str:
    first = results[0]
    lines = [
        "# Video frames/s vs the image folder (`bench_video.py`)", "",
        f"MobileNetV2 at 224 (random weights; the real network's cost), batch {first['batch']}, "
        f"{first['frames']} frames, {first['rounds']} alternating rounds per row, {first['cpus']} CPUs, load (1 min) "
        f"{first['load']:.2f} at the end. The same frames as JPEG files (quality 95) and as one MJPG .avi; one "
        "loaded model explains both in one process. Image folder: overlay JPEG per map + records; video: "
        "overlay video per slot + frame records + strip. Best of the rounds is the least disturbed by other load.",
        "", "| frame size | top-N | image folder frames/s, best | median | video frames/s, best | median "
        "| video / images, best | median |", "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f = r["fps"]
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {r['top']} | {f['image folder']['best']:.1f} | "
                     f"{f['image folder']['median']:.1f} | {f['video']['best']:.1f} | {f['video']['median']:.1f} | "
                     f"{r['ratio_best']:.2f}x | {r['ratio_median']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sizes", default="640x360,320x240")
    parser.add_argument("--tops", default="1,3")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        for top in (int(t) for t in args.tops.split(",")):
            results.append(measure(args.frames, width, height, top, args.batch, args.rounds))
            print(json.dumps(results[-1]), flush=True)
    if not args.no_write:
        RESULTS.write_text(table(results))


if __name__ == "__main__":
    main()
