#!/usr/bin/env python
"""Do the segmentation, similarity and box targets run at the speed of their model's forward pass?

For each target, on a model of its kind (random weights: the same speed as trained ones):

  segmentation  a U-Net (4 levels, 16-128 filters, skip connections) at 128 x 128, 6 classes;
                the target explains the top-1 and top-3 classes (each summed over its
                predicted region) at the last decoder layer (auto);
  similarity    MobileNetV2 (alpha 1.0, 160 x 160, 10 classes), its default embedding (the
                pooled features before the head) against 1 and 4 reference embeddings, at its
                last 4-D layer (auto);
  box           a keras-hub RetinaNet (ResNet basic blocks 64-128-256-512, pyramid levels 3-7,
                256-wide heads with 2 convs, 20 classes) at 256 x 256; its top-1 and top-3
                detections (score > 0.5), each through its class logit at its anchor, at the
                backbone's last map (auto); the engine also decodes and suppresses (NMS) the boxes;

it times, at batch 16, (0) the compiled bare forward pass, ``tf.function(lambda x: model(x,
training=False))`` with a ``None`` batch axis, and (a) ``TargetExplainer`` (the engine the
CLI uses: one compiled call per batch giving every map). Ratio = engine images/s / forward
images/s; per round the two alternate, and the ratio is the median over rounds of the
per-round ratio, so a busy machine slows both alike. The issue asks >= 0.85x for segmentation
and similarity; the box rows have no goal (the forward pass there is the raw heads, without the
decoding and NMS that the engine runs too).

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
from dataclasses import replace

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


def retinanet(size: int = 256, classes: int = 20):
    import keras
    import numpy as np
    from keras_hub import models as hub_models

    keras.utils.set_random_seed(0)
    encoder = hub_models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(size, size, 3))
    backbone = hub_models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=7, use_p5=False,
                                            image_shape=(size, size, 3))
    model = hub_models.RetinaNetObjectDetector(backbone=backbone, num_classes=classes, pre_logits_num_conv_layers=2)
    last = model.box_head.prediction_layer  # boxes near their anchors, as a trained model's
    last.kernel.assign(np.asarray(last.kernel) * 0.01)
    last.bias.assign(np.zeros(last.bias.shape, np.float32))
    return model


def cases():
    """(label, model, target name, TargetExplainer kwargs, reference count)."""
    seg, emb, det = unet(), mobilenet(), retinanet()
    return [
        ("segmentation top-1", seg, "segmentation", {"top": 1}, 0),
        ("segmentation top-3", seg, "segmentation", {"top": 3}, 0),
        ("similarity 1 reference", emb, "similarity", {"items": [0]}, 1),
        ("similarity 4 references", emb, "similarity", {"items": [0, 1, 2, 3]}, 4),
        ("box top-1", det, "box", {"top": 1}, 0),
        ("box top-3", det, "box", {"top": 3}, 0),
    ]


def measure(label, model, target, kwargs, refs, batch: int, rounds: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from gradcam_cli.engine.targeted import TargetExplainer
    from gradcam_cli.models.tap import tap_model
    from gradcam_cli.targets import get_target
    from gradcam_cli.targets.kinds import Context

    if target == "box":
        from gradcam_cli.models.detector import tap_detector

        tap = tap_detector(model, "auto")
    else:
        tap = tap_model(model, "auto", embedding="auto" if target == "similarity" else None)
    references = None
    if refs:
        size = int(np.prod(tap.out_shape))
        references = tf.constant(np.random.default_rng(0).normal(size=(refs, size)).astype(np.float32))
    scalars = get_target(target).scalars
    context = Context(references=references, detector=tap if target == "box" else None)
    engine = TargetExplainer(tap, lambda out, mask: scalars(out, replace(context, mask=mask)), **kwargs)
    forward = tf.function(lambda x: model(x, training=False),  # a detector: its raw heads
                          input_signature=[tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)])
    x = np.random.default_rng(1).uniform(-1, 1, (batch, *model.inputs[0].shape[1:])).astype(np.float32)
    run_forward = lambda: tf.nest.map_structure(lambda t: t.numpy(), forward(x))  # noqa: E731
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


def verdict(row: dict) -> str:
    if row["case"].startswith("box"):
        return "no goal"
    return "PASS" if row["ratio"] >= GOAL else "FAIL"


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
        "# --target segmentation / similarity / box vs the compiled forward pass",
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
                     f"| {row['ratio']:.2f} | {verdict(row)} | {row['traces']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
