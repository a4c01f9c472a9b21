"""Deletion and insertion (Petsiuk, Das and Saenko 2018, "RISE", BMVC; as in xplique and torch-cam).

Pixels are ranked by the map, most important first; ties are broken by a fixed
order: a stable argsort of ``-map`` in row-major order (the earlier pixel first).
In ``steps`` equal steps, step k (k = 0..steps) takes the n_k = round(k * H * W / steps)
most important pixels (round half up):

- deletion: those pixels of the image are replaced by the baseline's (step 0 is the
  image, step ``steps`` the baseline);
- insertion: those pixels of the image are restored onto the baseline (step 0 is the
  baseline, step ``steps`` the image).

Each step is scored for the explained class; the AUC is the trapezoid rule over the
fraction of pixels n_k / (H * W) in [0, 1]. Lower deletion AUC and higher insertion
AUC mean a more faithful map.

Baselines, in pixel space before preprocessing (``make_baseline``):

- ``blur``: ``cv2.GaussianBlur`` with an 11 x 11 kernel and sigma 5 per channel, the
  kernel of RISE's evaluation code (``gkern(klen=11, nsig=5)``); RISE pads with zeros,
  here the border is reflected (OpenCV's BORDER_REFLECT_101) so edges do not darken;
- ``mean``: each image's per-channel mean;
- ``black``: zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gradcam_cli.metrics.registry import MetricBatch, register_metric
from gradcam_cli.metrics.scoring import score_inputs
from gradcam_cli.settings import EvalSettings

BASELINES = ("blur", "mean", "black")
BLUR_KERNEL = 11
BLUR_SIGMA = 5.0
DEFAULT_STEPS = 20


@dataclass(frozen=True)
class Curves:
    """Scores per step and their AUC. ``fractions`` (steps + 1,): pixels perturbed at each step."""

    scores: np.ndarray  # (B, steps + 1) float64
    auc: np.ndarray  # (B,) float64
    fractions: np.ndarray  # (steps + 1,) float64, from 0 to 1


def check_inputs(images: np.ndarray, maps: np.ndarray, classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the shared contract; returns (images, maps float32, classes int32)."""
    images = np.asarray(images)
    maps = np.asarray(maps, dtype=np.float32)
    if not (images.dtype == np.uint8 or images.dtype == np.float32) or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must be RGB uint8 (B, H, W, 3), or float32 for full-depth inputs (on the model's scale); "
            f"got {images.dtype} {images.shape}: pass the decoded images resized to the model input"
        )
    if maps.shape != images.shape[:3]:
        raise ValueError(
            f"maps must be float32 (B, H, W) = {images.shape[:3]}, the images' size; got {maps.shape}: "
            "upsample the maps to the model input first"
        )
    classes = np.asarray(classes, dtype=np.int32).reshape(-1)
    if classes.shape != (images.shape[0],):
        raise ValueError(f"classes must hold one class per image, ({images.shape[0]},); got {classes.shape}")
    return images, maps, classes


def pixel_ranks(maps: np.ndarray) -> np.ndarray:
    """(B, H, W) maps -> int32 (B, H * W): each pixel's rank, 0 = most important.

    Ties: a stable argsort of ``-map`` in row-major order, so the earlier pixel ranks first.
    """
    flat = np.asarray(maps, dtype=np.float32).reshape(len(maps), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order, dtype=np.int32)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1], dtype=np.int32)[None, :].repeat(len(flat), 0), axis=1)
    return ranks


def step_counts(pixels: int, steps: int) -> np.ndarray:
    """int (steps + 1,): n_k = round(k * pixels / steps), halves rounded up, from 0 to ``pixels``."""
    if int(steps) < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    k = np.arange(steps + 1, dtype=np.int64)
    return (2 * k * pixels + steps) // (2 * steps)


def make_baseline(images: np.ndarray, kind: str) -> np.ndarray:
    """The baseline of each image, float32 (B, H, W, 3) in pixel space (see the module docstring)."""
    import cv2

    x = np.asarray(images, dtype=np.float32)
    if kind == "blur":
        out = np.empty_like(x)
        for i, image in enumerate(x):
            out[i] = cv2.GaussianBlur(image, (BLUR_KERNEL, BLUR_KERNEL), BLUR_SIGMA, sigmaY=BLUR_SIGMA)
        return out
    if kind == "mean":
        return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape).astype(np.float32)
    if kind == "black":
        return np.zeros_like(x)
    raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {kind!r}")


def auc(scores: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoid rule of (B, K) scores over the (K,) fractions; (B,) float64."""
    scores = np.asarray(scores, dtype=np.float64)
    widths = np.diff(np.asarray(fractions, dtype=np.float64))
    return ((scores[:, 1:] + scores[:, :-1]) * 0.5 * widths).sum(axis=1)


def _curves(images, maps, classes, score_fn, baseline, steps, chunk, insert: bool) -> Curves:
    images, maps, classes = check_inputs(images, maps, classes)
    n, h, w = maps.shape
    x = images.astype(np.float32)
    base = make_baseline(images, baseline) if isinstance(baseline, str) else _given_baseline(baseline, x.shape)
    ranks = pixel_ranks(maps)
    counts = step_counts(h * w, steps)
    per_image = steps + 1
    first, second = (base, x) if insert else (x, base)  # insertion: image pixels onto the baseline

    def build(start: int, stop: int) -> np.ndarray:
        flat = np.arange(start, stop)
        b, k = flat // per_image, flat % per_image
        taken = (ranks[b] < counts[k][:, None]).reshape(-1, h, w, 1)
        return np.where(taken, second[b], first[b])

    scores = score_inputs(score_fn, build, n * per_image, np.repeat(classes, per_image), chunk)
    scores = scores.reshape(n, per_image)
    fractions = counts / float(h * w)
    return Curves(scores=scores, auc=auc(scores, fractions), fractions=fractions)


def _given_baseline(baseline, shape) -> np.ndarray:
    base = np.asarray(baseline, dtype=np.float32)
    if base.shape != shape:
        raise ValueError(
            f"a baseline array must have the images' shape {shape}; got {base.shape}: "
            f"or pass one of {', '.join(BASELINES)}"
        )
    return base


def deletion(
    images: np.ndarray,
    maps: np.ndarray,
    classes,
    score_fn: Callable,
    *,
    baseline: str | np.ndarray = "black",
    steps: int = DEFAULT_STEPS,
    chunk: int | None = None,
) -> Curves:
    """Deletion curves: the most important pixels first replaced by the baseline. Lower AUC is better.

    images RGB uint8 (B, H, W, 3); maps float32 (B, H, W) in [0, 1]; classes int (B,);
    ``baseline``: ``blur``, ``mean``, ``black`` (default, as the issue's default for
    deletion) or a float32 (B, H, W, 3) pixel array. All B * (steps + 1) inputs go
    through ``score_fn`` in chunks of ``chunk`` (default: the score function's own).
    """
    return _curves(images, maps, classes, score_fn, baseline, steps, chunk, insert=False)


def insertion(
    images: np.ndarray,
    maps: np.ndarray,
    classes,
    score_fn: Callable,
    *,
    baseline: str | np.ndarray = "blur",
    steps: int = DEFAULT_STEPS,
    chunk: int | None = None,
) -> Curves:
    """Insertion curves: the most important pixels first restored onto the baseline. Higher AUC is better.

    Same contract as :func:`deletion`; the default baseline is ``blur`` (RISE's choice for insertion).
    """
    return _curves(images, maps, classes, score_fn, baseline, steps, chunk, insert=True)


@register_metric("deletion", better={"deletion": "lower"}, curves=("deletion_curve",))
def deletion_metric(batch: MetricBatch, score_fn: Callable, settings: EvalSettings) -> dict:
    """Deletion AUC and curve, from ``--deletion-baseline`` in ``--steps`` steps."""
    curves = deletion(batch.pixels, batch.maps, batch.classes, score_fn, baseline=settings.deletion_baseline,
                      steps=settings.steps)
    return {"deletion": curves.auc, "deletion_curve": curves.scores}


@register_metric("insertion", better={"insertion": "higher"}, curves=("insertion_curve",))
def insertion_metric(batch: MetricBatch, score_fn: Callable, settings: EvalSettings) -> dict:
    """Insertion AUC and curve, onto ``--insertion-baseline`` in ``--steps`` steps."""
    curves = insertion(batch.pixels, batch.maps, batch.classes, score_fn, baseline=settings.insertion_baseline,
                       steps=settings.steps)
    return {"insertion": curves.auc, "insertion_curve": curves.scores}
