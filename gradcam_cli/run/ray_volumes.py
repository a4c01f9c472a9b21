"""Volume runs (a 3-D model) on the Ray engine: the work split by volume, one model per actor.

The driver lists the volumes (the same discovery, order and shards as the local engine), keeps
what ``--resume`` finds complete and sends the rest as ``{index, path, out_stem}`` items (never
voxels: each actor reads its volume from the shared file system) to a fixed pool of
:class:`VolumeActor` through :func:`gradcam_cli.run.ray_engine._execute`, one volume per batch
(a volume is the unit of work and of memory). Each actor loads the model once, checks it is the
driver's (gradcam-cli version, target layer, input shape), and runs the local engine's
:class:`~gradcam_cli.run.volumes.VolumeStep`, which writes the NIfTI maps, montages and GIFs
through the atomic writers; it returns the records as JSON text. The driver logs them through the
same journal as the local engine (:func:`~gradcam_cli.run.volumes.volume_journal`), so a run begun
on one engine resumes on the other, and ``predictions.json`` lists the volumes in input order.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gradcam_cli._version import __version__
from gradcam_cli.errors import EngineError, GradcamError
from gradcam_cli.io import writers
from gradcam_cli.io.discover import InputRef
from gradcam_cli.run.journal import Summary
from gradcam_cli.run.ray_cluster import RayOptions, cluster_nodes, connected, plan_pool
from gradcam_cli.run.ray_engine import StopFlag, _execute, enter_worker, pending, require_ray, shared_env
from gradcam_cli.run.volumes import VolumeModel, VolumeStep, load_volume_model, volume_header, volume_journal
from gradcam_cli.settings import RunOptions, RunSettings


@dataclass(frozen=True)
class VolumeWorkerSpec:
    """What every volume actor needs, and what it must find equal on its node."""

    settings: RunSettings
    out_dir: str  # absolute
    cwd: str  # the driver's working directory: relative paths resolve from it
    version: str
    model: dict  # the driver's model: target layer and input shape
    threads: int = 1
    env: dict = field(default_factory=dict)
    stop_flag: object = None  # a StopFlag actor: once set, volumes not begun are skipped


def describe(vm: VolumeModel) -> dict:
    return {"target_layer": vm.split.layer_name, "input_shape": [*vm.size, vm.channels],
            "num_classes": int(vm.split.num_classes)}


class VolumeActor:
    """One 3-D model per actor: a batch of volume items in, their records (JSON text) out. A node
    that cannot do what the driver would (another version, another model, the folder missing or
    not writable) refuses on its first batch, which ends the run with that one line."""

    def __init__(self, spec: VolumeWorkerSpec):
        self.refused: GradcamError | None = None
        self.stop_flag, self.stopped = spec.stop_flag, False
        try:
            self._start(spec)
        except GradcamError as exc:
            self.refused = exc

    def _start(self, spec: VolumeWorkerSpec) -> None:
        import pathlib

        host, out_dir = enter_worker(spec)
        vm = load_volume_model(spec.settings)
        if describe(vm) != spec.model:
            raise EngineError(f"a Ray worker on {host} builds another model than the driver ({describe(vm)} against "
                              f"{spec.model}); give every node the same model file and gradcam-cli")
        self.step = VolumeStep(vm, spec.settings, pathlib.Path(out_dir))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Columns ``index``, ``path``, ``out_stem`` -> ``index``, ``record`` (JSON text), ``max_batch`` (0)."""
        if self.refused is not None:
            raise self.refused
        if self._stopping():
            return {"index": np.zeros(0, np.int64), "record": np.array([], dtype=object),
                    "max_batch": np.zeros(0, np.int64)}
        records = [self.step(InputRef(str(path), str(stem))) for path, stem in zip(batch["path"], batch["out_stem"])]
        return {"index": np.asarray(batch["index"], dtype=np.int64),
                "record": np.array([json.dumps(r, ensure_ascii=False) for r in records], dtype=object),
                "max_batch": np.zeros(len(records), np.int64)}

    def _stopping(self) -> bool:
        if not self.stopped and self.stop_flag is not None:
            import ray

            self.stopped = bool(ray.get(self.stop_flag.is_set.remote()))
        return self.stopped


def run_volumes_ray(vm: VolumeModel, refs: Sequence[InputRef], settings: RunSettings, options: RunOptions,
                    ray_options: RayOptions, *, on_record: Callable[[dict], None] | None = None,
                    stop: Callable[[], bool] | None = None, actor: type = VolumeActor) -> Summary:
    """Explain the volumes ``refs`` into ``options.out_dir`` on Ray: the same files and records as
    :func:`~gradcam_cli.run.volumes.run_volumes`. ``stop()`` -> True: the volumes the actors have
    begun are finished and logged, the others skipped (``--resume`` does them)."""
    require_ray()
    out_dir = os.path.abspath(options.out_dir)
    with contextlib.ExitStack() as run:
        run.enter_context(connected(ray_options))
        plan_pool(cluster_nodes(), ray_options, len(refs))
        journal = run.enter_context(volume_journal(vm, settings, options, on_record=on_record, total=len(refs)))
        todo = pending(journal, refs)
        if todo:
            spec = VolumeWorkerSpec(settings=settings, out_dir=out_dir, cwd=os.getcwd(), version=__version__,
                                    model=describe(vm), env=shared_env())
            for records, _ in _execute(todo, spec, 1, ray_options, actor, stop):
                for record in records:
                    journal.add(record)
        writers.remove_stale_temps(out_dir)
        return journal.finish(refs, volume_header(vm, settings))


__all__ = ["VolumeActor", "VolumeWorkerSpec", "run_volumes_ray", "StopFlag"]
