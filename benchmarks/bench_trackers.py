#!/usr/bin/env python
"""What does GradCAMCallback add to an epoch of training?

A small CNN (32 x 32 x 3 inputs, three 3 x 3 convolutions of 32 channels, a dense head; 2,048
images, batch 64: 32 steps an epoch) is trained twice from the same start, side by side in one
process: plain, and with ``GradCAMCallback`` explaining 8 images every epoch (top-1 Grad-CAM,
overlays logged to TensorBoard, flushed every epoch). The arms alternate epoch by epoch (one
``fit(initial_epoch=e, epochs=e + 1)`` each; Keras keeps its compiled train step across fits, the
callback its compiled pass), the order swapped every pair, so each ratio compares two epochs
taken seconds apart on a noisy machine; an epoch is timed from the first callback's
``on_epoch_begin`` to the last's ``on_epoch_end`` (so it includes GradCAMCallback's work: the
compiled pass, overlays, PNG encoding and the event-file write). The first epoch of every fit
(``model.fit``'s own tracing; the callback's one trace) is reported apart.

    python benchmarks/bench_trackers.py                 # ~3 min on 2 cores -> benchmarks/results/trackers.md
    python benchmarks/bench_trackers.py --epochs 4 --out /tmp/t.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from gradcam_cli.keras import GradCAMCallback  # noqa: E402

SIZE, SAMPLES, BATCH, IMAGES = 32, 2048, 64, 8
ARMS = ["plain", "control", "callback"]


def build() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times, self._start = [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


class Timed(GradCAMCallback):
    """GradCAMCallback, its own on_epoch_end timed (the share of the epoch it takes)."""

    calls: list

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.calls.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="timed epoch pairs after the first epoch")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "trackers.md"))
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (SAMPLES, SIZE, SIZE, 3)).astype(np.float32)
    y = rng.integers(0, 10, SAMPLES)
    models = {name: build() for name in ARMS}
    log_dir = tempfile.mkdtemp(prefix="bench-trackers-")
    callback = Timed(x[:IMAGES], log_dir=log_dir, every=1, top=1)
    callback.calls = []
    took = {name: [] for name in ARMS}
    for epoch in range(args.epochs + 1):  # epoch 0: each model's first (tracing), apart
        shift = epoch % len(ARMS)
        for name in ARMS[shift:] + ARMS[:shift]:  # the order rotates every epoch
            timer = EpochTimer()
            models[name].fit(x, y, batch_size=BATCH, initial_epoch=epoch, epochs=epoch + 1, verbose=0,
                             callbacks=[*([callback] if name == "callback" else []), timer])
            took[name].append(timer.times[0])
        print(f"epoch {epoch}: " + ", ".join(f"{n} {took[n][-1]:.3f} s" for n in ARMS), flush=True)
    ratio = {name: statistics.median(a / b for a, b in zip(took[name][1:], took["plain"][1:])) for name in ARMS}
    epoch_s = {name: statistics.median(took[name][1:]) for name in ARMS}
    per_call = statistics.median(callback.calls[1:])
    share = per_call / epoch_s["plain"]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    row = (lambda name, what: f"| {what} | {epoch_s[name]:.3f} s | {ratio[name]:.3f} | "
           f"{took[name][0]:.2f} s |")
    report = f"""# GradCAMCallback: the cost of maps every epoch

Measured {when} by `benchmarks/bench_trackers.py` on {platform.machine()} CPU ({os.cpu_count()} CPUs), TensorFlow {tf.__version__}, Keras {keras.__version__}; a small CNN (32 x 32 x 3, three 3 x 3 convolutions of 32 channels), {SAMPLES} images, batch {BATCH} ({SAMPLES // BATCH} steps an epoch); GradCAMCallback on {IMAGES} images, top-1 Grad-CAM, every epoch, to TensorBoard. Three arms from the same start alternate epoch by epoch (each epoch one `fit(initial_epoch=e, epochs=e + 1)`, the order rotated every epoch), {args.epochs} timed epochs each after a first; load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.

| arm | epoch (median) | epoch ratio to plain (median of per-epoch ratios) | first epoch (tracing) |
|---|---:|---:|---:|
{row("plain", "plain fit")}
{row("control", "plain fit again (a second identical model: the machine's noise)")}
{row("callback", "with GradCAMCallback, 8 images every epoch")}

**The callback's own work**, timed inside the epoch (its `on_epoch_end`: the compiled pass on {IMAGES}
images, overlays, and one compiled summary step writing and flushing the event file): median
{per_call * 1000:.1f} ms after its first call ({callback.calls[0] * 1000:.0f} ms there: the one trace of each
compiled step), **{share * 100:.1f}% of a plain epoch: {"PASS" if share <= 0.05 else "FAIL"} (<= 5%)**. Traces of the
compiled pass over {len(callback.calls)} epochs: {callback.trace_count()}.

Per-epoch ratios, callback / plain: {', '.join(f'{a / b:.3f}' for a, b in zip(took['callback'][1:], took['plain'][1:]))};
control / plain: {', '.join(f'{a / b:.3f}' for a, b in zip(took['control'][1:], took['plain'][1:]))}.

The per-epoch ratios spread with the machine's load (the control arm, identical to plain, spreads
as widely): the medians say the callback's epochs are as long as plain ones within that noise, and
the callback's own time, taken inside the epoch, is the figure that does not depend on the load.
The first epoch with the callback also pays its one trace (the Explainer's pass and the summary
step), once per model: later `fit` calls on the same model reuse both.
"""
    pathlib.Path(args.out).write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
