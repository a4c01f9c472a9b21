#!/usr/bin/env python
"""The published faithfulness table: every CNN method of the default backbone on an offline photo set.

``benchmarks/trust_set/`` holds seven photos bundled with scikit-image, matplotlib and
scikit-learn (re-encoded as JPEG, quality 95; sources and licences in its LICENSES.md) and
``boxes.csv``, boxes drawn by hand around each photo's object and labelled with every
ImageNet class that names it (several rows per box). This script runs the real CLI on them:

    gradcam evaluate benchmarks/trust_set/ --metrics all --boxes-csv benchmarks/trust_set/boxes.csv
        --method gradcam --method gradcam++ ... --method scorecam --out TMP

(the default backbone, efficientnet_lite0, offline; its target layer ``top_activation``) and
writes the methods x metrics table, mean [95% bootstrap interval], beside the ``random`` and
``centre`` maps evaluate always scores, with torch-cam's published figures quoted under it.

    python benchmarks/bench_trust.py                   # ~15 min on 2 cores -> benchmarks/results/trust.md
    python benchmarks/bench_trust.py --method gradcam --out /tmp/t.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SET = os.path.join(HERE, "trust_set")
RESULTS = os.path.join(HERE, "results", "trust.md")
METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam")
#: the table's columns, in the issue's order: (evaluation.json metric, column head)
COLUMNS = (("average_drop", "average drop"), ("increase", "increase"),
           ("average_drop_torchcam", "average drop (torch-cam)"), ("increase_torchcam", "increase (torch-cam)"),
           ("deletion", "deletion"), ("insertion", "insertion"), ("road_combined", "ROAD"),
           ("occlusion", "occlusion"), ("pointing", "pointing"), ("localisation_error", "loc. error"),
           ("maxboxacc", "MaxBoxAcc"))

#: torch-cam's published average drop / increase in confidence (fractions; ours are x 100), on
#: Imagenette's validation set at 224 x 224, torchvision's ImageNet weights, their protocol
#: (ClassificationMetric: the map multiplies the preprocessed input), as their scripts/results.csv
#: records it (frgfm/torch-cam, commit 59e55b3c004d494eedd78d5ef94d8cf6164d9b55)
TORCHCAM = {
    "mobilenet_v3_large": {"GradCAM": (0.4063, 0.1368), "GradCAMpp": (0.3320, 0.1445),
                           "SmoothGradCAMpp": (0.3028, 0.1478), "XGradCAM": (0.4063, 0.1368),
                           "LayerCAM": (0.2790, 0.1712)},
}


def run_evaluate(methods: tuple[str, ...], out: str) -> float:
    """Run the CLI; returns its wall time in seconds."""
    command = [sys.executable, "-m", "gradcam_cli", "evaluate", SET, "--metrics", "all",
               "--boxes-csv", os.path.join(SET, "boxes.csv"), "--out", out, "--seed", "0", "--quiet"]
    for method in methods:
        command += ["--method", method]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def cell(stat: dict | None) -> str:
    if stat is None:
        return "-"
    return f"{stat['mean']:.1f} [{stat['low']:.1f}, {stat['high']:.1f}]"


def table(evaluation: dict) -> list[str]:
    better = evaluation["better"]
    heads = [f"{head} ({'↓' if better.get(key) == 'lower' else '↑'})" for key, head in COLUMNS]
    lines = ["| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(COLUMNS)]
    for method, stats in evaluation["aggregate"].items():
        name = f"*{method}*" if method in ("random", "centre") else method
        lines.append(f"| {name} | " + " | ".join(cell(stats.get(key)) for key, _ in COLUMNS) + " |")
    return lines


def report(evaluation: dict, seconds: float, methods: tuple[str, ...]) -> str:
    n = evaluation["summary"]["done"]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    torchcam = ["| model (torch-cam) | method | average drop (↓) | increase (↑) |", "|---|---|---|---|"]
    for model, rows in TORCHCAM.items():
        for method, (drop, increase) in rows.items():
            torchcam.append(f"| {model} | {method} | {100 * drop:.2f} | {100 * increase:.2f} |")
    return "\n".join([
        "# The faithfulness table",
        "",
        f"`python benchmarks/bench_trust.py`, {stamp}, {platform.machine()} ({os.cpu_count()} CPUs, shared and",
        f"busy), {seconds / 60:.1f} min. Backbone `{evaluation['backbone']}` (target layer",
        f"`{evaluation['target_layer']}`, {evaluation['input_size'][0]} px), the {n} photos of",
        "`benchmarks/trust_set/` with their hand-drawn boxes; methods: " + ", ".join(f"`{m}`" for m in methods) + ".",
        "Mean [95% bootstrap interval, 1000 resamples, seed 0] over the images; every figure x 100 except",
        "occlusion (a rank correlation, -1..1, shown x 100 too). The explained class is each image's top-1;",
        "the box metrics count a box only when one of its labels is that class (the rocket's top-1,",
        "`drilling_platform`, and the astronaut's, `bobsled`, name none of their boxes: misses).",
        "Definitions: [docs/evaluate.md](../../docs/evaluate.md).",
        "",
        *table(evaluation),
        "",
        f"With {n} images the intervals are wide: the table says which methods a set this small can",
        "tell apart from the random and centre maps, not a ranking among close methods.",
        "",
        "## torch-cam's published figures, for comparison",
        "",
        "torch-cam (frgfm/torch-cam, `scripts/results.csv` at commit 59e55b3) publishes average drop and",
        "increase in confidence with its `ClassificationMetric` (the map multiplies the preprocessed",
        "input: our `average drop (torch-cam)` and `increase (torch-cam)` columns) for torchvision's",
        "MobileNetV3-Large on Imagenette's validation set (3,925 images, 224 x 224):",
        "",
        *torchcam,
        "",
        "Other model, other data: set them beside our columns for the order of magnitude and the",
        "methods' order, not for equality. torch-cam's ResNet-18 figures are not in the sources",
        "available offline to this project, so none are quoted here.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", action="append", help="a method (repeat); default: every CNN method")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    methods = tuple(args.method or METHODS)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = run_evaluate(methods, os.path.join(tmp, "eval"))
        with open(os.path.join(tmp, "eval", "evaluation.json"), encoding="utf-8") as handle:
            evaluation = json.load(handle)
    text = report(evaluation, seconds, methods)
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
