"""`gradcam explain --engine ray` on videos: one video per task, the same files and records as the
local engine's :func:`~gradcam_cli.run.video.run_videos`.

The driver keeps the videos' journal (``videos.jsonl``, ``videos.json``: resume and shards as on the
local engine); each actor (:class:`VideoActor`, the image engine's :class:`ExplainActor` with its
checks: same version, same model, the driver's folder) explains whole videos with its own model
and writes their files into the shared ``--out``. A video is a task of its own, so a killed actor
costs Ray one video again, never a record twice (the journal keeps the first).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from gradcam_cli._version import __version__
from gradcam_cli.io import writers
from gradcam_cli.run.journal import RunJournal, Summary
from gradcam_cli.run.ray_engine import (ExplainActor, WorkerSpec, _execute, connected, pending, require_ray,
                                         shared_env)
from gradcam_cli.run.video import VideoStep, _complete, record_files, video_files
from gradcam_cli.settings import RunOptions, RunSettings, VideoSettings

if TYPE_CHECKING:
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.io.discover import InputRef
    from gradcam_cli.run.ray_cluster import RayOptions


@dataclass(frozen=True)
class VideoWorkerSpec(WorkerSpec):
    video: VideoSettings = VideoSettings()
    frames_per_batch: int = 16


class VideoActor(ExplainActor):
    """An actor that explains whole videos (one per item) with its own :class:`VideoStep`."""

    def _start(self, spec: VideoWorkerSpec) -> None:
        super()._start(spec)
        self.pool.shutdown()
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="gradcam-video")
        self.video_step = VideoStep(self.cam, spec.settings, spec.video, self.out_dir, spec.frames_per_batch,
                                    self.pool)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from gradcam_cli.io.discover import InputRef

        if self.refused is not None:
            raise self.refused
        if self._stopping():
            return {"index": np.zeros(0, np.int64), "record": np.array([], dtype=object),
                    "max_batch": np.zeros(0, np.int64)}
        records = [self.video_step(InputRef(str(path), str(stem))) for path, stem in zip(batch["path"],
                                                                                            batch["out_stem"])]
        return {"index": np.asarray(batch["index"], dtype=np.int64),
                "record": np.array([json.dumps(r, ensure_ascii=False) for r in records], dtype=object),
                "max_batch": np.zeros(len(records), dtype=np.int64)}


def run_ray_videos(cam: GradCAM, refs: Sequence[InputRef], settings: RunSettings, video: VideoSettings,
                   options: RunOptions, ray_options: RayOptions, *, on_record: Callable[[dict], None] | None = None,
                   stop: Callable[[], bool] | None = None) -> Summary:
    """Explain every video of ``refs`` on Ray, one video per task, into ``options.out_dir``."""
    require_ray()
    out_dir = os.path.abspath(options.out_dir)
    step = VideoStep(cam, settings, video, out_dir, options.batch_size, None)  # the driver's: records and header
    part = None if options.shard is None else f"{options.shard[0]}-of-{options.shard[1]}"
    with connected(ray_options), RunJournal(out_dir, video_files(options.shard), step.recorded(),
                                            resume=options.resume, complete=_complete, files=record_files, part=part,
                                            on_record=on_record, total=len(refs)) as journal:
        todo = pending(journal, refs)
        if todo:
            spec = VideoWorkerSpec(settings=settings, out_dir=out_dir, cwd=os.getcwd(), version=__version__,
                                   recorded={k: v for k, v in step.recorded().items() if not k.startswith("video.")},
                                   described=cam.describe(), threads=1,
                                   env=shared_env(), video=video,
                                   frames_per_batch=int(options.batch_size))
            for records, _ in _execute(todo, spec, 1, ray_options, VideoActor, stop):
                for record in records:
                    journal.add(record)
        writers.remove_stale_temps(out_dir)  # a killed actor's half-written video (this host's)

        def header(counts: Summary, records) -> dict:
            return {"tool": "gradcam-cli", "version": __version__, **step.describe(), "method": list(settings.methods),
                    "options": step.recorded(), "summary": {"videos": counts.records, "done": counts.done,
                                                            "failed": counts.failed}}

        return journal.finish(refs, header)
