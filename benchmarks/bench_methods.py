"""Speed of the CAM family, against the compiled forward pass (the floor every ratio uses).

Rows, per backbone (random weights: same speed as trained ones), top-N at one batch size:

- each gradient method's engine (``Explainer(split, top=N, method=m)``) vs the forward pass
  (each ratio: the median over rounds of a forward call and an engine call made back to back);
- four gradient methods in one engine call (gradcam, gradcam++, xgradcam, layercam);
- guided (top-1): its cost over Grad-CAM vs one extra input-gradient pass (forward + backward to x);
- Score-CAM with ``scorecam_channels=M``: vs its floor (the M masked forward passes per image,
  run as bare compiled forward passes in the same chunks) and vs tf-keras-vis ``Scorecam``
  (``max_N=M``, same model, images and layer; one call per target class, as its API takes one
  class per image), measured side by side in this process, top-1 and top-N.

Samples alternate between the things compared (so a busy machine slows both), each figure is
the median of ``rounds`` timed calls after a warm-up call. Plain Python; returns a dict.

    python benchmarks/bench_methods.py      # ~10 minutes on 2 cores -> benchmarks/results/methods.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "methods.md")
GRADIENT = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")
FOUR = ("gradcam", "gradcam++", "xgradcam", "layercam")


def _median_times(fns: dict, rounds: int) -> dict:
    """Seconds per call of each function, median over ``rounds``, the functions alternating."""
    for fn in fns.values():
        fn()  # warm-up: tracing, allocation
    samples: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _paired(reference, fns: dict, rounds: int) -> dict:
    """Per function: median seconds per call and the median over rounds of ``reference`` time /
    its time, each ratio from two calls made back to back (a drift in the machine's load moves
    both), so the ratio is steadier than the ratio of two medians."""
    reference()
    for fn in fns.values():
        fn()  # warm-up: tracing, allocation
    samples: dict = {name: [] for name in fns}
    ratios: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            reference()
            middle = time.perf_counter()
            fn()
            end = time.perf_counter()
            samples[name].append(end - middle)
            ratios[name].append((middle - start) / (end - middle))
    return {name: (statistics.median(samples[name]), statistics.median(ratios[name])) for name in fns}


def _build(backbone: str, input_size: int | None):
    import keras
    import numpy as np

    from gradcam_cli.config.profiles import get_profile, load_registry, override_profile
    from gradcam_cli.io.preprocess import normalise
    from gradcam_cli.models.build import build_model
    from gradcam_cli.models.split import split_model

    profile = get_profile(load_registry(), backbone)
    if input_size:
        profile = override_profile(profile, input_size=input_size)
    keras.utils.set_random_seed(0)
    model = build_model(profile, "none")
    split = split_model(model, profile.target_layer)
    h, w = profile.input_size
    images = np.random.default_rng(0).integers(0, 256, (64, h, w, 3), dtype=np.uint8)
    return profile, model, split, normalise(images, profile)


def gradient_rows(backbone: str, batch: int = 8, top: int = 5, rounds: int = 5, input_size: int | None = None) -> dict:
    """Each gradient method's top-N engine, four together, and guided, against the forward pass."""
    import tensorflow as tf

    from gradcam_cli.engine.explainer import Explainer

    _, model, split, x = _build(backbone, input_size)
    xb = tf.constant(x[:batch])
    forward = tf.function(lambda z: model(z, training=False),
                          input_signature=[tf.TensorSpec((None, *x.shape[1:]), tf.float32)])
    engines = {m: Explainer(split, top=top, method=m) for m in GRADIENT}
    engines["four together"] = Explainer(split, top=top, method=FOUR)
    fns = {name: (lambda e=e: e(x[:batch])) for name, e in engines.items()}
    paired = _paired(lambda: forward(xb).numpy(), fns, rounds)
    times = {"forward": _median_times({"forward": lambda: forward(xb).numpy()}, rounds)["forward"]}
    rows = {name: {"seconds": seconds, "vs_forward": ratio} for name, (seconds, ratio) in paired.items()}

    @tf.function(input_signature=[tf.TensorSpec((None, *x.shape[1:]), tf.float32)])
    def input_gradient(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            total = tf.reduce_sum(tf.reduce_max(model(z, training=False), axis=-1))
        return tape.gradient(total, z)

    guided, plain = Explainer(split, top=1, method="guided"), Explainer(split, top=1, method="gradcam")
    g = _median_times({"guided": lambda: guided(x[:batch]), "gradcam top-1": lambda: plain(x[:batch]),
                       "input gradient": lambda: input_gradient(xb).numpy()}, rounds)
    extra = g["guided"] - g["gradcam top-1"]
    rows["guided (top-1)"] = {"seconds": g["guided"], "vs_forward": times["forward"] / g["guided"],
                              "extra_over_gradcam_s": extra, "input_gradient_pass_s": g["input gradient"],
                              "extra_vs_one_input_gradient_pass": extra / g["input gradient"]}
    return {"backbone": backbone, "batch": batch, "top": top, "forward_s": times["forward"],
            "strategy": engines["gradcam"].strategy, "rows": rows}


def scorecam_rows(backbone: str, images: int = 2, channels: int = 64, chunk: int = 64, top: int = 5,
                  rounds: int = 3, input_size: int | None = None) -> dict:
    """Score-CAM (``scorecam_channels=channels``) vs its floor and vs tf-keras-vis ``Scorecam``."""
    import numpy as np
    import tensorflow as tf
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    from gradcam_cli.engine.explainer import Explainer
    from gradcam_cli.settings import MethodOptions

    profile, model, split, x = _build(backbone, input_size)
    xs = x[:images]
    forward = tf.function(lambda z: model(z, training=False),
                          input_signature=[tf.TensorSpec((None, *x.shape[1:]), tf.float32)])
    passes = images * channels
    sizes = [chunk] * (passes // chunk) + ([passes % chunk] if passes % chunk else [])
    masked = [tf.constant(np.repeat(x[:1], size, axis=0)) for size in sizes]  # any input of that size costs the same
    options = MethodOptions(scorecam_batch=chunk, scorecam_channels=channels)
    ours = {n: Explainer(split, top=n, method="scorecam", options=options) for n in (1, top)}
    classes = ours[top](xs).classes
    theirs = Scorecam(model)
    layer = split.layer_name

    def tf_keras_vis(n):
        with contextlib.redirect_stdout(sys.stderr):  # its model.predict draws progress bars
            for j in range(n):  # one target class per image per call
                theirs(CategoricalScore(list(classes[:, j])), xs, penultimate_layer=layer, max_N=channels,
                       batch_size=chunk, expand_cam=False)

    def floor():
        for inputs in masked:
            forward(inputs).numpy()

    fns = {"floor": floor, "ours top-1": lambda: ours[1](xs), f"ours top-{top}": lambda: ours[top](xs),
           "tf-keras-vis top-1": lambda: tf_keras_vis(1), f"tf-keras-vis top-{top}": lambda: tf_keras_vis(top)}
    t = _median_times(fns, rounds)
    rows = {name: {"seconds": t[name], "vs_floor": t["floor"] / t[name]} for name in fns}
    for n in (1, top):
        rows[f"ours top-{n}"]["speedup_vs_tf_keras_vis"] = t[f"tf-keras-vis top-{n}"] / t[f"ours top-{n}"]
    return {"backbone": backbone, "images": images, "channels": channels, "chunk": chunk,
            "masked_passes": passes, "rows": rows}


def render(results: dict) -> str:
    lines = [f"# CAM family speed ({results['machine']})", ""]
    for g in results["gradient"]:
        lines += [f"## {g['backbone']}: batch {g['batch']}, top-{g['top']}, engine strategy {g['strategy']}; "
                  f"forward pass {g['forward_s'] * 1000:.0f} ms per batch", "",
                  "| method | ms per batch | vs forward pass |", "|---|---:|---:|"]
        for name, row in g["rows"].items():
            lines.append(f"| {name} | {row['seconds'] * 1000:.0f} | {row['vs_forward']:.2f}x |")
        gd = g["rows"]["guided (top-1)"]
        lines += ["", f"Guided (top-1) costs {gd['extra_over_gradcam_s'] * 1000:.0f} ms over Grad-CAM top-1; one "
                      f"input-gradient pass costs {gd['input_gradient_pass_s'] * 1000:.0f} ms "
                      f"({gd['extra_vs_one_input_gradient_pass']:.2f}x).", ""]
    s = results["scorecam"]
    lines += [f"## Score-CAM: {s['backbone']}, {s['images']} images, {s['channels']} channels "
              f"(`--scorecam-channels`), {s['chunk']} masked inputs per pass: {s['masked_passes']} masked passes", "",
              "| run | s | floor / run | ours vs tf-keras-vis |", "|---|---:|---:|---:|"]
    for name, row in s["rows"].items():
        speed = f"{row['speedup_vs_tf_keras_vis']:.2f}x faster" if "speedup_vs_tf_keras_vis" in row else ""
        lines.append(f"| {name} | {row['seconds']:.2f} | {row['vs_floor']:.2f} | {speed} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="efficientnet_lite0,resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scorecam-backbone", default="efficientnet_lite0")
    parser.add_argument("--scorecam-channels", type=int, default=64)
    parser.add_argument("--scorecam-images", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=None, help="override the profiles' input size (quick runs)")
    parser.add_argument("--out", default=RESULTS,
                        help="also write the markdown table here (default benchmarks/results/methods.md; '' for none)")
    args = parser.parse_args(argv)
    import platform

    import tensorflow as tf

    gpu = tf.config.list_physical_devices("GPU")
    results = {"machine": f"{'GPU' if gpu else 'CPU'}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
               "gradient": [gradient_rows(b, args.batch, args.top, args.rounds, args.input_size)
                            for b in args.backbones.split(",") if b],
               "scorecam": scorecam_rows(args.scorecam_backbone, args.scorecam_images, args.scorecam_channels,
                                         top=args.top, rounds=max(2, args.rounds // 2), input_size=args.input_size)}
    text = render(results)
    sys.stdout.write(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:  # a benchmark report, not a tool output
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
