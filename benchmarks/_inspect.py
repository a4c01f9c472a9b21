"""Speed figures for the inspect tools, as plain dicts (a helper of ``bench_features.py``, not run on its own).

Nothing here asserts a speed: the functions measure, in one process, and return numbers.
The book's loop is the tests' reference, ``tests/reference.py`` (``tests`` on ``sys.path``).
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import numpy as np

SAMPLE = pathlib.Path(__file__).resolve().parents[1] / "sample_images" / "chelsea.jpg"


def _seconds(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def benchmark_filters(
    *, filters: int = 64, size: int = 64, steps: int = 40, batch_size: int = 64, book_filters: int = 8,
    rounds: int = 3, layer: str = "block3_conv1",
) -> dict:
    """``filters`` filter patterns of VGG16 (random weights, no top, caffe preprocessing) ``layer``
    at ``size`` px, ``steps`` steps: the batched :class:`FilterAscent` (float32, and with the
    layers in bfloat16) against the book's loop (float32), eager (a GradientTape per filter per
    step) and compiled (the same step in a ``tf.function``).

    Each of ``rounds`` rounds times, back to back, the whole batched run and both book
    loops on ``book_filters`` filters (scaled to ``filters``), so that every ratio
    compares numbers taken under the same load; figures are medians over rounds.
    Every variant is traced before timing; the batched first call (one filter, tracing
    included) is reported separately.
    """
    import keras
    from reference import book_loop

    from gradcam_cli.config.profiles import get_profile, load_registry
    from gradcam_cli.inspect.filters import FilterAscent
    from gradcam_cli.io.preprocess import preprocess_tensor

    profile = get_profile(load_registry(), "vgg16")
    model = keras.applications.VGG16(weights=None, include_top=False)

    def preprocess(x: Any) -> Any:
        return preprocess_tensor(x, profile)

    book_filters = min(book_filters, filters)
    ascent = FilterAscent(model, layer, preprocess, size=size, steps=steps)
    first_s, _ = _seconds(lambda: ascent.run(range(1), batch_size=batch_size))  # traces; then warm
    fast = FilterAscent(model, layer, preprocess, size=size, steps=steps, precision="bfloat16")
    fast.run(range(1), batch_size=batch_size)
    variants = {
        "batched": lambda: ascent.run(range(filters), batch_size=batch_size),
        "batched_bfloat16": lambda: fast.run(range(filters), batch_size=batch_size),
        "book_eager": lambda: book_loop(model, layer, range(book_filters), size, steps, 1.0, preprocess),
        "book_compiled": lambda: book_loop(
            model, layer, range(book_filters), size, steps, 1.0, preprocess, compiled=True
        ),
    }
    book_loop(model, layer, [0], size, 1, 1.0, preprocess, compiled=True)  # the compiled loop's warm-up
    per_step: dict[str, list] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            seconds, _ = _seconds(run)
            per_step[name].append(seconds / ((filters if name.startswith("batched") else book_filters) * steps))
    ms = {name: 1000 * float(np.median(times)) for name, times in per_step.items()}
    ratios = {
        f"{ours}_vs_{name}": float(np.median([b / a for a, b in zip(per_step[ours], per_step[name])]))
        for ours in ("batched", "batched_bfloat16")
        for name in ("book_eager", "book_compiled")
    }
    return {
        "model": f"VGG16 (weights none) {layer}",
        "filters": filters,
        "size": size,
        "steps": steps,
        "batch_size": batch_size,
        "rounds": rounds,
        "book_measured_filters": book_filters,
        "batched_first_call_s": round(first_s, 3),
        "traces": dict(ascent.traces),
        **{f"{name}_s": round(ms[name] * filters * steps / 1000, 3) for name in variants},
        **{f"{name}_ms_per_filter_step": round(ms[name], 3) for name in variants},
        **{f"speedup_{name}": round(ratio, 2) for name, ratio in ratios.items()},
    }


def benchmark_activations(image_path: str | pathlib.Path = SAMPLE, *, first: int = 8, repeats: int = 5) -> dict:
    """The default backbone's first ``first`` conv / pool layers for one image: probe build, first
    call (tracing), steady per-call time (median of ``repeats``), and drawing every grid."""
    import cv2

    from gradcam_cli.cam import GradCAM
    from gradcam_cli.inspect.activations import ActivationProbe, default_layers
    from gradcam_cli.render.channels import channel_grid
    from gradcam_cli.render.overlay import encode_png

    image = cv2.cvtColor(cv2.imread(str(image_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    load_s, cam = _seconds(lambda: GradCAM("efficientnet_lite0"))
    layers = default_layers(cam.model, first)
    build_s, probe = _seconds(lambda: ActivationProbe(cam.model, layers))
    batch = cam.prepare([image])
    first_s, outputs = _seconds(lambda: probe(batch))
    calls = [_seconds(lambda: probe(batch))[0] for _ in range(repeats)]
    grids_s, grids = _seconds(lambda: [channel_grid(v[0], title=p) for p, v in outputs.items()])
    encode_s, _ = _seconds(lambda: [encode_png(g) for g in grids])
    return {
        "model": "efficientnet_lite0",
        "image": pathlib.Path(image_path).name,
        "layers": layers,
        "channels": int(sum(v.shape[-1] for v in outputs.values())),
        "model_load_s": round(load_s, 3),
        "probe_build_s": round(build_s, 3),
        "probe_first_call_s": round(first_s, 3),
        "probe_call_ms": round(1000 * float(np.median(calls)), 2),
        "grids_ms": round(1000 * grids_s, 2),
        "png_encode_ms": round(1000 * encode_s, 2),
        "grid_pixels": int(sum(g.shape[0] * g.shape[1] for g in grids)),
    }
