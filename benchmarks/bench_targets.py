#!/usr/bin/env python
"""Do the segmentation and similarity targets run at the speed of their model's forward pass?

For each target, on a model of its kind (random weights: the same speed as trained ones):

  segmentation  a U-Net (4 levels, 16-128 filters, skip connections) at 128 x 128, 6 classes;
                the target explains the top-1 and top-3 classes (each summed over its
                predicted region) at the last decoder layer (auto);
  similarity    MobileNetV2 (alpha 1.0, 160 x 160, 10 classes), its default embedding (the
                pooled features before the head) against 1 and 4 reference embeddings, at its
                last 4-D layer (auto);

it times, at batch 16, (0) the compiled bare forward pass, ``tf.function(lambda x: model(x,
training=False))`` with a ``None`` batch axis, and (a) ``TargetExplainer`` (the engine the
CLI uses: one compiled call per batch giving every map). Ratio = engine images/s / forward
images/s; per round the two alternate, and the ratio is the median over rounds of the
per-round ratio, so a busy machine slows both alike. The issue asks >= 0.85x.

    python benchmarks/bench_targets.py                 # ~3 min on 2 cores -> benchmarks/results/targets.md
    python benchmarks/bench_targets.py --rounds 3 --out /tmp/t.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "targets.md")
GOAL = 0.85


def unet(size: int = 128, classes: int = 6):
    import keras

    inp = keras.Input((size, size, 3))
    skips, x = [], inp
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(x)
    for filters, skip in zip((64, 32, 16), reversed(skips)):
        x = keras.layers.Concatenate()([keras.layers.UpSampling2D()(x), skip])
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    logits = keras.layers.Conv2D(classes, 1)(x)
    return keras.Model(inp, keras.layers.Softmax()(logits), name="unet")


def mobilenet(size: int = 160):
    import keras

    return keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None, classes=10)


def cases():
    """(label, model, target name, TargetExplainer kwargs, reference count)."""
    seg, emb = unet(), mobilenet()
    return [
        ("segmentation top-1", seg, "segmentation", {"top": 1}, 0),
        ("segmentation top-3", seg, "segmentation", {"top": 3}, 0),
        ("similarity 1 reference", emb, "similarity", {"items": [0]}, 1),
        ("similarity 4 references", emb, "similarity", {"items": [0, 1, 2, 3]}, 4),
    ]


def measure(label, model, target, kwargs, refs, batch: int, rounds: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from gradcam_cli.engine.targeted import TargetExplainer
    from gradcam_cli.models.tap import tap_model
    from gradcam_cli.targets import get_target
    from gradcam_cli.targets.kinds import Context

    tap = tap_model(model, "auto", embedding="auto" if target == "similarity" else None)
    references = None
    if refs:
        size = int(np.prod(tap.out_shape))
        references = tf.constant(np.random.default_rng(0).normal(size=(refs, size)).astype(np.float32))
    scalars = get_target(target).scalars
    engine = TargetExplainer(tap, lambda out, mask: scalars(out, Context(mask, references)), **kwargs)
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)])
    x = np.random.default_rng(1).uniform(-1, 1, (batch, *model.inputs[0].shape[1:])).astype(np.float32)
    run_forward = lambda: forward(x).numpy()  # noqa: E731
    run_engine = lambda: engine([x])  # noqa: E731
    run_forward(), run_engine(), run_forward(), run_engine()  # tracing, allocation
    ratios, times = [], {"forward": [], "engine": []}
    for r in range(rounds):
        pair = (("forward", run_forward), ("engine", run_engine))
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
        ratios.append(times["forward"][-1] / times["engine"][-1])
    fwd, eng = statistics.median(times["forward"]), statistics.median(times["engine"])
    return {"case": label, "layer": tap.layer_names[0], "read": tap.out_name, "forward": batch / fwd,
            "engine": batch / eng, "ratio": statistics.median(ratios), "traces": engine.trace_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    import tensorflow as tf

    load = os.getloadavg()
    rows = [measure(*case, batch=args.batch, rounds=args.rounds) for case in cases()]
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    lines = [
        "# --target segmentation / similarity vs the compiled forward pass",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `benchmarks/bench_targets.py` "
        f"on {platform.machine()} {device} ({os.cpu_count()} CPUs), TensorFlow {tf.__version__}; batch {args.batch}, "
        f"{args.rounds} rounds, forward and engine alternating; load average {load[0]:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end.",
        "",
        "| case | target layer | tensor read | forward img/s | target engine img/s | ratio (median per round) | "
        f">= {GOAL}x | traces |",
        "|---|---|---|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['case']} | {row['layer']} | {row['read']} | {row['forward']:.1f} | {row['engine']:.1f} "
                     f"| {row['ratio']:.2f} | {'PASS' if row['ratio'] >= GOAL else 'FAIL'} | {row['traces']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
