"""Throughput of the batched perturbation scorer, a helper of ``bench_features.py``. Plain Python, no asserts.

Three figures on the same number of inputs (B images x (steps + 1) deletion steps):

- forward: the bare compiled forward pass, ``tf.function(lambda x: model(x, training=False))``
  with a ``None`` batch dimension, on inputs already preprocessed, in chunks of ``chunk``;
- evaluate: :func:`gradcam_cli.metrics.perturbation.deletion` end to end (ranking, baseline,
  building each perturbed input, preprocessing, the compiled scorer, AUC);
- predict loop: what notebook libraries do, one ``model.predict`` per image and step
  (timed on ``predict_images`` images, extrapolated).

The ratio evaluate / forward is the median over ``rounds`` of back-to-back pairs (target >= 0.85).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from gradcam_cli.metrics.perturbation import deletion, make_baseline, pixel_ranks, step_counts
from gradcam_cli.metrics.scoring import make_score_fn


def _paired(run_forward: Callable[[], float], run_other: Callable[[], float], rounds: int) -> tuple:
    """``rounds`` back-to-back pairs, the order alternating so that drift in the machine's load hits
    both alike: (median forward s, median other s, median per-pair ratio forward / other, pairs)."""
    pairs = []
    for r in range(max(1, rounds)):
        order = (run_forward, run_other) if r % 2 == 0 else (run_other, run_forward)
        timed = {fn: fn() for fn in order}
        pairs.append((timed[run_forward], timed[run_other]))
    return (float(np.median([f for f, _ in pairs])), float(np.median([o for _, o in pairs])),
            float(np.median([f / o for f, o in pairs])), len(pairs))


def _default_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classifier_activation=None)


def _tf_mode(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(pixels, np.float32) / 127.5 - 1.0


def _forward_floor(model: Any, preprocess: Callable, pixels: np.ndarray, copies: int, chunk: int) -> Callable[[], float]:
    """The floor a timing is taken against: ``copies`` preprocessed inputs per image of ``pixels``
    (prepared once, outside the timing) through ``tf.function(model)`` in chunks. Traced and warmed up
    here; returns the timed run (seconds)."""
    import tensorflow as tf

    h, w = pixels.shape[1:3]
    forward = tf.function(lambda x: model(x, training=False), input_signature=[
        tf.TensorSpec((None, h, w, 3), tf.float32)])
    prepared = np.repeat(preprocess(pixels.astype(np.float32)), copies, axis=0)
    forward(prepared[:chunk]).numpy()

    def run() -> float:
        start = time.perf_counter()
        for i in range(0, len(prepared), chunk):
            forward(prepared[i : i + chunk]).numpy()
        return time.perf_counter() - start

    return run


def benchmark_evaluate(
    model: Any = None,
    *,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    activation: str = "softmax",
    images: int = 8,
    steps: int = 20,
    chunk: int = 32,
    rounds: int = 3,
    predict_images: int = 1,
    seed: int = 0,
) -> dict:
    """Inputs/s of the three paths above and their ratios. ``model=None``: MobileNetV2 (random
    weights, 224 px, logits) with ``tf``-mode preprocessing; otherwise give ``preprocess``
    (pixels 0..255 -> model input) and the ``activation`` for the model's outputs."""

    if model is None:
        model, preprocess = _default_model(), _tf_mode
    preprocess = preprocess or (lambda p: np.asarray(p, np.float32))
    h, w = (int(d) for d in model.inputs[0].shape[1:3])
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (images, h, w, 3), dtype=np.uint8)
    maps = rng.random((images, h, w), dtype=np.float32)
    classes = np.zeros(images, np.int32)
    count = images * (steps + 1)
    score_fn = make_score_fn(model, preprocess, activation=activation, chunk=chunk)
    run_forward = _forward_floor(model, preprocess, pixels, steps + 1, chunk)

    def run_evaluate() -> float:
        start = time.perf_counter()
        deletion(pixels, maps, classes, score_fn, steps=steps)
        return time.perf_counter() - start

    deletion(pixels[:1], maps[:1], classes[:1], score_fn, steps=1)  # trace and warm up
    forward_s, evaluate_s, ratio, rounds = _paired(run_forward, run_evaluate, rounds)

    loop_images = max(1, min(predict_images, images))
    ranks, counts = pixel_ranks(maps[:loop_images]), step_counts(h * w, steps)
    base, x = make_baseline(pixels[:loop_images], "black"), pixels[:loop_images].astype(np.float32)
    model.predict(preprocess(x[:1]), verbose=0)  # warm up predict's own function
    start = time.perf_counter()
    for b in range(loop_images):
        for k in range(steps + 1):
            taken = (ranks[b] < counts[k]).reshape(h, w, 1)
            model.predict(preprocess(np.where(taken, base[b], x[b])[None]), verbose=0)
    loop_per_input = (time.perf_counter() - start) / (loop_images * (steps + 1))

    return {
        "model": getattr(model, "name", type(model).__name__),
        "input_size": [h, w],
        "images": images,
        "steps": steps,
        "inputs": count,
        "chunk": chunk,
        "rounds": rounds,
        "forward_inputs_per_s": count / forward_s,
        "evaluate_inputs_per_s": count / evaluate_s,
        "ratio_vs_forward": ratio,
        "predict_loop_inputs_per_s": 1.0 / loop_per_input,
        "speedup_vs_predict_loop": (count / evaluate_s) * loop_per_input,
        "target_ratio": 0.85,
    }


def benchmark_occlusion(model: Any = None, *, preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
                        activation: str = "softmax", images: int = 4, chunk: int = 32, rounds: int = 3,
                        seed: int = 0) -> dict:
    """``evaluate --metrics occlusion``'s passes against the bare compiled forward pass on as many inputs.

    occlusion: :func:`gradcam_cli.metrics.occlusion.occlusion_drops` end to end (each image and its
    49 occluded copies, built by patch, preprocessed, through the compiled scorer in chunks, the
    drops); forward: the same count of already-preprocessed inputs through ``tf.function(model)``.
    Ratio = forward time / occlusion time, the median over back-to-back pairs (target >= 0.85).
    ``model=None``: MobileNetV2 (random weights, 224 px, logits) with ``tf``-mode preprocessing."""

    from gradcam_cli.metrics.occlusion import GRID, occlusion_drops

    if model is None:
        model, preprocess = _default_model(), _tf_mode
    preprocess = preprocess or (lambda p: np.asarray(p, np.float32))
    h, w = (int(d) for d in model.inputs[0].shape[1:3])
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (images, h, w, 3), dtype=np.uint8)
    classes = np.zeros(images, np.int32)
    count = images * (1 + GRID * GRID)
    score_fn = make_score_fn(model, preprocess, activation=activation, chunk=chunk)
    run_forward = _forward_floor(model, preprocess, pixels, 1 + GRID * GRID, chunk)

    def run_occlusion() -> float:
        start = time.perf_counter()
        occlusion_drops(pixels, classes, score_fn, chunk=chunk)
        return time.perf_counter() - start

    occlusion_drops(pixels[:1], classes[:1], score_fn, chunk=chunk)  # trace and warm up
    forward_s, occlusion_s, ratio, rounds = _paired(run_forward, run_occlusion, rounds)
    return {
        "model": getattr(model, "name", type(model).__name__),
        "input_size": [h, w],
        "images": images,
        "inputs": count,
        "chunk": chunk,
        "rounds": rounds,
        "forward_inputs_per_s": count / forward_s,
        "occlusion_inputs_per_s": count / occlusion_s,
        "ratio_vs_forward": ratio,
        "target_ratio": 0.85,
    }
