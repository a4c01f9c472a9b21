"""`explain` on video files: frames through the image run's compiled pass, overlay videos out.

One video at a time. Its kept frames (:class:`~gradcam_cli.io.video.VideoReader`) are decoded,
resized and normalised one batch ahead in an I/O thread, explained by the same
:meth:`GradCAM.explain_prepared` call (so the same compiled explainer) an image batch of the run
uses, optionally smoothed over time (:class:`Smoother`), and drawn in another thread onto one
overlay video per explained slot and method (:class:`~gradcam_cli.io.writers.VideoFile`: a temp
file renamed into place when the video is done). Per video: ``STEM.frames.jsonl`` (one record
per frame), the overlay videos ``STEM.top1-CLASS.mp4``, a strip of frames ``STEM.top1-CLASS.strip.jpg``,
and one summary record in ``videos.jsonl`` / ``videos.json`` through the shared
:class:`~gradcam_cli.run.journal.RunJournal`: a video is logged only once all its files are in
place, so ``--resume`` redoes at most the video a killed run was on, and ``--shard`` splits by video.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from gradcam_cli._version import __version__
from gradcam_cli.errors import ImageError
from gradcam_cli.io import writers
from gradcam_cli.io.video import FrameRange, VideoReader
from gradcam_cli.run.journal import JournalFiles, RunJournal, Summary, recorded_settings
from gradcam_cli.run.naming import map_name, method_name
from gradcam_cli.run.step import error_record
from gradcam_cli.settings import RunOptions, RunSettings, VideoSettings

if TYPE_CHECKING:
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.io.discover import InputRef

#: frames shown in a video's strip (the report's row of frames), evenly spread over the video
STRIP_FRAMES = 8
STRIP_HEIGHT = 96


def video_files(shard: tuple[int, int] | None) -> JournalFiles:
    """``videos.json``, ``videos.jsonl``, ``.gradcam-videos.json``; ``videos.2-of-4.json`` ... for shard 2/4."""
    tag = "" if shard is None else f".{shard[0]}-of-{shard[1]}"
    return JournalFiles(f"videos{tag}.json", f"videos{tag}.jsonl", f".gradcam-videos{tag}.json")


class Smoother:
    """``--temporal-smooth a``: per method and class, S_t = a * M_t + (1 - a) * S_prev, where S_prev is
    that class's smoothed map in the previous explained frame; a class not explained there starts
    afresh (S_t = M_t). a = 1 (or None) leaves the maps as they are."""

    def __init__(self, alpha: float | None):
        self.alpha, self.previous = alpha, {}

    def __call__(self, result) -> dict[str, np.ndarray]:
        if self.alpha is None:
            return dict(result.maps_by_method)
        a, now, out = float(self.alpha), {}, {}
        for method, maps in result.maps_by_method.items():
            smoothed = []
            for p, cam in zip(result.predictions, maps):
                prev = self.previous.get((method, p.class_index))
                value = cam if prev is None else (a * cam + (1.0 - a) * prev).astype(np.float32)
                now[(method, p.class_index)] = value
                smoothed.append(value)
            out[method] = np.stack(smoothed) if smoothed else maps
        self.previous = now
        return out


def prepare_chunk(frames, size: int, profile) -> tuple[list, np.ndarray | None]:
    """The next ``size`` frames and their model input (the image run's resize and normalise)."""
    from gradcam_cli.io.preprocess import as_model_sees, normalise, resize

    chunk = list(itertools.islice(frames, size))
    if not chunk:
        return chunk, None
    return chunk, np.stack([normalise(resize(as_model_sees(f.rgb, profile), profile.input_size), profile)
                            for f in chunk])


class Clip:
    """One video's outputs while it is explained: overlay writers, frame records, strip candidates."""

    def __init__(self, step: "VideoStep", ref: InputRef, reader: VideoReader):
        self.step, self.ref, self.reader = step, ref, reader
        self.writers: dict = {}  # (slot, method) -> VideoFile
        self.frames: list[dict] = []
        self.slot_classes = [Counter() for _ in range(step.n)]
        self.prob_sum: np.ndarray | None = None
        info, r = reader.info, reader.range
        expected = max(1, (info.frames - r.first_index(info.fps)) // r.stride) if info.frames else STRIP_FRAMES
        if r.max_frames:
            expected = min(expected, r.max_frames)
        self.strip_at = {round(i * (expected - 1) / max(1, STRIP_FRAMES - 1)) for i in range(STRIP_FRAMES)}
        self.strip: list[np.ndarray] = []
        self.size: tuple[int, int] | None = None

    def _writer(self, slot: int, method: str):
        key = (slot, method)
        if key not in self.writers:
            s, stem = self.step, self.ref.out_stem
            hint = method_name(f"{os.path.basename(stem)}.slot{slot}", method, len(s.methods) > 1)
            self.writers[key] = writers.VideoFile(s.out_dir / os.path.dirname(stem), hint,
                                                  self.reader.info.fps / self.reader.range.stride, self.even[::-1])
        return self.writers[key]

    def write_chunk(self, chunk: list, results: list, smoothed: list) -> None:
        """Draw and append each frame's overlays, and keep its record (in frame order)."""
        from gradcam_cli.render.overlay import overlays

        s = self.step
        for frame, result, maps in zip(chunk, results, smoothed):
            self.size = self.size or frame.rgb.shape[:2]
            self.even = (self.size[0] - self.size[0] % 2, self.size[1] - self.size[1] % 2)  # the encoder's sides
            height, width = self.size
            self.prob_sum = result.probabilities.astype(np.float64) + (0 if self.prob_sum is None else self.prob_sum)
            entries = []
            for slot, p in enumerate(result.predictions, start=1):
                self.slot_classes[slot - 1][p.class_index] += 1
                peaks = {m: _peak(s.upsample(maps[m][slot - 1], (height, width))) for m in s.methods}
                entries.append({"rank": p.rank, "class_index": p.class_index, "label": p.label,
                                "probability": p.probability, "peak": peaks[s.methods[0]],
                                **({"peaks": peaks} if len(s.methods) > 1 else {})})
            self.frames.append({"frame": frame.index, "time": round(frame.time, 6), "predictions": entries})
            for method in s.methods:
                pictures = overlays(frame.rgb, maps[method], alpha=s.alpha, colormap=s.colormap, upsample=s.upsample)
                for slot in range(1, s.n + 1):  # a slot a threshold left empty: the plain frame
                    picture = pictures[slot - 1] if slot <= len(pictures) else frame.rgb[..., ::-1]
                    self._writer(slot, method).write(np.ascontiguousarray(picture[:self.even[0], :self.even[1]]))
                    if slot == 1 and method == s.methods[0] and len(self.frames) - 1 in self.strip_at:
                        self.strip.append(picture)

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()

    def finish(self) -> dict:
        """Name and move the overlay videos into place, write the frames' log and the strip; the record."""
        from gradcam_cli.io.preprocess import resize
        from gradcam_cli.render.overlay import encode_jpeg

        s, stem, info = self.step, self.ref.out_stem, self.reader.info
        overlays_ = []
        for slot in range(1, s.n + 1):
            counts = self.slot_classes[slot - 1]
            c = s.indices[slot - 1] if s.indices else (min(counts, key=lambda k: (-counts[k], k)) if counts else None)
            if c is None:
                continue
            label = s.cam.class_names.label(c)
            base = map_name(stem, label, slot, slot, s.n, bool(s.indices))
            files = {m: method_name(base, m, len(s.methods) > 1) + ".mp4" for m in s.methods}
            for m, name in files.items():
                self.writers[(slot, m)].finish(s.out_dir / name)
            overlays_.append({"slot": slot, "class_index": int(c), "label": label, "frames_shown": counts[c],
                              "mean_probability": float(self.prob_sum[c] / len(self.frames)),
                              **({"video": files[s.methods[0]]} if len(files) == 1 else {"videos": files})})
            if slot == 1:
                strip = [resize(p[..., ::-1], (STRIP_HEIGHT, max(1, round(p.shape[1] * STRIP_HEIGHT / p.shape[0]))))
                         for p in self.strip]
                overlays_[-1]["strip"] = base + ".strip.jpg"
                writers.write_bytes(s.out_dir / overlays_[-1]["strip"],
                                    encode_jpeg(np.ascontiguousarray(np.hstack(strip)[..., ::-1]), 85))
        for (slot, _), writer in self.writers.items():  # a slot a threshold left empty in every frame
            if slot not in {entry["slot"] for entry in overlays_}:
                writer.abort()
        frames_file = f"{stem}.frames.jsonl"
        writers.write_bytes(s.out_dir / frames_file, "".join(_json(f) + "\n" for f in self.frames).encode("utf-8"))
        return {"path": self.ref.path, "status": "ok", "kind": "video", "width": self.size[1],
                "height": self.size[0], "fps": info.fps, "frames_in_file": info.frames,
                "frames": len(self.frames), "frame_stride": self.reader.range.stride,
                "output_fps": info.fps / self.reader.range.stride,
                **({"overlay_size": [self.even[1], self.even[0]]} if self.even != tuple(self.size) else {}), "first_frame": self.frames[0]["frame"],
                "last_frame": self.frames[-1]["frame"],
                **({"warnings": list(self.reader.warnings)} if self.reader.warnings else {}),
                "frames_file": frames_file, "overlays": overlays_, "summary": self.summary()}

    def summary(self) -> dict:
        """Classes over time: each class ever ranked first (its frames and mean probability), and the
        top-1 timeline as runs of consecutive frames with the same top-1 class."""
        timeline, firsts = [], Counter()
        for f in self.frames:
            if not f["predictions"]:
                continue
            top = f["predictions"][0]
            firsts[top["class_index"]] += 1
            if timeline and timeline[-1]["class_index"] == top["class_index"]:
                timeline[-1].update(end=f["time"], frames=timeline[-1]["frames"] + 1)
            else:
                timeline.append({"class_index": top["class_index"], "label": top["label"], "start": f["time"],
                                 "end": f["time"], "frames": 1})
        names = self.step.cam.class_names
        classes = [{"class_index": c, "label": names.label(c), "frames_top1": k,
                    "mean_probability": float(self.prob_sum[c] / len(self.frames))}
                   for c, k in sorted(firsts.items(), key=lambda kv: (-kv[1], kv[0]))]
        return {"classes": classes, "timeline": timeline}


def _peak(cam: np.ndarray) -> list[int]:
    """The map's highest pixel as [x, y] (the first in row order on ties)."""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return [int(x), int(y)]


def _json(record: dict) -> str:
    import json

    return json.dumps(record, ensure_ascii=False)


class VideoStep:
    """Explain one video with the run's :class:`GradCAM` and write its files; returns its record."""

    def __init__(self, cam: GradCAM, settings: RunSettings, video: VideoSettings, out_dir, batch_size: int,
                 pool: ThreadPoolExecutor):
        from gradcam_cli.render.overlay import colormap_id

        t = settings.targets
        self.cam, self.settings, self.video, self.pool = cam, settings, video, pool
        self.out_dir, self.batch_size = pathlib.Path(out_dir), int(batch_size)
        self.indices = cam.resolve_classes(t.classes) if t.classes else None
        self.n = len(self.indices) if self.indices else min(t.top, cam.split.num_classes)
        self.methods = list(settings.methods)
        self.alpha, self.colormap = settings.outputs.overlay.alpha, colormap_id(settings.outputs.overlay.colormap)
        self.upsample = cam.upsampler
        self.range = FrameRange(video.stride, video.max_frames, video.start, video.end)

    def describe(self) -> dict:
        """The run document's model fields."""
        return self.cam.describe()

    def recorded(self) -> dict:
        """The settings the run file records (compared on ``--resume``)."""
        return {**recorded_settings(self.cam, self.settings), **self.video.to_json()}

    def __call__(self, ref: InputRef) -> dict:
        try:
            reader = VideoReader(ref.path, self.range)
        except ImageError as exc:
            return error_record(ref.path, exc)
        clip = Clip(self, ref, reader)
        try:
            self._explain(reader, clip)
            return clip.finish()
        except ImageError as exc:
            clip.abort()
            return error_record(ref.path, exc)
        except BaseException:
            clip.abort()
            raise

    def _explain(self, reader: VideoReader, clip: Clip) -> None:
        """Decode one batch ahead, explain in order, draw the previous batch while the model runs."""
        s, frames, profile = self.settings, iter(reader), self.cam.profile
        explain_overlapped(
            self.pool, lambda: prepare_chunk(frames, self.batch_size, profile),
            lambda batch: self.cam.explain_prepared(batch, top=s.targets.top, indices=self.indices,
                                                    threshold=s.targets.threshold, method=s.methods,
                                                    options=s.method_options),
            clip, Smoother(self.video.smooth))


def explain_overlapped(pool, read: Callable[[], tuple], explain: Callable[[Any], list], clip: Clip,
                       smoother: Smoother) -> None:
    """A video's frames through the model in chunks, the I/O overlapped: ``read()`` -> (frames, the model's
    input; no frames at the end) runs one chunk ahead on ``pool``, ``explain(input)`` -> one
    :class:`Explanation` per frame runs here, in order, and the previous chunk is drawn
    (``clip.write_chunk``, with the ``smoother``'s maps) while the model runs."""
    ahead, drawing = pool.submit(read), None
    while True:
        chunk, inputs = ahead.result()
        if not chunk:
            break
        ahead = pool.submit(read)
        results = explain(inputs)
        smoothed = [smoother(r) for r in results]
        if drawing is not None:
            drawing.result()
        drawing = pool.submit(clip.write_chunk, chunk, results, smoothed)
    if drawing is not None:
        drawing.result()


def record_files(record: dict) -> list[str]:
    """The files a video's record names: its frames' log, overlay videos and strip."""
    if record.get("status") != "ok":
        return []
    files = [record.get("frames_file", "")]
    for entry in record.get("overlays") or []:
        files.extend([entry["video"]] if "video" in entry else list(entry.get("videos", {}).values()))
        files.extend([entry["strip"]] if "strip" in entry else [])
    return files


def _complete(record: dict, out_dir: pathlib.Path) -> bool:
    return record.get("status") == "ok" and all(name and (out_dir / name).is_file() for name in record_files(record))


def run_videos(cam: GradCAM, refs: Sequence[InputRef], settings: RunSettings, video: VideoSettings,
               options: RunOptions, *, on_record: Callable[[dict], None] | None = None,
               stop: Callable[[], bool] | None = None) -> Summary:
    """Explain every video of ``refs`` into ``options.out_dir`` (``options.batch_size`` frames a batch);
    ``stop()`` -> True: start no new video. Returns the journal's summary. ``cam``: the run's
    :class:`GradCAM` (frame by frame), or a video model's :class:`~gradcam_cli.run.volumes.VolumeModel`
    (clips of its T frames, :mod:`gradcam_cli.run.video_model`)."""
    from gradcam_cli.run.folder import io_threads

    with ThreadPoolExecutor(max(2, io_threads(options.workers)), thread_name_prefix="gradcam-video") as pool:
        from gradcam_cli.run.video_model import ClipStep
        from gradcam_cli.run.volumes import VolumeModel

        if isinstance(cam, VolumeModel):  # a video model: clips of T frames (run/video_model.py)
            step = ClipStep(cam, settings, video, options.out_dir, pool)
        else:
            step = VideoStep(cam, settings, video, options.out_dir, options.batch_size, pool)
        return _run_videos(step, refs, options, on_record, stop)


def _run_videos(step: VideoStep, refs, options: RunOptions, on_record, stop) -> Summary:
    settings, recorded = step.settings, step.recorded()
    part = None if options.shard is None else f"{options.shard[0]}-of-{options.shard[1]}"
    with RunJournal(options.out_dir, video_files(options.shard), recorded, resume=options.resume,
                    complete=_complete, files=record_files, part=part, on_record=on_record,
                    total=len(refs)) as journal:
        for ref in refs:
            if stop is not None and stop():
                break
            kept = journal.lookup(ref.key)
            journal.add(kept if kept is not None else step(ref))

        def header(counts: Summary, records) -> dict:
            return {"tool": "gradcam-cli", "version": __version__, **step.describe(), "method": list(settings.methods),
                    "options": recorded, "summary": {"videos": counts.records, "done": counts.done,
                                                     "failed": counts.failed}}

        return journal.finish(refs, header)
