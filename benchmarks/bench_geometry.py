#!/usr/bin/env python
"""How much does placing a map at its receptive-field centres cost, against today's stretch?

``benchmark_upsample()`` times :func:`gradcam_cli.models.geometry.upsample` for a 7x7 map
(a 150 px 'valid' model: stride 16, offset 23) over typical photo sizes, as uint8 levels
(what overlays upsample) and float32, for both kinds, and one alternative for the
receptive-field kind: the map placed on the model-input grid (one small warpAffine),
then stretched to the image with cv2.resize; it reports that alternative's largest
deviation from the exact placement.

    python benchmarks/bench_geometry.py     # seconds -> benchmarks/results/geometry.md (and JSON on stdout)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import cv2
import numpy as np

from gradcam_cli.models.geometry import RECEPTIVE_FIELD, Geometry, stretch_geometry, upsample

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "geometry.md"


def _ms(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def _two_step(cam: np.ndarray, g: Geometry, size: tuple[int, int]) -> np.ndarray:
    (in_h, in_w), (sy, sx), (oy, ox) = g.input_size, g.stride, g.offset
    matrix = np.array([[1 / sx, 0, (0.5 - ox) / sx], [0, 1 / sy, (0.5 - oy) / sy]])
    grid = cv2.warpAffine(cam, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(grid, size[::-1], interpolation=cv2.INTER_LINEAR)


def benchmark_upsample(sizes=((768, 1024), (3000, 4000)), repeats: int = 5) -> dict:
    """Milliseconds per map, per image size (H x W), kind and dtype; plus the two-step alternative."""
    placed = Geometry((16.0, 16.0), (23.0, 23.0), (150, 150), (7, 7), RECEPTIVE_FIELD)
    stretched = stretch_geometry((150, 150), (7, 7))
    cam = np.random.default_rng(0).random((7, 7), dtype=np.float32)
    levels = cv2.convertScaleAbs(cam, alpha=255.0)
    figures: dict = {}
    for size in sizes:
        row = {}
        for name, g in (("stretch", stretched), ("receptive_field", placed)):
            for c in (levels, cam):
                row[f"{name}_{c.dtype}_ms"] = round(_ms(lambda: upsample(c, g, size), repeats), 2)
        row["two_step_uint8_ms"] = round(_ms(lambda: _two_step(levels, placed, size), repeats), 2)
        exact = upsample(levels, placed, size).astype(int)
        row["two_step_uint8_max_levels_off"] = int(np.abs(_two_step(levels, placed, size) - exact).max())
        figures[f"{size[0]}x{size[1]}"] = row
    return figures


def markdown(figures: dict, load: tuple) -> str:
    """One row per image size, one column per figure (milliseconds per map unless it says levels)."""
    keys = list(next(iter(figures.values())))
    lines = ["# Placing a 7x7 map: receptive-field centres vs stretch", "",
             (f"{time.strftime('%Y-%m-%d')}; `python benchmarks/bench_geometry.py` on {os.cpu_count()} CPUs, "
             f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}. A 7x7 map of a 150 px 'valid' "
             "model (stride 16, offset 23); ms per map, mean of 5 calls after one warm-up; "
             "`two_step`: placed on the model-input grid, then stretched (its largest deviation from the exact "
             "placement in uint8 levels)."), "",
             "| image (H x W) | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for size, row in figures.items():
        lines.append(f"| {size} | " + " | ".join(str(row[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS),
                        help="also write the markdown table here (default benchmarks/results/geometry.md; '' for none)")
    options = parser.parse_args()
    load = os.getloadavg()
    figures = benchmark_upsample()
    print(json.dumps(figures, indent=2))
    if options.out:
        pathlib.Path(options.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(options.out).write_text(markdown(figures, load), encoding="utf-8")
