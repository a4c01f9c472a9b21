#!/usr/bin/env python
"""3-D maps against the compiled forward pass of the same 3-D model, and the memory of a 256^3 volume.

The model: a small 3-D CNN on 64^3 one-channel volumes (Conv3D 16 -> pool -> Conv3D 32 -> pool ->
Conv3D 64, the target at 16^3 x 64 -> global average pool -> Dense 2). Per batch of volumes, top-1:

- the forward pass, compiled (``tf.function`` of the model, what the explainer's forward costs at least);
- each method defined on volumes (:class:`gradcam_cli.engine.volume.VolumeExplainer`), alone, and the
  six gradient / activation methods together (one pass); Score-CAM against its floor, the 64
  masked forward passes alone.

Samples alternate between the paths in a new random order each round (Score-CAM and its floor, seconds
each, in rounds of their own), so the ratios hold on a busy machine. ``--memory`` also runs one
256^3 NIfTI volume through :class:`gradcam_cli.run.volumes.VolumeStep` (read, resize to 64^3, explain,
place the map back, write NIfTI + montage + GIF) in a fresh process and reports its peak RSS above
the loaded model.

    python benchmarks/bench_volumes.py --memory    # -> benchmarks/results/volumes.md (and JSON on stdout)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "volumes.md"
GRADIENT = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam")


def model(side: int = 64):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((side, side, side, 1))
    x = keras.layers.Conv3D(16, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling3D(2)(x)
    x = keras.layers.Conv3D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling3D(2)(x)
    x = keras.layers.Conv3D(64, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling3D()(x)
    out = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out, name="bench3d")


def measure(batch: int, rounds: int, side: int) -> dict:
    import tensorflow as tf

    from gradcam_cli.engine.volume import VolumeExplainer, masked_volume_scores
    from gradcam_cli.models.split import split_model

    m = model(side)
    split = split_model(m, "target")
    x = np.random.default_rng(0).normal(0, 1, (batch, side, side, side, 1)).astype(np.float32)
    spec = [tf.TensorSpec((None, side, side, side, 1), tf.float32)]
    forward = tf.function(lambda v: m(v, training=False), input_signature=spec)
    runs = {"forward": lambda: forward(x).numpy()}
    for name in GRADIENT + ("scorecam",):
        explainer = VolumeExplainer(split, top=1, method=name)
        runs[name] = lambda e=explainer: e(x)
    together = VolumeExplainer(split, top=1, method=list(GRADIENT))
    runs["six together"] = lambda: together(x)
    acts = split.trunk(x)
    classes = tf.zeros((batch, 1), tf.int32)
    floor = tf.function(lambda v, a: masked_volume_scores(lambda z: split.full(z)[1], v, a, classes, 256))
    runs["scorecam floor"] = lambda: floor(x, acts).numpy()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()
        fn()  # warm: tracing, XLA
    heavy = ("scorecam", "scorecam floor")  # seconds each: timed in rounds of their own, after the light ones
    rng = np.random.default_rng(0)
    for group in ([n for n in runs if n not in heavy], list(heavy)):
        for _ in range(rounds if group[0] != "scorecam" else max(3, rounds // 4)):
            for name in rng.permutation(group):  # a new order each round: no path always follows another
                start = time.perf_counter()
                runs[name]()
                times[name].append(1000 * (time.perf_counter() - start))
    median = {name: round(float(np.median(t)), 1) for name, t in times.items()}
    best = {name: round(float(np.min(t)), 1) for name, t in times.items()}
    return {"batch": batch, "side": side, "rounds": rounds, "median_ms": median, "best_ms": best,
            "devices": [d.device_type for d in tf.config.list_logical_devices()],
            "load_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def parts(batch: int, rounds: int, side: int) -> dict:
    """Where "six together" spends its time, each part compiled alone and timed side by side: the
    trunk (input -> target layer, what every map needs), the five gradient maps in their XLA cluster
    (given the activations and the head's gradients), Eigen-CAM's map outside XLA (as the explainer
    runs it) and inside (what moving it into the cluster would cost)."""
    import tensorflow as tf

    from gradcam_cli.engine.volume import VolumeExplainer, first_component_gram
    from gradcam_cli.models.split import split_model

    m = model(side)
    split = split_model(m, "target")
    x = np.random.default_rng(0).normal(0, 1, (batch, side, side, side, 1)).astype(np.float32)
    spec = [tf.TensorSpec((None, side, side, side, 1), tf.float32)]
    forward = tf.function(lambda v: m(v, training=False), input_signature=spec)
    trunk = tf.function(lambda v: split.trunk(v), input_signature=spec)
    acts = trunk(x)
    with tf.GradientTape() as tape:
        tape.watch(acts)
        total = tf.reduce_sum(split.head(acts)[:, 0])
    grads = tape.gradient(total, acts)
    five = VolumeExplainer(split, top=1, method=list(GRADIENT[:5]))
    eigen, eigen_xla = tf.function(first_component_gram), tf.function(first_component_gram, jit_compile=True)
    runs = {"forward": lambda: forward(x).numpy(), "trunk": lambda: trunk(x).numpy(),
            "five gradient maps (XLA)": lambda: five._fused_maps(acts, acts, grads).numpy(),
            "eigencam map": lambda: eigen(acts).numpy(), "eigencam map in XLA": lambda: eigen_xla(acts).numpy()}
    for fn in runs.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    rng = np.random.default_rng(1)
    for _ in range(rounds):
        for name in rng.permutation(list(runs)):
            start = time.perf_counter()
            runs[name]()
            times[name].append(1000 * (time.perf_counter() - start))
    return {"best_ms": {n: round(float(np.min(t)), 2) for n, t in times.items()},
            "median_ms": {n: round(float(np.median(t)), 2) for n, t in times.items()},
            "load_1min": round(os.getloadavg()[0], 2), "rounds": rounds, "batch": batch}


def parts_section(figures: dict) -> str:
    b, m = figures["best_ms"], figures["median_ms"]
    rows = [f"| {name} | {b[name]} | {m[name]} | {100 * b[name] / b['forward']:.1f}% |" for name in b]
    return "\n".join([
        "## Where the time goes (`--parts-only`)",
        "",
        f"Batch {figures['batch']}, {figures['rounds']} alternating rounds, load (1 min) {figures['load_1min']}: each "
        "part of \"six together\" compiled alone.",
        "",
        "| part | ms, best | median | of the forward pass, best |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"\"Six together\" is the trunk, the head's forward and backward pass on the activations (small), the five "
        f"gradient maps ({100 * b['five gradient maps (XLA)'] / b['forward']:.1f}% of the forward pass) and Eigen-CAM's "
        f"map ({100 * b['eigencam map'] / b['forward']:.1f}%). Eigen-CAM's floor is its K x K covariance, a "
        f"(P x K)^T (P x K) product of 2 B P K^2 = {2 * figures['batch'] * 4096 * 64 * 64 / 1e6:.0f} MFLOP here "
        "(P = 16^3 positions, K = 64 channels), then a float64 eigh of 64 x 64 and one projection; inside the XLA "
        f"cluster it takes {b['eigencam map in XLA'] / b['eigencam map']:.1f}x as long, so it stays outside. The two "
        f"add {100 * (b['five gradient maps (XLA)'] + b['eigencam map']) / b['forward']:.0f}% to the trunk here, which, "
        "with the head's passes, holds the six together near 0.9x of the forward pass on this model (the table "
        "above: 0.88x in a quieter run), while each method alone stays within 6% of it.",
        "",
    ])


def _memory_child(path: str) -> None:
    """In a fresh process: the peak of the arrays one volume's step allocates (tracemalloc sees NumPy's
    allocations), and the process's peak RSS growth over the step."""
    import resource
    import tracemalloc

    from gradcam_cli.config.classes import generic
    from gradcam_cli.io.discover import InputRef
    from gradcam_cli.models.split import split_model
    from gradcam_cli.run.volumes import VolumeModel, VolumeStep
    from gradcam_cli.settings import ModelSettings, RunSettings

    m = model(64)
    vm = VolumeModel(m, split_model(m, "target"), (64, 64, 64), 1, generic(2))
    with tempfile.TemporaryDirectory() as tmp:
        step = VolumeStep(vm, RunSettings(model=ModelSettings(model="bench3d.keras"), methods=("gradcam",)),
                          pathlib.Path(tmp) / "out")
        step.explainer(np.zeros((1, 64, 64, 64, 1), np.float32))  # traced before the measure
        reset = _reset_peak_rss()
        before = _rss_mib("VmRSS")
        tracemalloc.start()
        start = time.perf_counter()
        record = step(InputRef(path, "v"))
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"status": record["status"], "peak_arrays_mib": round(peak / 2**20),
                      "rss_before_mib": round(before), "peak_rss_mib": round(_rss_mib("VmHWM") or after),
                      "peak_reset": reset, "seconds": round(seconds, 2)}))


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS of this process (``/proc/self/clear_refs`` 5), so that the peak read
    after the step is the step's own, not the model load's; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _rss_mib(field: str) -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc/self/status, in MiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def memory(side: int) -> dict:
    import nibabel

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "v.nii.gz"
        volume = np.random.default_rng(1).normal(0, 1, (side, side, side)).astype(np.float32)
        nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(path)], capture_output=True, text=True,
                             check=True)
    return {"side": side, **json.loads(out.stdout.strip().splitlines()[-1])}


def report(figures: dict) -> str:
    m, b = figures["median_ms"], figures["best_ms"]
    rows = [f"| {name} | {b[name]} | {m[name]} | {b['forward'] / b[name]:.2f}x | {m['forward'] / m[name]:.2f}x |"
            for name in (*GRADIENT, "six together", "scorecam")]
    lines = [
        "# 3-D maps vs the forward pass (`bench_volumes.py`)",
        "",
        f"A 3-D CNN on {figures['side']}^3 volumes (target Conv3D at 16^3 x 64), batch {figures['batch']}, top-1; "
        f"{figures['rounds']} alternating rounds (Score-CAM: a quarter as many); devices {', '.join(figures['devices'])}, "
        f"{figures['cpus']} CPUs, load (1 min) {figures['load_1min']} at the end. Compiled forward pass: "
        f"{b['forward']} ms per batch at best, {m['forward']} median. On a shared machine the best of the rounds "
        "is the least disturbed by other load; the median shows the spread.",
        "",
        "| method | ms per batch, best | median | vs forward pass, best | median |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Score-CAM runs one masked forward pass per channel (64): its floor, those passes alone, takes "
        f"{b['scorecam floor']} ms at best; Score-CAM is at {b['scorecam floor'] / b['scorecam']:.2f}x its floor.",
        "",
    ]
    if "memory" in figures:
        lines += [memory_paragraph(figures["memory"]), ""]
    return "\n".join(lines)


def memory_paragraph(mem: dict) -> str:
    peak = mem["peak_rss_mib"]
    how = ("its peak RSS reset before the step" if mem.get("peak_reset")
           else "the kernel's peak RSS of the whole process, the model load included")
    return (f"Memory: one {mem['side']}^3 float32 NIfTI volume through the volume step (read, resize to 64^3, "
            f"Grad-CAM top-1, the map placed back on {mem['side']}^3, NIfTI + montage + GIF written, {mem['seconds']} s), "
            f"in a fresh process: its arrays peak at {mem['peak_arrays_mib']} MiB (NumPy's allocations, traced by "
            f"tracemalloc); the process's resident memory was {mem['rss_before_mib']} MiB before the step (Python, "
            f"TensorFlow, the traced 64^3 model) and peaked at {peak} MiB during it ({how}), so the step adds "
            f"{peak - mem['rss_before_mib']} MiB. The volume itself is {mem['side'] ** 3 * 4 // 2 ** 20} MiB in "
            "float32; so is the map placed back on it.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--memory", action="store_true", help="also the peak memory of one 256^3 volume")
    parser.add_argument("--memory-only", action="store_true",
                        help="measure the memory alone and replace the results file's memory paragraph")
    parser.add_argument("--parts-only", action="store_true",
                        help="time the parts of the six methods together (trunk, gradient maps, Eigen-CAM) alone")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.memory_child is not None:
        _memory_child(args.memory_child)
        return
    if args.parts_only:  # a section of its own, replaced; the main table stays
        text = pathlib.Path(args.out).read_text(encoding="utf-8")
        head, _, rest = text.partition("## Where the time goes")
        tail = rest[rest.find("\nMemory:") + 1:] if "\nMemory:" in rest else ""
        found = parts(args.batch, args.rounds, args.side)
        pathlib.Path(args.out).write_text(head.rstrip("\n") + "\n\n" + parts_section(found) + "\n" + tail,
                                          encoding="utf-8")
        print(json.dumps(found))
        return
    if args.memory_only:  # the speed table stays as measured (it needs a quiet machine; memory does not)
        mem = memory(256)
        text = pathlib.Path(args.out).read_text(encoding="utf-8")
        kept = [line for line in text.split("\n") if not line.startswith("Memory:")]
        while kept and not kept[-1]:
            kept.pop()
        pathlib.Path(args.out).write_text("\n".join(kept) + "\n\n" + memory_paragraph(mem) + "\n", encoding="utf-8")
        print(json.dumps(mem))
        return
    figures = measure(args.batch, args.rounds, args.side)
    if args.memory:
        figures["memory"] = memory(256)
    pathlib.Path(args.out).write_text(report(figures), encoding="utf-8")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
