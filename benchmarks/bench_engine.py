#!/usr/bin/env python
"""Does gradcam-cli's top-N Grad-CAM run at the speed of a bare forward pass?

For each backbone, in its own subprocess (so that every ratio compares numbers
taken in the same warm process, interleaved, on a possibly noisy machine):

  (0) forward   the compiled bare forward pass,
                ``tf.function(lambda x: model(x, training=False))`` with a ``None``
                batch dimension: the floor, images/s;
  (a) engine    ``gradcam_cli.engine.explainer.Explainer(split, top=N)`` on preprocessed
                float32 batches (all N maps of every image), images/s;
  (b) CLI       the whole folder pipeline, ``gradcam_cli.run.folder.run_folder``, on
                1024x768 JPEGs: decode, resize, model, overlays blended at the
                original resolution, JPEG encoding and writing, predictions
                files; timed after one warm-up run, images/s;
  (c) tutorial  the Keras "Grad-CAM class activation visualization" tutorial
                loop: per image, per class, an eager ``GradientTape`` over
                ``keras.Model(inputs, [layer.output, model.output])``; images/s
                extrapolated from a few images.

Ratios are images/s divided by the forward pass's images/s at the same batch
size. Engine ratios are the median over rounds of (engine / forward) measured
back to back in each round (order rotated); CLI ratios pair every timed CLI run
with a forward sample taken just before it.

Then peak memory (ru_maxrss) of the whole pipeline over 100 and over 1,000
small JPEGs, each in its own subprocess, and a per-stage profile of the CLI
path (where the time goes: decode, resize, model, overlay, encode, write).

    python benchmarks/bench_engine.py                  # the full run (~20 min on 2 cores) -> benchmarks/results/engine.md
    python benchmarks/bench_engine.py --quick                         # a few minutes, printed only
    python benchmarks/bench_engine.py --backbones vgg16,resnet50 --no-memory --out /tmp/part.md

Nothing in the library is modified: the stage profile wraps module functions
(``images.decode``, ``preprocess.resize``, ``render.overlays``, ...) for the
duration of one extra profiled run and restores them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "engine.md"
DEFAULT_BACKBONES = ("vgg16", "xception", "resnet50", "efficientnet_lite0")
QUICK_BACKBONES = ("resnet50", "efficientnet_lite0")
TOPS = (1, 5)
BATCHES = (1, 16)
#: the CLI folder: each generated JPEG copied this many times (real copies), so that fast models
#: get folder runs of several seconds
CLI_COPIES = 6
PROFILE_BACKBONES = ("vgg16", "efficientnet_lite0")

# targets: (backbone or None for every backbone, top, batch or None for every batch, what, minimum ratio)
ENGINE_TARGET = 0.9  # engine top-5 >= 0.9x forward, every backbone
CLI_TARGETS = {("vgg16", 5, 16): 0.75, ("efficientnet_lite0", 1, 16): 0.6}
MEMORY_TARGET = 1.10  # peak RSS of 1,000 images <= 1.1x that of 100

perf = time.perf_counter


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------
# synthetic photo-like JPEGs


def synth_image(rng, width: int, height: int):
    """Smooth colour gradients + low-frequency waves + a few filled shapes + sensor-like noise."""
    import cv2
    import numpy as np

    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    u /= width
    v /= height
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-1.0, 1.0, 2)
        f1, f2 = rng.uniform(0.3, 2.5, 2)
        phase = rng.uniform(0.0, 2 * math.pi)
        img[..., c] = rng.uniform(90, 170) + 60 * (a * u + b * v) + 35 * np.sin(2 * math.pi * (f1 * u + f2 * v) + phase)
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    scale = min(width, height)
    for _ in range(int(rng.integers(4, 10))):
        color = tuple(int(x) for x in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.uniform(0.05, 0.3) * scale)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.circle(canvas, (cx, cy), size, color, -1, lineType=cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(canvas, (cx - size, cy - size // 2), (cx + size, cy + size // 2), color, -1)
        else:
            pts = np.array([[cx + int(size * math.cos(t)), cy + int(size * math.sin(t))]
                            for t in rng.uniform(0, 2 * math.pi, 3)], np.int32)
            cv2.fillPoly(canvas, [pts], color, lineType=cv2.LINE_AA)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 1.2)
    noisy = canvas.astype(np.float32) + rng.normal(0.0, 5.0, canvas.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def make_jpegs(folder: pathlib.Path, count: int, width: int, height: int, seed: int, prefix: str = "img") -> list:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i:04d}.jpg"
        Image.fromarray(synth_image(rng, width, height)).save(path, quality=90)
        paths.append(path)
    return paths


def make_copies(sources: list, folder: pathlib.Path, count: int) -> None:
    """``count`` distinct files (real copies: the pipeline de-duplicates hard and soft links)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shutil.copyfile(sources[i % len(sources)], folder / f"img{i:05d}.jpg")


# ---------------------------------------------------------------------------
# machine and library description


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_total_gib() -> float | None:
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def library_fingerprint() -> dict:
    import gradcam_cli

    package = pathlib.Path(gradcam_cli.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):  # the subpackages too
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    commit = None
    try:  # read-only: no index refresh, no lock
        commit = subprocess.run(["git", "--no-optional-locks", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"version": gradcam_cli.__version__, "path": str(package), "sources_sha256": digest.hexdigest()[:12],
            "commit": commit}


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss_mib() -> float | None:
    try:
        for line in open("/proc/self/status", encoding="utf-8"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------
# per-stage profiler (wraps module functions, restores them afterwards)


class StageProfiler:
    """Inclusive and exclusive seconds per wrapped function, summed over all threads."""

    def __init__(self):
        self.inclusive = defaultdict(float)
        self.children = defaultdict(float)
        self.calls = defaultdict(int)
        self.threads = defaultdict(set)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._patches: list = []

    def _wrap(self, stage: str, fn):
        profiler = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            stack = getattr(profiler._local, "stack", None)
            if stack is None:
                stack = profiler._local.stack = []
            stack.append(0.0)
            start = perf()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = perf() - start
                children = stack.pop()
                if stack:
                    stack[-1] += elapsed
                with profiler._lock:
                    profiler.inclusive[stage] += elapsed
                    profiler.children[stage] += children
                    profiler.calls[stage] += 1
                    profiler.threads[stage].add(threading.current_thread().name.split("_")[0])

        return timed

    def patch(self, owner, attr: str, stage: str) -> bool:
        """Wrap ``owner.attr`` (a module function, or a function defined on a class)."""
        original = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if original is None or not callable(original):
            return False
        setattr(owner, attr, self._wrap(stage, original))
        self._patches.append((owner, attr, original))
        return True

    def restore(self) -> None:
        for owner, attr, original in reversed(self._patches):
            setattr(owner, attr, original)
        self._patches.clear()

    def exclusive(self, stage: str) -> float:
        return self.inclusive[stage] - self.children[stage]


# stage name, (module, attribute)
STAGES = (
    ("decode (full res; OpenCV for whole JPEGs)", "gradcam_cli.io.images", "decode_sized"),  # decode calls it; run.step too
    # where the library has it (main after issue 22.6), run.step decodes through decode_pair instead
    ("decode for the model and the pictures (decode_pair)", "gradcam_cli.io.images", "decode_pair"),
    ("resize to model input", "gradcam_cli.io.preprocess", "resize"),
    ("normalise", "gradcam_cli.io.preprocess", "normalise"),
    ("model (Explainer call)", "gradcam_cli.engine.explainer", "Explainer.__call__"),
    ("predictions -> Python records", "gradcam_cli.cam", "GradCAM.explain_prepared"),
    ("upsample (uint8) + colormap", "gradcam_cli.render.overlay", "heatmap_bgr"),
    ("blend (cvtColor + addWeighted)", "gradcam_cli.render.overlay", "overlays"),
    ("JPEG encode (cv2)", "gradcam_cli.render.overlay", "encode_jpeg"),
    ("write files (atomic)", "gradcam_cli.io.writers", "write_bytes"),
    ("write_image other (names, dicts)", "gradcam_cli.run.step", "BatchStep.write"),
    ("predictions.jsonl records", "gradcam_cli.io.writers", "JsonLines.write"),
    ("predictions.json", "gradcam_cli.io.writers", "write_json_document"),
)


def install_stage_profiler() -> tuple[StageProfiler, list]:
    import importlib

    profiler = StageProfiler()
    patched = []
    for stage, module_name, attr in STAGES:
        owner = importlib.import_module(module_name)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is not None and profiler.patch(owner, name, stage):
            patched.append(stage)
    return profiler, patched


# ---------------------------------------------------------------------------
# the per-backbone worker: one function per measured phase around a small context record


@dataclasses.dataclass
class Worker:
    """What every phase of one backbone's worker process shares."""

    args: argparse.Namespace
    name: str
    cam: object  # gradcam_cli.cam.GradCAM
    profile: object  # its BackboneProfile
    forward: object  # the compiled bare forward pass, numpy out
    explainers: dict  # top -> gradcam_cli.engine.explainer.Explainer
    decoded: list  # the first max(BATCHES) images, decoded
    batches: dict  # batch size -> preprocessed float32 batch
    refs_all: list  # every file of the CLI folder
    tmp_root: pathlib.Path
    result: dict
    refs: list = dataclasses.field(default_factory=list)  # the files of one timed CLI run
    calls: dict = dataclasses.field(default_factory=dict)  # (fn key, batch) -> calls per sample
    forward_samples: dict = dataclasses.field(default_factory=lambda: {b: [] for b in BATCHES})

    def phase(self, label, begin=None):
        """Call with no ``begin`` to start a phase; with it, record the other processes' load (cores) meanwhile."""
        now = (perf(), system_busy_seconds(), cpu_seconds())
        if begin is not None and begin[1] is not None:
            wall = now[0] - begin[0]
            self.result["other_load"][label] = max(0.0, (now[1] - begin[1]) - (now[2] - begin[2])) / wall
        return now

    def calls_for(self, seconds_per_call: float) -> int:
        return max(1, math.ceil(self.args.sample_seconds / max(seconds_per_call, 1e-6)))

    def forward_sample(self, b: int) -> float:
        """One forward sample at batch ``b``, also kept in ``forward_samples``."""
        ips = sample(self.forward, self.batches[b], self.calls[("forward", b)])
        self.forward_samples[b].append(ips)
        return ips


def one_call(fn, x) -> float:
    start = perf()
    fn(x)
    return perf() - start


def sample(fn, x, k) -> float:
    """images/s over k back-to-back calls."""
    start = perf()
    for _ in range(k):
        fn(x)
    return k * x.shape[0] / (perf() - start)


def build_worker(args) -> Worker:
    """Build the backbone, its compiled forward pass, the explainers and the input batches."""
    import keras
    import tensorflow as tf

    from gradcam_cli.cam import GradCAM
    from gradcam_cli.config.profiles import load_registry
    from gradcam_cli.engine.explainer import Explainer
    from gradcam_cli.io import images as gimages
    from gradcam_cli.io.discover import iter_inputs
    from gradcam_cli.settings import RunOptions

    name = args.worker
    result: dict = {"backbone": name, "rows": {}, "tutorial": {}, "profile": {}, "other_load": {}}
    profile = load_registry()[name]
    t0 = perf()
    cam = GradCAM(profile=profile, weights=args.weights)
    result["build_s"] = perf() - t0
    model = cam.model
    height, width = profile.input_size
    result.update(
        input_size=[height, width], target_layer=cam.layer, feature_shape=list(cam.split.feature_shape),
        weights=cam.weights, params=int(model.count_params()),
        gpus=[d.name for d in tf.config.list_physical_devices("GPU")],
        tf_version=tf.__version__, keras_version=keras.__version__,
        run_options=[f.name for f in dataclasses.fields(RunOptions)],
    )
    log(f"{name}: built in {result['build_s']:.1f}s ({result['params']:,} parameters)")

    spec = tf.TensorSpec((None, height, width, 3), tf.float32)
    forward_fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    explainers = {n: Explainer(cam.split, top=n) for n in TOPS}
    result["engine_path"] = explainers[TOPS[0]].path
    refs_all = list(iter_inputs([str(pathlib.Path(args.images))]))
    decoded = [gimages.decode(ref.path) for ref in refs_all[: max(BATCHES)]]
    return Worker(args=args, name=name, cam=cam, profile=profile, forward=lambda x: forward_fn(x).numpy(),
                  explainers=explainers, decoded=decoded, batches={b: cam.prepare(decoded[:b]) for b in BATCHES},
                  refs_all=refs_all, tmp_root=pathlib.Path(args.tmp), result=result)


def measure_engine(w: Worker) -> None:
    """(0) vs (a), interleaved per batch size: F E1 F E5 F E5 F E1 F ...

    Every engine sample sits between two forward samples and is compared with their mean, so that a
    change of load on the machine hits both sides. At least ``--reps`` rounds; more while the round
    budget lasts (fast models), at most ``--max-rounds``."""
    args = w.args
    for b in BATCHES:
        began = w.phase(f"engine b{b}")
        x = w.batches[b]
        for key, fn in {"forward": w.forward, **w.explainers}.items():  # warm-up: trace + let oneDNN settle
            for _ in range(2):
                last = one_call(fn, x)
            w.calls[(key, b)] = w.calls_for(min(last, one_call(fn, x)))
        engine_ips = {n: [] for n in TOPS}
        engine_ratios = {n: [] for n in TOPS}
        f_prev = w.forward_sample(b)
        rounds, start = 0, perf()
        while rounds < args.max_rounds and (rounds < args.reps or perf() - start < args.round_budget):
            for n in (TOPS if rounds % 2 == 0 else TOPS[::-1]):
                e = sample(w.explainers[n], x, w.calls[(n, b)])
                f_next = w.forward_sample(b)
                engine_ips[n].append(e)
                engine_ratios[n].append(e / ((f_prev + f_next) / 2))
                f_prev = f_next
            rounds += 1
        rows = w.result["rows"]
        for n in TOPS:
            row = rows.setdefault(f"{n}/{b}", {"top": n, "batch": b})
            row["engine_ips"] = median(engine_ips[n])
            row["engine_ratio"] = median(engine_ratios[n])
            row["engine_samples"] = [round(v, 3) for v in engine_ips[n]]
            row["engine_sample_ratios"] = [round(v, 3) for v in engine_ratios[n]]
        w.result.setdefault("engine_rounds", {})[str(b)] = rounds
        w.phase(f"engine b{b}", began)
        log(f"{w.name}: batch {b}: {rounds} rounds, forward {median(w.forward_samples[b]):.2f} img/s, "
            + ", ".join(f"top-{n} {rows[f'{n}/{b}']['engine_ips']:.2f} img/s "
                        f"({rows[f'{n}/{b}']['engine_ratio']:.2f}x)" for n in TOPS))
    w.result["engine_traces"] = {n: w.explainers[n].trace_count() for n in TOPS}


def cli_run(w: Worker, n: int, b: int, chosen: list) -> float:
    """One in-process ``run_folder`` over ``chosen`` at top ``n``, batch ``b``; its wall seconds."""
    from gradcam_cli.run.folder import run_folder
    from gradcam_cli.settings import RunOptions, RunSettings

    out = pathlib.Path(tempfile.mkdtemp(prefix="out-", dir=w.tmp_root))
    try:
        options = RunOptions(out_dir=str(out), batch_size=b)
        start = perf()
        summary = run_folder(w.cam, chosen, RunSettings.from_json({"top": n}), options)
        elapsed = perf() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if summary.done != len(chosen) or summary.failed:
        raise RuntimeError(f"run_folder: {summary.done} done, {summary.failed} failed of {len(chosen)}")
    return elapsed


def measure_cli(w: Worker) -> None:
    """(b) the whole CLI pipeline, each timed run between two forward samples: F C F C F.

    Images per timed run: about ``--cli-seconds`` of forward-pass work, a multiple of 16, at least 4
    batches of 16 (so that the first decode and the last writes are amortised, as in a folder run
    of real size), at most every file of the folder."""
    est_ips = median(w.forward_samples[max(BATCHES)])
    per_run = int(min(len(w.refs_all), max(64, 16 * round(est_ips * w.args.cli_seconds / 16))))
    w.refs = w.refs_all[:per_run]
    w.result["cli_images"] = per_run
    w.result["cli_image_size"] = list(w.decoded[0].shape[:2])
    began = w.phase("CLI")
    for b in BATCHES:
        for n in TOPS:
            row = w.result["rows"][f"{n}/{b}"]
            cli_run(w, n, b, w.refs[: max(b, 2)])  # warm-up: traces this top's explainer, warms caches
            # one run fewer where a run takes long (the slow backbones), never fewer than 2
            slow = len(w.refs) / median(w.forward_samples[b]) >= 12
            reps_row = max(2, w.args.cli_reps - 1) if slow else w.args.cli_reps
            pairs = []
            f_prev = w.forward_sample(b)
            for _ in range(reps_row):
                elapsed = cli_run(w, n, b, w.refs)
                f_next = w.forward_sample(b)
                pairs.append((len(w.refs) / elapsed, (f_prev + f_next) / 2))
                f_prev = f_next
            row["cli_ips"] = median(p[0] for p in pairs)
            row["cli_ratio"] = median(p[0] / p[1] for p in pairs)
            row["cli_samples"] = [round(p[0], 3) for p in pairs]
            row["cli_forward_ips"] = median(p[1] for p in pairs)
            row["cli_forward_samples"] = [round(p[1], 3) for p in pairs]
            row["cli_runs"] = reps_row
            log(f"{w.name}: CLI top-{n} batch {b}: {row['cli_ips']:.2f} img/s ({row['cli_ratio']:.2f}x forward)")
    w.phase("CLI", began)


def measure_tutorial(w: Worker) -> None:
    """(c) the Keras tutorial loop: per image, per class, an eager GradientTape; extrapolated from a few images."""
    import keras
    import tensorflow as tf

    model = w.cam.model
    grad_model = keras.Model(model.inputs, [model.get_layer(w.cam.layer).output, model.output])

    def tutorial_image(x1, n):
        preds = model(x1, training=False)  # the tutorial's model.predict, to pick the classes
        top_classes = tf.math.top_k(preds[0], k=n).indices.numpy()
        maps = []
        for c in top_classes:
            with tf.GradientTape() as tape:
                last_conv_layer_output, preds = grad_model(x1)
                class_channel = preds[:, int(c)]
            grads = tape.gradient(class_channel, last_conv_layer_output)
            pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
            heatmap = last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis]
            heatmap = tf.squeeze(heatmap)
            heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
            maps.append(heatmap.numpy())
        return maps

    singles = [w.cam.prepare([img]) for img in w.decoded]
    tutorial_image(singles[0], 1)  # warm-up (eager first-call costs)
    tutorial_image(singles[0], 1)
    for n in TOPS:
        count = w.args.tutorial_images
        start = perf()
        for i in range(count):
            tutorial_image(singles[i % len(singles)], n)
        elapsed = perf() - start
        w.result["tutorial"][str(n)] = {"ips": count / elapsed, "images": count, "seconds": elapsed}
        log(f"{w.name}: tutorial top-{n}: {count / elapsed:.3f} img/s ({elapsed / count:.2f} s/image)")


def fill_ratios(w: Worker) -> None:
    """Every row's forward floor (median of all forward samples at its batch size) and tutorial ratio."""
    result = w.result
    result["forward_ips"] = {str(b): median(w.forward_samples[b]) for b in BATCHES}
    result["forward_samples"] = {str(b): [round(v, 3) for v in w.forward_samples[b]] for b in BATCHES}
    result["forward_calls_per_sample"] = {str(b): w.calls[("forward", b)] for b in BATCHES}
    for b in BATCHES:
        fwd = result["forward_ips"][str(b)]
        for n in TOPS:
            row = result["rows"][f"{n}/{b}"]
            row["forward_ips"] = fwd
            row["tutorial_ips"] = result["tutorial"][str(n)]["ips"]
            row["tutorial_ratio"] = row["tutorial_ips"] / fwd


def serial_stages(w: Worker, n: int, b: int, chosen: list):
    """The pipeline's stage functions called one after the other on the same images, nothing beside
    them: what each stage costs alone."""
    import numpy as np

    from gradcam_cli.io import images as g_images
    from gradcam_cli.io import preprocess as g_pre
    from gradcam_cli.io import writers as g_writers
    from gradcam_cli.render import overlay as g_render

    colormap = g_render.colormap_id("jet")
    out = pathlib.Path(tempfile.mkdtemp(prefix="serial-", dir=w.tmp_root))
    profiler, patched = install_stage_profiler()
    try:
        cpu0, start = cpu_seconds(), perf()
        for i in range(0, len(chosen), b):
            chunk = chosen[i:i + b]
            originals = [g_images.decode(ref.path) for ref in chunk]
            small = [g_pre.resize(img, w.profile.input_size) for img in originals]
            explained = w.cam.explain_prepared(g_pre.normalise(np.stack(small), w.profile), top=n)
            for j, (img, res) in enumerate(zip(originals, explained)):
                pictures = g_render.overlays(img, res.maps, alpha=0.4, colormap=colormap)
                for k, picture in enumerate(pictures):
                    g_writers.write_bytes(out / f"{i + j}.{k}.jpg", g_render.encode_jpeg(picture, 90))
        wall, cpu = perf() - start, cpu_seconds() - cpu0
    finally:
        profiler.restore()
        shutil.rmtree(out, ignore_errors=True)
    return profiler, patched, wall, cpu


def measure_profile(w: Worker) -> None:
    """Per-stage profile of the CLI path at batch 16: each stage alone (``serial_stages``), then one
    extra ``run_folder`` with the same functions wrapped: where the pipeline's threads spend their
    (wall) time, contention included."""
    began = w.phase("profile")
    b, refs = max(BATCHES), w.refs
    for n in TOPS:
        # reference samples taken now, next to the profiled runs
        fwd_now = sample(w.forward, w.batches[b], w.calls[("forward", b)])
        engine_now = sample(w.explainers[n], w.batches[b], w.calls[(n, b)])
        alone, _, alone_wall, alone_cpu = serial_stages(w, n, b, refs)
        profiler, patched = install_stage_profiler()
        try:
            cpu0 = cpu_seconds()
            elapsed = cli_run(w, n, b, refs)
            cpu = cpu_seconds() - cpu0
        finally:
            profiler.restore()
        stages = [{
            "stage": stage, "calls": profiler.calls[stage],
            "seconds": profiler.exclusive(stage), "inclusive": profiler.inclusive[stage],
            "threads": sorted(profiler.threads[stage]),
            "alone_seconds": alone.exclusive(stage), "alone_calls": alone.calls[stage],
        } for stage, _, _ in STAGES if stage in patched]
        model_s = profiler.inclusive["model (Explainer call)"]
        w.result["profile"][str(n)] = {
            "top": n, "batch": b, "images": len(refs), "wall": elapsed, "cpu": cpu, "stages": stages,
            "alone_wall": alone_wall, "alone_cpu": alone_cpu,
            "model_ips_in_run": len(refs) / model_s if model_s else None,
            "engine_ips_alone": engine_now,
            "forward_ips": fwd_now,
        }
        log(f"{w.name}: profiled CLI top-{n} batch {b}: pipeline {elapsed:.1f}s, stages one after the other "
            f"{alone_wall:.1f}s, for {len(refs)} images")
    w.phase("profile", began)


def worker(args) -> dict:
    """One backbone, in its own process: forward vs engine, CLI, tutorial, and the stage profile."""
    w = build_worker(args)
    measure_engine(w)
    measure_cli(w)
    measure_tutorial(w)
    fill_ratios(w)
    if w.name in args.profile_backbones:
        measure_profile(w)
    w.result["maxrss_mib"] = maxrss_mib()
    return w.result


# ---------------------------------------------------------------------------
# the memory worker


def memory_worker(args) -> dict:
    import tensorflow as tf  # noqa: F401  (so that the baseline includes TensorFlow)

    from gradcam_cli.cam import GradCAM
    from gradcam_cli.io.discover import iter_inputs
    from gradcam_cli.run.folder import run_folder
    from gradcam_cli.settings import RunOptions, RunSettings

    cam = GradCAM(args.memory_backbone, weights=args.weights)
    built = maxrss_mib()
    refs = list(iter_inputs([args.memory_worker]))
    out = pathlib.Path(tempfile.mkdtemp(prefix="mem-out-", dir=args.tmp))
    try:
        start = perf()
        summary = run_folder(cam, refs, RunSettings.from_json({"top": 3}), RunOptions(out_dir=str(out), batch_size=16))
        elapsed = perf() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"images": len(refs), "done": summary.done, "failed": summary.failed, "seconds": elapsed,
            "maxrss_built_mib": built, "maxrss_mib": maxrss_mib(), "rss_end_mib": current_rss_mib()}


# ---------------------------------------------------------------------------
# the parent: data, subprocesses, tables


def system_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (/proc/stat; steal excluded)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg", encoding="ascii").read().split()[:3])
    except OSError:
        return "?"


def run_child(argv: list, label: str) -> dict | None:
    """Run this script as a worker subprocess; its JSON result, plus how busy the rest of the machine was."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = handle.name
    try:
        start, busy0, own0 = perf(), system_busy_seconds(), children_cpu_seconds()
        proc = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).resolve()), *argv, "--result", result_path],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        noise = ("WARNING: All log messages", "I0000 ", "E0000 ", "W0000 ", "oneDNN custom operations",
                 "cuda drivers", "UserWarning", "warnings.warn")
        other_lines: list[str] = []
        for line in proc.stderr:  # progress lines live; the rest kept for an error message
            line = line.rstrip("\n")
            if line.startswith("[bench "):
                print(line, file=sys.stderr, flush=True)
            elif line.strip() and not line.startswith(noise):
                other_lines = (other_lines + [line])[-40:]
        returncode = proc.wait()
        if returncode:
            print("\n".join(other_lines), file=sys.stderr, flush=True)
            log(f"{label}: FAILED with exit code {returncode}")
            return {"error": f"exit code {returncode}: " + (other_lines or ["?"])[-1]}
        wall, busy1, own1 = perf() - start, system_busy_seconds(), children_cpu_seconds()
        data = json.loads(pathlib.Path(result_path).read_text())
        data["process_seconds"] = wall
        data["own_cores"] = (own1 - own0) / wall
        # other processes on the machine (colleagues' test runs, ...) while this worker ran, in cores
        data["other_cores"] = None if busy0 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
        return data
    finally:
        pathlib.Path(result_path).unlink(missing_ok=True)


def fmt(value, digits=2) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value < 0.1:
        return f"{value:.{digits + 1}f}"
    return f"{value:.{digits}f}"


def fmt_load(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def throughput_lines(meta: dict, results: dict, targets: list) -> list:
    """The main table, one row per backbone, top and batch size, and what its columns mean; appends to ``targets``."""
    lines: list[str] = []
    lines.append("# gradcam-cli: Grad-CAM top-N vs a bare forward pass")
    lines.append("")
    lines.append("## Throughput (images/s; ratio = images/s / compiled forward images/s at the same batch size)")
    lines.append("")
    lines.append("| backbone | top | batch | forward img/s | engine img/s | engine ratio | forward img/s around "
                 "CLI runs | CLI img/s | CLI ratio | tutorial img/s | tutorial ratio | targets |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, res in results.items():
        if res is None or "error" in res:
            lines.append(f"| {name} | | | error: {(res or {}).get('error', '?')} | | | | | | | | |")
            continue
        for b in BATCHES:
            for n in TOPS:
                row = res["rows"][f"{n}/{b}"]
                marks = []
                if n == 5:
                    ok = row["engine_ratio"] >= ENGINE_TARGET
                    marks.append(f"engine ≥{ENGINE_TARGET}x: {verdict(ok)}")
                    targets.append((f"engine top-5 ≥ {ENGINE_TARGET}x forward, {name}, batch {b}",
                                    row["engine_ratio"], f"≥ {ENGINE_TARGET}", ok))
                want = CLI_TARGETS.get((name, n, b))
                if want is not None:
                    ok = row["cli_ratio"] >= want
                    marks.append(f"CLI ≥{want}x: {verdict(ok)}")
                    targets.append((f"whole CLI on 1024x768 JPEGs, {name}, top-{n}, batch {b}",
                                    row["cli_ratio"], f"≥ {want}", ok))
                lines.append(
                    f"| {name} | {n} | {b} | {fmt(row['forward_ips'])} | {fmt(row['engine_ips'])} | "
                    f"{row['engine_ratio']:.2f} | {fmt(row.get('cli_forward_ips', row['cli_ips'] / row['cli_ratio']))} | "
                    f"{fmt(row['cli_ips'])} | {row['cli_ratio']:.2f} | "
                    f"{fmt(row['tutorial_ips'], 3)} | {row['tutorial_ratio']:.3f} | {'; '.join(marks)} |")
    lines.append("")
    lines.append("- *forward*: `tf.function(lambda x: model(x, training=False))`, batch dimension `None`, "
                 "on the same preprocessed batch as the engine: the floor. The first forward column is the median "
                 "of all forward samples of that batch size; the second, of those taken around the CLI runs "
                 "(minutes later: on a shared machine the load, hence the speed, changes in between, which is "
                 "why every ratio is taken against forward samples measured next to it).")
    lines.append("- *engine*: `gradcam_cli.engine.explainer.Explainer(split, top=N)` on preprocessed float32 batches; "
                 "every image gets all N maps. Ratio: median over samples of engine / (mean of the forward "
                 "samples taken just before and just after it); forward and engine samples alternate.")
    lines.append("- *CLI*: `gradcam_cli.run.folder.run_folder` (in process, after one warm-up run) on synthetic "
                 f"1024x768 JPEGs (quality 90; {meta.get('cli_sources', '?')} generated, each copied "
                 f"{meta.get('cli_copies', '?')} times): decode, resize, model, N "
                 "overlays blended at 1024x768, JPEG encode (quality 90), atomic writes, predictions.jsonl/.json; "
                 f"about {meta.get('cli_seconds', '?'):g} s of forward-pass work per run (at least 64 images; images per run in the table "
                 "below). Ratio: median over runs of "
                 "CLI / (mean of the forward samples taken just before and just after the run).")
    lines.append("- *tutorial*: per image, per class, an eager `GradientTape` over "
                 "`keras.Model(inputs, [layer.output, model.output])` (Keras' Grad-CAM tutorial), one "
                 "image at a time whatever the batch column says; extrapolated from a few images; ratio "
                 "against that row's forward pass. Model only: no decoding or overlays.")
    lines.append("")
    return lines


def backbone_lines(results: dict) -> list:
    """One row per backbone: its model, the run's rounds and sizes, and the other processes' load."""
    lines: list[str] = []
    lines.append("| backbone | input | target layer (h, w, K) | engine path | params | weights | build s "
                 "| engine rounds (b1; b16) | CLI images/run x runs | engine traces | process min "
                 "| other load, cores: whole process (engine b1 / engine b16 / CLI / profile) |")
    lines.append("|---|---|---|---|---:|---|---:|---|---|---|---:|---:|")
    for name, res in results.items():
        if res is None or "error" in res:
            continue
        h, w = res["input_size"]
        lines.append(
            f"| {name} | {h}x{w} | `{res['target_layer']}` {tuple(res['feature_shape'])} | {res['engine_path']} "
            f"| {res['params'] / 1e6:.1f}M | {res['weights']} | {res['build_s']:.1f} "
            f"| {res['engine_rounds']['1']}; {res['engine_rounds']['16']} "
            f"| {res['cli_images']} x {'/'.join(sorted({str(r['cli_runs']) for r in res['rows'].values()}))} "
            f"| {', '.join(f'top-{k}: {v}' for k, v in res['engine_traces'].items())} "
            f"| {res['process_seconds'] / 60:.1f} | {fmt_load(res.get('other_cores'))} ("
            + " / ".join(fmt_load(res.get("other_load", {}).get(k)) for k in ("engine b1", "engine b16", "CLI", "profile"))
            + ") |")
    return lines


def memory_lines(meta: dict, memory: dict | None, targets: list) -> list:
    """Peak RSS over 100 vs 1,000 images; appends to ``targets``."""
    lines: list[str] = []
    if memory is not None:
        lines.append("")
        lines.append("## Peak memory: the whole pipeline over 100 vs 1,000 images")
        lines.append("")
        lines.append(f"`run_folder` on {meta['memory_backbone']} (weights {meta['weights']}), top-3, batch 16, "
                     f"{meta['memory_size']} JPEGs, each count in its own process; `ru_maxrss` at the end.")
        lines.append("")
        lines.append("| images | peak RSS MiB | peak RSS after model build MiB | added by the run MiB "
                     "| RSS at end MiB | run s | img/s | other load (cores) |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for count, res in memory.items():
            if res is None or "error" in res:
                lines.append(f"| {count} | error: {(res or {}).get('error', '?')} | | | | | | |")
                continue
            lines.append(f"| {res['images']:,} | {res['maxrss_mib']:.0f} | {res['maxrss_built_mib']:.0f} | "
                         f"{res['maxrss_mib'] - res['maxrss_built_mib']:.0f} | {fmt(res['rss_end_mib'])} | "
                         f"{res['seconds']:.1f} | {res['images'] / res['seconds']:.1f} | {fmt_load(res.get('other_cores'))} |")
        small, large = memory.get(100), memory.get(1000)
        if small and large and "error" not in small and "error" not in large:
            ratio = large["maxrss_mib"] / small["maxrss_mib"]
            ok = ratio <= MEMORY_TARGET
            lines.append("")
            lines.append(f"Peak RSS 1,000 / 100 images: **{ratio:.3f}x** (target ≤ {MEMORY_TARGET}x): {verdict(ok)}")
            targets.append(("peak RSS, 1,000 images / 100 images", ratio, f"≤ {MEMORY_TARGET}", ok))
    return lines


def profile_lines(meta: dict, results: dict) -> list:
    """Where the CLI's time goes, per profiled backbone and top."""
    lines: list[str] = []
    profiled = [(name, res) for name, res in results.items() if res and "error" not in res and res.get("profile")]
    if profiled:
        cores = meta["usable_cores"]
        lines.append("")
        lines.append("## Where the CLI's time goes (batch 16, 1024x768 JPEGs, ms per image)")
        lines.append("")
        lines.append("*alone*: the pipeline's own stage functions (`images.decode_sized`, `preprocess.resize`, "
                     "`preprocess.normalise`, `GradCAM.explain_prepared`, `render.overlays`, `render.encode_jpeg`, "
                     "`writers.write_bytes`) called one after the other on the same images, nothing beside them: "
                     "what each stage costs. *in the pipeline*: one more `run_folder` with the same functions "
                     "wrapped: wall time spent inside each stage, summed over the threads that ran it "
                     "(contention included; stages in different threads overlap, so the column can add up to "
                     "more than the wall time). Times are exclusive: `blend` excludes `upsample + colormap`; "
                     "`predictions -> Python records` excludes the model call.")
        for name, res in profiled:
            for n, prof in res["profile"].items():
                images = prof["images"]
                lines.append("")
                fwd_ms = 1000 / prof["forward_ips"]
                lines.append(
                    f"**{name}, top-{n}**, {images} images. Pipeline: {1000 * prof['wall'] / images:.1f} ms/image "
                    f"wall ({images / prof['wall']:.2f} img/s, {prof['cpu'] / prof['wall']:.2f} of {cores} cores "
                    f"busy); stages alone, one after the other: {1000 * prof['alone_wall'] / images:.1f} ms/image "
                    f"({prof['alone_cpu'] / prof['alone_wall']:.2f} cores busy); compiled forward pass alone: "
                    f"{fwd_ms:.1f} ms/image (sampled just before). The model ran at {fmt(prof['model_ips_in_run'])} img/s inside the "
                    f"pipeline vs {fmt(prof['engine_ips_alone'])} img/s alone (sampled just before).")
                lines.append("")
                lines.append("| stage | calls | alone ms/image | alone % | in the pipeline ms/image | threads |")
                lines.append("|---|---:|---:|---:|---:|---|")
                alone_total = sum(s["alone_seconds"] for s in prof["stages"])
                in_total = sum(s["seconds"] for s in prof["stages"])
                for s in sorted(prof["stages"], key=lambda s: -s["alone_seconds"]):
                    if not s["calls"] and not s["alone_calls"]:
                        continue
                    lines.append(f"| {s['stage']} | {s['calls']} | {1000 * s['alone_seconds'] / images:.1f} | "
                                 f"{100 * s['alone_seconds'] / alone_total:.0f}% | "
                                 f"{1000 * s['seconds'] / images:.1f} | {', '.join(s['threads']) or '—'} |")
                lines.append(f"| **sum** | | {1000 * alone_total / images:.1f} | 100% | "
                             f"{1000 * in_total / images:.1f} | |")
    return lines


def target_lines(targets: list) -> list:
    """Every target, measured against wanted."""
    lines: list[str] = []
    lines.append("")
    lines.append("## Targets")
    lines.append("")
    lines.append("| target | measured | wanted | result |")
    lines.append("|---|---:|---:|---|")
    for what, value, want, ok in targets:
        lines.append(f"| {what} | {'—' if value is None else f'{value:.3f}'} | {want} | {verdict(ok)} |")
    return lines


def machine_lines(meta: dict) -> list:
    """The machine, the library's version and the run's settings and command."""
    lines: list[str] = []
    lines.append("")
    lines.append("## Machine and run")
    lines.append("")
    lines.append(f"- Machine: {meta['cpu']}, {meta['cores']} cores ({meta['usable_cores']} usable), "
                 f"{meta['mem_gib']:.1f} GiB RAM, {meta['platform']}; Python {meta['python']}, "
                 f"TensorFlow {meta.get('tf_version', '?')}, Keras {meta.get('keras_version', '?')}; "
                 f"GPU seen by TensorFlow: {meta.get('gpus') or 'none'}.")
    lib = meta["library"]
    lines.append(f"- gradcam-cli {lib['version']} at commit {lib['commit'] or '?'} (sources sha256 "
                 f"{lib['sources_sha256']}, working tree as found); RunOptions fields: "
                 f"{', '.join(meta.get('run_options') or [])}.")
    lines.append(f"- Load average at start / end: {meta['load_start']} / {meta['load_end']}. *other load*: CPU "
                 "used by other processes on the machine while a worker ran, in cores (/proc/stat minus the "
                 "worker's own CPU time); anything well above 0 means the numbers of that worker are disturbed.")
    lines.append(f"- Run: {meta['mode']}; >= {meta['reps']} engine rounds per batch size (more within "
                 f"{meta['round_budget']:.0f} s, at most {meta['max_rounds']}), {meta['cli_reps']} timed CLI runs per row "
                 "(one fewer where a run takes more than ~12 s), "
                 f"~{meta['sample_seconds']} s per forward/engine sample, {meta['tutorial_images']} tutorial images "
                 f"per top; weights {meta['weights']} (random weights run at the same speed); started "
                 f"{meta['started']}, wall time {meta['wall_s'] / 60:.1f} min.")
    lines.append(f"- Command: `{meta['command']}`")
    return lines


def render_markdown(meta: dict, results: dict, memory: dict | None) -> tuple[str, list]:
    """The markdown report, and the list of (target, measured, wanted, ok)."""
    targets: list[tuple[str, float | None, str, bool | None]] = []
    lines = throughput_lines(meta, results, targets) + backbone_lines(results)
    lines += memory_lines(meta, memory, targets) + profile_lines(meta, results)
    lines += target_lines(targets) + machine_lines(meta)
    return "\n".join(lines) + "\n", targets


def parse_args(argv=None) -> argparse.Namespace:
    """The options, with the defaults of a full or a ``--quick`` run filled in."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"fewer rounds and images; backbones {','.join(QUICK_BACKBONES)} unless --backbones")
    parser.add_argument("--backbones", help=f"comma-separated (default {','.join(DEFAULT_BACKBONES)})")
    parser.add_argument("--out", help=f"also write the markdown report to this file (default: "
                                      f"{RESULTS.relative_to(REPO)} for a full run, none with --quick)")
    parser.add_argument("--json", help="also write the raw measurements to this JSON file")
    parser.add_argument("--weights", default="none", help="none (default) or imagenet")
    parser.add_argument("--no-memory", action="store_true", help="skip the 100 vs 1,000 images memory test")
    parser.add_argument("--profile-backbones", default=",".join(PROFILE_BACKBONES),
                        help="backbones whose CLI path gets a per-stage profile ('' for none)")
    parser.add_argument("--reps", type=int, help="minimum engine rounds per batch size (default 4, quick 2)")
    parser.add_argument("--round-budget", type=float,
                        help="seconds per batch size within which more engine rounds are run (default 40, quick 10)")
    parser.add_argument("--max-rounds", type=int, help="maximum engine rounds per batch size (default 12, quick 6)")
    parser.add_argument("--cli-reps", type=int, help="timed CLI runs per row (default 3, quick 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary image folder")
    parser.add_argument("--render", metavar="FILE.json", help="only re-render the report from a --json file")
    # internal: the subprocesses
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--memory-backbone", default="efficientnet_lite0", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--sample-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--cli-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--tutorial-images", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.out is None and not args.quick:
        args.out = str(RESULTS)

    args.reps = args.reps or (2 if args.quick else 4)
    args.round_budget = args.round_budget if args.round_budget is not None else (10.0 if args.quick else 40.0)
    args.max_rounds = args.max_rounds or (6 if args.quick else 12)
    args.cli_reps = args.cli_reps or (2 if args.quick else 3)
    args.sample_seconds = args.sample_seconds or (0.3 if args.quick else 0.5)
    args.cli_seconds = args.cli_seconds or (4.0 if args.quick else 8.0)
    args.tutorial_images = args.tutorial_images or (2 if args.quick else 4)
    args.profile_backbones = [b for b in (args.profile_backbones or "").split(",") if b]
    return args


def measure_all(args, backbones: list) -> tuple[dict, dict | None]:
    """Generate the JPEGs, run one worker process per backbone, then the two memory processes."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gradcam-bench-"))
    try:
        cli_dir = tmp / "jpeg1024x768"
        count = 32 if args.quick else 64
        log(f"generating {count} synthetic 1024x768 JPEGs, copied to {CLI_COPIES * count} files in {cli_dir}")
        make_copies(make_jpegs(tmp / "jpeg-src", count, 1024, 768, seed=1), cli_dir, CLI_COPIES * count)
        common = ["--images", str(cli_dir), "--tmp", str(tmp), "--weights", args.weights,
                  "--reps", str(args.reps), "--cli-reps", str(args.cli_reps),
                  "--round-budget", str(args.round_budget), "--max-rounds", str(args.max_rounds),
                  "--sample-seconds", str(args.sample_seconds), "--cli-seconds", str(args.cli_seconds),
                  "--tutorial-images", str(args.tutorial_images),
                  "--profile-backbones", ",".join(args.profile_backbones)] + (["--quick"] if args.quick else [])
        results = {}
        for name in backbones:
            log(f"{name}: starting its process")
            results[name] = run_child(["--worker", name, *common], name)

        memory = None
        if not args.no_memory:
            memory = {}
            base = make_jpegs(tmp / "small-src", 20, 320, 240, seed=2)
            for n in (100, 1000):
                folder = tmp / f"small{n}"
                make_copies(base, folder, n)
                log(f"memory: run_folder over {n} images of 320x240 in its own process")
                memory[n] = run_child(["--memory-worker", str(folder), "--tmp", str(tmp), "--weights", args.weights],
                                      f"memory {n}")
                if memory[n] and "error" not in memory[n]:
                    log(f"memory {n}: peak RSS {memory[n]['maxrss_mib']:.0f} MiB, {memory[n]['seconds']:.1f} s")
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    return results, memory


def run_meta(args, argv, results: dict, started: str, load_start: str, wall0: float) -> dict:
    """What the report says about the machine, the library and the run."""
    first = next((r for r in results.values() if r and "error" not in r), {})
    meta = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "mem_gib": mem_total_gib() or 0.0, "platform": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "tf_version": first.get("tf_version"),
        "keras_version": first.get("keras_version"), "gpus": first.get("gpus"),
        "run_options": first.get("run_options"), "library": library_fingerprint(),
        "mode": "quick" if args.quick else "full", "reps": args.reps, "cli_reps": args.cli_reps,
        "round_budget": args.round_budget, "max_rounds": args.max_rounds,
        "load_start": load_start, "load_end": loadavg(),
        "sample_seconds": args.sample_seconds, "tutorial_images": args.tutorial_images,
        "weights": args.weights, "memory_backbone": "efficientnet_lite0", "memory_size": "320x240",
        "cli_sources": 32 if args.quick else 64, "cli_copies": CLI_COPIES, "cli_seconds": args.cli_seconds,
        "started": started, "wall_s": perf() - wall0,
        "command": " ".join(["python", f"benchmarks/{pathlib.Path(__file__).name}", *(argv if argv is not None else sys.argv[1:])]),
    }
    return meta


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker or args.memory_worker:
        data = worker(args) if args.worker else memory_worker(args)
        pathlib.Path(args.result).write_text(json.dumps(data, indent=1))
        return 0

    if args.render:
        saved = json.loads(pathlib.Path(args.render).read_text(encoding="utf-8"))
        memory = {int(k): v for k, v in saved["memory"].items()} if saved.get("memory") else None
        report, _ = render_markdown(saved["meta"], saved["results"], memory)
        print(report)
        if args.out:
            pathlib.Path(args.out).write_text(report, encoding="utf-8")
        return 0

    from gradcam_cli.config.profiles import load_registry

    registry = load_registry()
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()] if args.backbones else \
        list(QUICK_BACKBONES if args.quick else DEFAULT_BACKBONES)
    unknown = [b for b in backbones if b not in registry]
    if unknown:
        print(f"bench_engine.py: error: unknown backbone(s) {', '.join(unknown)}; "
              f"choose from {', '.join(sorted(registry))}", file=sys.stderr)
        return 2

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_start = loadavg()
    wall0 = perf()
    results, memory = measure_all(args, backbones)
    meta = run_meta(args, argv, results, started, load_start, wall0)
    report, _ = render_markdown(meta, results, memory)
    print(report)
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(report, encoding="utf-8")
        log(f"wrote {args.out}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"meta": meta, "results": results, "memory": memory},
                                                      indent=1, default=str), encoding="utf-8")
    failed_runs = [n for n, r in results.items() if not r or "error" in r]
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
