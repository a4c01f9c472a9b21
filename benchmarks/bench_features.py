"""Speed of the features beyond Grad-CAM's main path, each against its own floor, in one run.

    python benchmarks/bench_features.py     # ~10 minutes on 2 cores -> benchmarks/results/features.md

- filters: 64 filter patterns of VGG16 (weights none) block3_conv1 at 64 px, 40 steps: the batched,
  compiled ascent against the book's loop (a GradientTape per filter per step), eager and compiled;
- activations: the default backbone's first 8 conv / pool layers for one image;
- evaluate: the batched perturbation scorer against the plain compiled forward pass on as many
  inputs, and against a loop of per-step ``model.predict`` calls;
- occlusion: ``evaluate --metrics occlusion``'s 49 occluded copies per image, built, preprocessed
  and scored, against the plain compiled forward pass on as many inputs (target >= 0.85x);
- report: a 10,000-record report opened in Chromium, time to its first page of cards.

Every figure is a median over rounds taken back to back under the same load (the machine is
shared and noisy: compare the ratios, not the absolute numbers). The measuring functions are
its helpers beside it: ``_inspect.py`` (filters, activations), ``_evaluate.py``, ``_report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "features.md"
FEATURES = ("filters", "activations", "evaluate", "occlusion", "report")
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def run_all(which: list[str]) -> dict:
    results: dict = {}
    if "filters" in which:
        from _inspect import benchmark_filters

        results["filters"] = benchmark_filters()
    if "activations" in which:
        from _inspect import benchmark_activations

        results["activations"] = benchmark_activations()
    if "evaluate" in which:
        from _evaluate import benchmark_evaluate

        results["evaluate"] = benchmark_evaluate()
    if "occlusion" in which:
        from _evaluate import benchmark_occlusion

        results["occlusion"] = benchmark_occlusion()
    if "report" in which:
        from _report import benchmark_report

        results["report"] = benchmark_report(10000)
    return results


def flat(value, prefix=""):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from flat(inner, f"{prefix}{key}.")
    elif isinstance(value, (int, float, str, bool)) or value is None:
        yield prefix[:-1], value


def report(results: dict, seconds: float) -> str:
    lines = ["# Feature benchmarks", "",
             f"`python benchmarks/bench_features.py` on {os.cpu_count()} CPUs, load average before "
             f"{os.getloadavg()[0]:.1f}, {seconds / 60:.1f} min. Every number as the benchmark returned it.", ""]
    for name, figures in results.items():
        lines += [f"## {name}", "", "| figure | value |", "|---|---:|"]
        for key, value in flat(figures):
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {shown} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help=f"write the markdown report here (default: {RESULTS.relative_to(REPO)} "
                                      "when every feature is measured, none with --only)")
    parser.add_argument("--only", default=",".join(FEATURES))
    args = parser.parse_args()
    if args.out is None and set(args.only.split(",")) >= set(FEATURES):
        args.out = str(RESULTS)
    start = time.perf_counter()
    results = run_all(args.only.split(","))
    text = report(results, time.perf_counter() - start)
    print(text)
    print(json.dumps(results, default=str), file=sys.stderr)
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
