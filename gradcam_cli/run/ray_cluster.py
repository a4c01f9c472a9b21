"""The Ray cluster of a run: joining it (time-limited, one line when it fails, Ray's own log lines
kept off the terminal) and sizing the actor pool from its nodes (:func:`plan_pool`, pure).

A run joins ``--ray-address`` (``auto``, ``host:port``, ``ray://host:port``), else the cluster
``RAY_ADDRESS`` names (Ray reads it when no address is given), else starts a local Ray for
itself. Ray is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

from gradcam_cli.errors import EngineError, first_line

#: TensorFlow threads of a CPU actor when --cpus-per-worker is not given (more scale poorly per model)
DEFAULT_CPU_THREADS = 4
#: seconds to join an existing cluster (Ray itself may wait minutes, or for ever, on an address that does not answer)
CONNECT_TIMEOUT = 60.0
#: seconds for the TCP check of a host:port address before Ray is asked to join it
PROBE_TIMEOUT = 10.0
#: the fix when a cluster wants a token this driver does not have (or has none and this driver sends one)
AUTH_HINT = ("the cluster and this machine disagree on authentication: for a cluster made with `ray start` that has "
             "a token, set RAY_AUTH_MODE=token and give this machine the cluster's token (~/.ray/auth_token, or "
             "RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH); see docs/cluster.md")


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


@contextlib.contextmanager
def connected(options: RayOptions) -> Iterator[None]:
    """Ray for the block: the one this process is connected to already, else the cluster of
    ``options.address`` (or ``RAY_ADDRESS``), else a local Ray; left (or stopped) after the block.
    :class:`EngineError` in one line when the cluster cannot be joined within CONNECT_TIMEOUT."""
    import ray

    if ray.is_initialized():
        yield
        return
    connect(options)
    try:
        yield
    finally:
        ray.shutdown()


def connect(options: RayOptions) -> None:
    """``ray.init`` for a run: an existing cluster joined within CONNECT_TIMEOUT, one line when it
    fails (:class:`EngineError`), this process's SIGTERM handler kept (ray.init replaces it), and
    Ray's own log lines off its stderr (:func:`_quiet_ray`)."""
    import ray
    from ray.exceptions import AuthenticationError

    address = options.address or os.environ.get("RAY_ADDRESS") or None
    debug = bool(os.environ.get("GRADCAM_DEBUG"))
    kwargs = {"address": options.address, "log_to_driver": False,
              "logging_level": logging.INFO if debug else logging.CRITICAL}
    if address is None:
        kwargs["include_dashboard"] = False
    where = f"{address} ({'--ray-address' if options.address else 'RAY_ADDRESS'})" if address else "a local Ray"
    if address not in (None, "auto"):
        _probe(address, where)
    saved = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        with _quiet_ray(debug):
            if address is None:  # in this thread: the processes it starts die with the thread that started them
                ray.init(**kwargs)
            else:
                _init_within(kwargs, CONNECT_TIMEOUT, where)
    except EngineError:
        raise
    except Exception as exc:
        auth = isinstance(exc, AuthenticationError) or "authentication" in str(exc).lower()
        fix = AUTH_HINT if auth else "check the address, and that the cluster is up (ray status)"
        said = first_line(exc, limit=300).split(". ")[0].rstrip(".")  # Ray's first sentence; its advice is ours
        raise EngineError(f"cannot join the Ray cluster at {where}: {said}; {fix}") from None
    finally:
        if saved is not None:  # ray.init's own handler exits at once, mid-batch; the run's stops it cleanly
            signal.signal(signal.SIGTERM, saved)


def _init_within(kwargs: dict, timeout: float, where: str) -> None:
    """``ray.init(**kwargs)`` joining an existing cluster, given up after ``timeout`` seconds."""
    import ray

    outcome: list[BaseException | None] = []

    def join() -> None:
        try:
            ray.init(**kwargs)
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=join, name="gradcam-ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise EngineError(f"the Ray cluster at {where} did not answer within {timeout:g} s; check the address, "
                          "and that the cluster is up (ray status)")
    if outcome[0] is not None:
        raise outcome[0]


def _probe(address: str, where: str) -> None:
    """A TCP connection to ``host:port`` (of ``ray://host:port`` too): one line at once when nothing listens."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # not host:port: Ray says what it makes of it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, socket.timeout) else (exc.strerror or first_line(exc)).lower()
        raise EngineError(f"nothing answers at {where}: {reason}; start the cluster (ray start --head) or give the "
                          "address it printed") from None


@contextlib.contextmanager
def _quiet_ray(debug: bool) -> Iterator[None]:
    """Ray's Python warnings and its C++ core worker's error lines stay off the driver's stderr: its
    loggers at CRITICAL, RAY_BACKEND_LOG_LEVEL=fatal as the core worker starts (it reads it once; a
    local Ray's own processes, started meanwhile, log to their files at that level too), and file
    descriptor 2 on /dev/null while ray.init runs (where the core worker says it read that level).
    GRADCAM_DEBUG=1 shows them."""
    if debug:
        yield
        return
    backend = os.environ.get("RAY_BACKEND_LOG_LEVEL")
    logging.getLogger("ray").setLevel(logging.CRITICAL)  # ray.init warns before it applies logging_level
    if backend is None:
        os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if backend is None:
            os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)
