#!/usr/bin/env python
"""A layer sweep's maps: one compiled pass for every layer against one explainer per layer.

For each keras.applications model (weights=None, so nothing downloads), the last K block
outputs (``gradcam_cli.models.sweep.sweep_layers``), top-1 Grad-CAM on preprocessed float32
batches, all in one process and interleaved round by round (the order rotated):

  (0) forward   the compiled bare forward pass: the floor, images/s;
  (a) sweep     ``gradcam_cli.engine.layer_sweep.SweepExplainer``: the model once, one backward
                pass to the earliest layer, every layer's maps;
  (b) per layer one ``gradcam_cli.cam.GradCAM`` (its compiled ``Explainer``) per layer, run one
                after the other: what ``evaluate`` would cost without (a);
  (c) one layer the ``Explainer`` at the last layer alone (the plain ``evaluate``).

Ratios: images/s over the forward pass's, the median over rounds of ratios measured back to back.

    python benchmarks/bench_sweep.py                      # -> benchmarks/results/sweep.md
    python benchmarks/bench_sweep.py --quick              # printed only
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

MODELS = (("ResNet50", 128), ("MobileNetV2", 128))


def _rate(fn, batch, repeats: int) -> float:
    fn(batch)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(batch)
    return repeats * len(batch) / (time.perf_counter() - start)


def measure(name: str, size: int, layers: int, batch_size: int, rounds: int, repeats: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from gradcam_cli.cam import GradCAM
    from gradcam_cli.engine.layer_sweep import SweepExplainer
    from gradcam_cli.models.sweep import sweep_layers

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=1000)
    paths = sweep_layers(model, layers)
    batch = np.random.default_rng(0).uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32)
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)])
    sweep = SweepExplainer(model, paths, ("gradcam",))
    cams = [GradCAM(model=model, layer=p) for p in paths]
    runs = {
        "forward": lambda b: forward(b).numpy(),
        "sweep": sweep,
        "per layer": lambda b: [c.explain_prepared(b, top=1) for c in cams],
        "one layer": lambda b: cams[-1].explain_prepared(b, top=1),
    }
    ratios: dict = {k: [] for k in runs if k != "forward"}
    rates: dict = {k: [] for k in runs}
    for r in range(rounds):
        order = list(runs)[r % len(runs):] + list(runs)[: r % len(runs)]
        found = {k: _rate(runs[k], batch, repeats) for k in order}
        for k, v in found.items():
            rates[k].append(v)
            if k != "forward":
                ratios[k].append(v / found["forward"])
    return {"model": name, "size": size, "layers": paths,
            "rates": {k: statistics.median(v) for k, v in rates.items()},
            "ratios": {k: statistics.median(v) for k, v in ratios.items()}}


def table(results: list, args) -> str:
    lines = [
        "# Layer sweep: one pass for every layer vs one explainer per layer",
        "",
        f"`python benchmarks/bench_sweep.py` on {platform.machine()}, {os.cpu_count()} CPUs (shared with other",
        f"jobs), TensorFlow CPU; top-1 Grad-CAM, batch {args.batch}, the last {args.layers} block outputs,",
        f"weights=None; median of {args.rounds} interleaved rounds of {args.repeats} batches each.",
        "Ratio: images/s over the compiled forward pass's in the same round.",
        "",
        "| model | input | layers | forward img/s | sweep (one pass) | per layer (K explainers) | one layer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        q = r["ratios"]
        lines.append(f"| {r['model']} | {r['size']} | {', '.join(r['layers'])} | {r['rates']['forward']:.1f} | "
                     f"{q['sweep']:.2f}x | {q['per layer']:.2f}x | {q['one layer']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one model, two rounds, printed only")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "sweep.md"))
    args = parser.parse_args()
    models = MODELS[:1] if args.quick else MODELS
    if args.quick:
        args.rounds = 2
    results = [measure(name, size, args.layers, args.batch, args.rounds, args.repeats) for name, size in models]
    text = table(results, args)
    print(text)
    if not args.quick:
        pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
