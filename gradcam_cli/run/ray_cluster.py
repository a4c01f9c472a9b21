"""The Ray cluster of a run: sizing the actor pool from its nodes (:func:`plan_pool`, pure).

Ray is imported only inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from gradcam_cli.errors import EngineError

#: TensorFlow threads of a CPU actor when --cpus-per-worker is not given (more scale poorly per model)
DEFAULT_CPU_THREADS = 4


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs (none of it changes the results)."""

    address: str | None = None  # None: RAY_ADDRESS, else a local Ray for this run; "auto", "host:port", "ray://host:port"
    workers: int | None = None  # actors; None: as many as the cluster's nodes hold
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_worker: float | None = None  # None: 1 with GPUs, else the CPUs / workers, up to DEFAULT_CPU_THREADS and a node's CPUs


def _room(node: tuple[float, float], cpu: float, gpu: float) -> int:
    """How many actors of (``cpu``, ``gpu``) one node of (CPUs, GPUs) ``node`` holds."""
    eps = 1e-9  # 1.0 // 0.1 is 9.0 in floating point
    counts = [int((have + eps) // need) for have, need in zip(node, (cpu, gpu)) if need > 0]
    return min(counts) if counts else 1 << 20


def plan_pool(nodes: Sequence[dict], options: RayOptions, batches: int) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) for a cluster whose live nodes have the resources
    ``nodes`` (one dict per node: ``"CPU"``, ``"GPU"``, as ``ray.nodes()`` gives them).

    An actor runs on one node: its default size fits the largest node, and the cluster holds as
    many as its nodes hold each. Never more actors than ``batches``. :class:`EngineError` (one
    line) when no node can host one actor, or the nodes cannot hold the actors asked for.
    """
    sizes = [(float(node.get("CPU", 0)), float(node.get("GPU", 0))) for node in nodes]
    cpus, gpus = sum(c for c, _ in sizes), sum(g for _, g in sizes)
    most_cpu, most_gpu = max((c for c, _ in sizes), default=0.0), max((g for _, g in sizes), default=0.0)
    gpu = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if most_gpu >= 1 else 0.0)
    cpu = options.cpus_per_worker
    if cpu is None:  # with GPUs one CPU feeds one; else a share of the CPUs, up to DEFAULT_CPU_THREADS and a node's
        share = cpus // options.workers if options.workers else cpus
        cpu = 1.0 if gpu else float(max(1, min(DEFAULT_CPU_THREADS, int(share), int(most_cpu))))
    room = sum(_room(size, cpu, gpu) for size in sizes)
    if room == 0:
        raise EngineError(
            f"no node of the Ray cluster can host a worker of {cpu:g} CPUs and {gpu:g} GPUs (its {len(sizes)} nodes "
            f"have at most {most_cpu:g} CPUs and {most_gpu:g} GPUs each); lower --cpus-per-worker or "
            "--gpus-per-worker, or add a larger node"
        )
    workers = options.workers if options.workers is not None else room
    workers = max(1, min(workers, max(1, batches)))
    if workers > room:
        raise EngineError(
            f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs on {len(sizes)} nodes, room for {room} workers x "
            f"({cpu:g} CPUs, {gpu:g} GPUs), but {workers} were asked for; lower --workers, --cpus-per-worker or "
            "--gpus-per-worker, or add nodes"
        )
    return workers, gpu, cpu


def cluster_nodes() -> list[dict]:
    """The resources of the connected cluster's live nodes."""
    import ray

    return [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
