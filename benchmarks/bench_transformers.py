"""Transformers: a small ViT's top-5 maps against its compiled forward pass, and Score-CAM on it in chunks.

The ViT is the tests' builder (``tests/transformer_builders.py``: functional, MultiHeadAttention,
mean-pooled head) at 224 px, patch 16 (14 x 14 tokens), width 192, 4 blocks, 3 heads, random
weights (same speed as trained ones), explained at its automatic layer (the final LayerNorm, a
token layer cut as its 14 x 14 grid; the head gets the residual stream beside it):

- the compiled forward pass, ``tf.function(lambda x: model(x, training=False))``, batch 16:
  the floor every ratio is taken against;
- ``Explainer(split, top=5, method=m)`` at batch 16 for Grad-CAM, four gradient methods in one
  call, attention rollout and its gradient-weighted form (one backward pass through every block
  per explained class, so about 1 / (1 + 2 x 5) of the forward pass is its natural rate at top-5);
  each ratio is the median over rounds of forward time / engine time, the two calls made back to back;
- Score-CAM (``scorecam_channels=64``) at batch 2 for each ``scorecam_batch`` chunk size, with
  the process's peak resident memory growth over the run before it (``ru_maxrss``): the masked
  inputs of one chunk exist at a time, never all of them.

    python benchmarks/bench_transformers.py     # ~5 minutes on 2 cores -> benchmarks/results/transformers.md
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "transformers.md")


def _paired(reference, fn, rounds: int) -> tuple[float, float, float]:
    """(reference seconds, fn seconds, median of reference / fn over back-to-back pairs)."""
    reference(), fn()
    ref, own, ratios = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        reference()
        middle = time.perf_counter()
        fn()
        end = time.perf_counter()
        ref.append(middle - start)
        own.append(end - middle)
        ratios.append((middle - start) / (end - middle))
    return statistics.median(ref), statistics.median(own), statistics.median(ratios)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(rounds: int, batch: int) -> list[str]:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import numpy as np
    import tensorflow as tf
    from transformer_builders import small_vit

    from gradcam_cli.engine.explainer import Explainer
    from gradcam_cli.models.split import split_model
    from gradcam_cli.settings import MethodOptions

    model = small_vit(size=224, patch=16, dim=192, depth=4, heads=3, classes=1000, positions=False)
    split = split_model(model)
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
    forward = tf.function(lambda t: model(t, training=False), input_signature=[tf.TensorSpec((None, 224, 224, 3))])
    title = (f"## small ViT (224 px, patch 16, width 192, 4 blocks): layer `{split.layer_name}` "
             f"({split.tokens.grid[0]}x{split.tokens.grid[1]} grid), batch {batch}, top-5")
    lines = [title, "",
             "| method | forward ms | maps ms | vs forward pass |", "|---|---:|---:|---:|"]
    for name, methods in [("gradcam", "gradcam"), ("four gradient methods", ["gradcam", "gradcam++", "xgradcam",
                                                                            "layercam"]), ("rollout", "rollout"),
                          ("gradient-weighted rollout", "gradrollout")]:
        explainer = Explainer(split, top=5, method=methods)
        ref, own, ratio = _paired(lambda: forward(x).numpy(), lambda e=explainer: e(x), rounds)
        lines.append(f"| {name} | {ref * 1e3:.0f} | {own * 1e3:.0f} | {ratio:.2f}x |")
        print(lines[-1], flush=True)
    lines += ["", "## Score-CAM on the ViT, 64 channels, batch 2, top-5, in chunks", "",
              "| scorecam_batch (masked inputs per pass) | ms per batch | peak RSS growth MB |", "|---:|---:|---:|"]
    small = x[:2]
    for chunk in (16, 64, 128):
        before = _peak_mb()
        explainer = Explainer(split, top=5, method="scorecam",
                              options=MethodOptions(scorecam_batch=chunk, scorecam_channels=64))
        explainer(small)
        times = []
        for _ in range(max(2, rounds // 3)):
            start = time.perf_counter()
            explainer(small)
            times.append(time.perf_counter() - start)
        lines.append(f"| {chunk} | {statistics.median(times) * 1e3:.0f} | {max(0.0, _peak_mb() - before):.0f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    body = run(args.rounds, args.batch)
    said = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `benchmarks/bench_transformers.py` "
            f"(load average {load:.1f} at the start; rounds {args.rounds}). Peak RSS growth is the process's "
            "ru_maxrss rise while that chunk size first ran, so later rows only show memory beyond the earlier "
            "rows' peak.")
    head = [f"# Transformers (CPU, {os.cpu_count()} cores, {platform.machine()})", "", said, ""]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(head + body) + "\n")


if __name__ == "__main__":
    main()
