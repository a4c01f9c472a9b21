"""The Ray engine: the folder run's job on a Ray cluster, one model per actor, same outputs.

The driver lists the inputs (the caller's discovery: same names, order, shards),
keeps what ``--resume`` finds complete, and sends the rest as small items
``{index, path, out_stem, true_class}`` (never pixels) through Ray Data's
``map_batches`` to a fixed pool of :class:`ExplainActor`. Each actor builds the
model once, decodes with the project's decoder and calls the per-batch step,
which writes every file through the atomic writers under fixed names; it returns
the records as JSON text. The driver logs them through the same
:class:`~gradcam_cli.run.journal.ExplainJournal` as the folder runner, so a run started
by one engine can be resumed by the other.

Ray restarts an actor that dies and runs its batch again: the files are rewritten
whole under the same names and the journal keeps one record per image. A bad image
is an error record, never an exception. Ray is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from gradcam_cli._version import __version__
from gradcam_cli.errors import EngineError, GradcamError, first_line
from gradcam_cli.io import writers
from gradcam_cli.run.folder import compute_batch
from gradcam_cli.run.journal import ExplainJournal, Summary, recorded_settings
from gradcam_cli.run.memory import keep_large_blocks
from gradcam_cli.run.outputs import outputs_for
from gradcam_cli.run.ray_cluster import RayOptions, cluster_nodes, connected, plan_pool  # noqa: F401 (the engine's face)
from gradcam_cli.run.step import BatchStep, decode_item
from gradcam_cli.settings import RunOptions, RunSettings

if TYPE_CHECKING:
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.io.discover import InputRef

INSTALL_HINT = ("--engine ray needs Ray, which is not installed; install the [ray] extra: "
                "pip install -e '.[ray]' in a clone of gradcam-cli")
#: environment variables that say where caches and profiles are; the driver's values go to every actor
SHARED_ENV = ("XDG_CACHE_HOME", "KERAS_HOME", "GRADCAM_CONFIG_DIR", "TF_CPP_MIN_LOG_LEVEL")


def shared_env() -> dict[str, str]:
    """The driver's values of :data:`SHARED_ENV` that are set, for the actors."""
    return {k: os.environ[k] for k in SHARED_ENV if k in os.environ}


def pending(journal, refs: Sequence[InputRef], fields: Callable[[InputRef], dict] | None = None) -> list[dict]:
    """The inputs still to do, as task items (``index``, ``path``, ``out_stem`` and ``fields(ref)``); each
    one the journal holds complete (``--resume``) is added to it as it is instead."""
    todo = []
    for index, ref in enumerate(refs):
        kept = journal.lookup(ref.key)
        if kept is not None:
            journal.add(kept)
        else:
            todo.append({"index": index, "path": ref.path, "out_stem": ref.out_stem, **(fields(ref) if fields else {})})
    return todo


def require_ray() -> None:
    """Raise :class:`EngineError` (one line: how to install it) when Ray Data cannot be imported."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise EngineError(INSTALL_HINT) from None


def keep_driver_off_gpus() -> None:
    """Hide the GPUs from this process's TensorFlow, so that the driver's own model (built to
    check the options and describe the run) leaves its node's GPUs to the actors. Call it
    before TensorFlow builds anything; once TensorFlow has started it changes nothing."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialised (a library caller's models): leave it as it is
        pass


@dataclass(frozen=True)
class WorkerSpec:
    """What every actor needs, and what it must find equal on its node."""

    settings: RunSettings
    out_dir: str  # absolute
    cwd: str  # the driver's working directory: relative input and model paths resolve from it
    version: str  # the driver's gradcam-cli version
    recorded: dict  # the driver's recorded settings (backbone resolved)
    described: dict  # the driver's cam.describe()
    threads: int  # TensorFlow intra-op threads
    test_set: bool = False
    env: dict = field(default_factory=dict)
    stop_flag: object = None  # a StopFlag actor: once it is set, batches not begun are skipped


class StopFlag:
    """Set by the driver when the run must stop (a signal, a closed stdout); asked by every actor
    before each batch, so the batches in flight finish and the others are skipped."""

    def __init__(self) -> None:
        self.stopped = False

    def set(self) -> None:
        self.stopped = True

    def is_set(self) -> bool:
        return self.stopped


def enter_worker(spec) -> tuple[str, str]:
    """A Ray actor takes the driver's place: its environment, the same gradcam-cli version (else one
    line), its working folder, the output folder checked writable, TensorFlow's threads. ``spec``:
    any worker spec with ``env``, ``version``, ``cwd``, ``out_dir`` and ``threads``. Returns (this
    host's name, the output folder)."""
    host = socket.gethostname()
    os.environ.update(spec.env)
    if spec.version != __version__:
        raise EngineError(f"a Ray worker on {host} has gradcam-cli {__version__}, the driver {spec.version}; "
                          "install the same version on every node")
    try:
        os.chdir(spec.cwd)
    except OSError:
        raise EngineError(f"a Ray worker on {host} cannot enter the driver's folder {spec.cwd}; run from a "
                          "file system every node shares") from None
    out_dir = writers.check_writable(spec.out_dir)
    _configure_tensorflow(spec.threads)
    return host, out_dir


def _configure_tensorflow(threads: int) -> None:
    """TensorFlow threads to the actor's CPUs; GPU memory grows as needed (before the first op)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def _differences(label: str, mine: dict, theirs: dict) -> list[str]:
    return [f"{label} {k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(mine) | set(theirs))
            if mine.get(k) != theirs.get(k)]


class ExplainActor:
    """One model per actor (Ray Data's callable class): a batch of items in, their records out.

    Refuses to work when this node cannot do what the driver would: an
    :class:`EngineError` (another gradcam-cli version, another model, the driver's
    folder missing), an :class:`~gradcam_cli.errors.OutputError` (``out_dir`` cannot be
    written from here), any error building the model. The refusal is raised on its
    first batch, so that it reaches the driver whole and ends the run.
    """

    def __init__(self, spec: WorkerSpec):
        self.refused: GradcamError | None = None
        self.stop_flag, self.stopped = spec.stop_flag, False
        try:
            self._start(spec)
        except GradcamError as exc:  # raised on the first batch: from __init__, Ray passes on only its text
            self.refused = exc

    def _start(self, spec: WorkerSpec) -> None:
        host, self.out_dir = enter_worker(spec)
        from gradcam_cli.cam_targets import cam_for

        self.cam = cam_for(spec.settings.model, spec.settings.targets)
        changed = (_differences("setting", recorded_settings(self.cam, spec.settings), spec.recorded)
                   + _differences("model", self.cam.describe(), spec.described))
        if changed:
            raise EngineError(f"a Ray worker on {host} builds another model than the driver ({'; '.join(changed)}); "
                              "give every node the same profiles, weights and gradcam-cli")
        self.settings = spec.settings
        self.step = BatchStep(self.cam, spec.settings, self.out_dir, test_set=spec.test_set)
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="gradcam-io")
        keep_large_blocks()  # the actor decodes and writes: its big buffers reused, as in `gradcam explain`

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Columns ``index``, ``path``, ``out_stem``, ``frame`` and ``true_class`` (-1: none) -> ``index``, ``record``
        (JSON text), ``max_batch`` (0: never cut for memory). Raises the actor's refusal, if any."""
        from gradcam_cli.io.discover import InputRef

        if self.refused is not None:
            raise self.refused
        if self._stopping():  # no records: the driver logs none, and --resume does these images
            return {"index": np.zeros(0, np.int64), "record": np.array([], dtype=object),
                    "max_batch": np.zeros(0, np.int64)}
        pending = [
            self.pool.submit(decode_item, InputRef(str(path), str(stem), None if frame < 0 else int(frame)),
                             self.cam.profile, self.settings.max_pixels, None if true < 0 else int(true),
                             depth=self.settings.depth)
            for path, stem, frame, true in zip(batch["path"], batch["out_stem"],
                                               batch.get("frame", np.full(len(batch["path"]), -1)), batch["true_class"])
        ]
        records = [item.result() if isinstance(item, Future) else item
                   for item in compute_batch(self.step, pending, self.pool)]
        return {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "record": np.array([json.dumps(record, ensure_ascii=False) for record in records], dtype=object),
            "max_batch": np.full(len(records), self.cam.max_batch or 0, dtype=np.int64),
        }


    def _stopping(self) -> bool:
        """True once the driver has set the run's stop flag (asked until it is)."""
        if not self.stopped and self.stop_flag is not None:
            import ray

            self.stopped = bool(ray.get(self.stop_flag.is_set.remote()))
        return self.stopped


def run_ray(cam: GradCAM, refs: Sequence[InputRef], settings: RunSettings, options: RunOptions,
            ray_options: RayOptions, *,
            truth: dict[str, int] | None = None, on_record: Callable[[dict], None] | None = None,
            stop: Callable[[], bool] | None = None, actor: type = ExplainActor) -> Summary:
    """Explain ``refs`` into ``options.out_dir`` on Ray; the same files and records as
    :func:`~gradcam_cli.run.folder.run_folder` with the same arguments.

    ``cam``: the driver's model (it describes the run and is what every actor must
    equal); ``truth``: real path -> true class (test-set mode); ``actor``: the
    callable class the pool runs (a subclass may add behaviour); ``stop``: as
    :func:`~gradcam_cli.run.folder.run_folder`'s (asked every 0.1 s: once it returns True, the
    batches the actors have begun are finished and logged, the others skipped, and
    ``predictions.json`` lists what is done). Uses the Ray the
    process is connected to, or joins ``ray_options.address`` (None: ``RAY_ADDRESS``,
    else a local Ray it starts) for this run (:func:`~gradcam_cli.run.ray_cluster.connected`).
    :class:`EngineError` when Ray is missing, cannot be joined, or the job fails.
    """
    require_ray()
    out_dir = os.path.abspath(options.out_dir)
    with contextlib.ExitStack() as run:
        run.enter_context(connected(ray_options))
        plan_pool(cluster_nodes(), ray_options, -(-len(refs) // options.batch_size))  # refused before --out is made
        journal = run.enter_context(ExplainJournal(cam, settings, options, outputs_for(settings), on_record=on_record,
                                                  total=len(refs)))
        def fields(ref: InputRef) -> dict:
            true = truth.get(os.path.realpath(ref.path)) if truth else None
            return {"frame": -1 if ref.frame is None else ref.frame, "true_class": -1 if true is None else true}

        todo = pending(journal, refs, fields)
        max_batch = cam.max_batch
        if todo:
            spec = WorkerSpec(settings=settings, out_dir=out_dir, cwd=os.getcwd(), version=__version__,
                              recorded=journal.recorded, described=cam.describe(), threads=1, test_set=bool(truth),
                              env=shared_env())
            for records, cut in _execute(todo, spec, options.batch_size, ray_options, actor, stop):
                for record in records:
                    journal.add(record)
                if cut:
                    max_batch = min(cut, max_batch or cut)
        writers.remove_stale_temps(out_dir)  # a killed actor's half-written file (this host's)
        return journal.finish(refs, max_batch)


def _execute(items: list[dict], spec: WorkerSpec, batch_size: int, ray_options: RayOptions, actor: type,
             stop: Callable[[], bool] | None = None):
    """Run the actor pool over ``items``; yield (records, max_batch) per batch as batches arrive
    (once ``stop()``, only those of the batches begun)."""
    import logging

    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    saved = {key: getattr(context, key) for key in _QUIET_CONTEXT}
    # Ray Data's console: its notes and its copy of a failure's traceback stay in its log file (we say it in one line)
    console = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    levels = [h.level for h in console]
    watching = threading.Event()
    try:
        for handler in console:
            handler.setLevel(logging.CRITICAL)
        batches = -(-len(items) // batch_size)
        workers, gpu, cpu = plan_pool(cluster_nodes(), ray_options, batches)
        for key, value in _QUIET_CONTEXT.items():
            setattr(context, key, value)
        if stop is not None:
            spec = replace(spec, stop_flag=ray.remote(num_cpus=0)(StopFlag).remote())
            _watch(stop, spec.stop_flag, watching)
        dataset = ray.data.from_items(items, override_num_blocks=_blocks(batches, workers)).map_batches(
            actor, fn_constructor_kwargs={"spec": _with_threads(spec, cpu)}, batch_size=batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpu, num_gpus=gpu,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            cut = int(batch["max_batch"].max()) if len(batch["max_batch"]) else 0
            yield [json.loads(text) for text in batch["record"]], cut
    except Exception as exc:  # ours as they are; Ray's wrappers: ours inside, or the failure in one line
        raise _engine_error(exc) from None
    finally:
        watching.set()
        for key, value in saved.items():
            setattr(context, key, value)
        for handler, level in zip(console, levels):
            handler.setLevel(level)


#: Ray Data settings for a run: no progress bars or banners of its own (the CLI draws one), our exceptions as raised
_QUIET_CONTEXT = {"enable_progress_bars": False, "print_on_execution_start": False,
                  "raise_original_map_exception": True}


def _blocks(batches: int, workers: int) -> int:
    """How many blocks the items are cut into: one batch each while there are few (a dead actor's
    block is what Ray runs again), at most ``BATCHES_PER_BLOCK`` batches each for long runs (a
    million images in 62,500 blocks would cost Ray more than the images)."""
    return min(batches, max(4 * workers, -(-batches // BATCHES_PER_BLOCK)))


#: batches per block for long runs (see _blocks)
BATCHES_PER_BLOCK = 8


def _watch(stop: Callable[[], bool], flag, done: threading.Event) -> None:
    """A thread that sets the StopFlag actor ``flag`` once ``stop()`` is true, until ``done`` is set."""
    def watch() -> None:
        while not done.wait(0.1):
            if stop():
                flag.set.remote()
                return

    threading.Thread(target=watch, name="gradcam-ray-stop", daemon=True).start()


def _with_threads(spec: WorkerSpec, cpus: float) -> WorkerSpec:
    return replace(spec, threads=max(1, int(cpus)))


def _engine_error(exc: BaseException) -> GradcamError:
    """The first of our exceptions inside Ray's wrappers (causes, ``.cause``), cut to its first line,
    else an :class:`EngineError`."""
    from ray.exceptions import RayError

    seen, stack = set(), [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, GradcamError) and not isinstance(current, RayError):
            line = first_line(current, limit=2000)  # Ray Data appends its retry advice to the message
            try:
                return type(current)(line)
            except TypeError:
                return EngineError(line)
        stack += [getattr(current, "cause", None), current.__context__, current.__cause__]
    return EngineError(f"the Ray job failed: {first_line(exc)}; see the Ray logs (ray logs / /tmp/ray/session_latest)")
