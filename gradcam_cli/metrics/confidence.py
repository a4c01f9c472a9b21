"""Average drop and increase in confidence (Chattopadhay et al. 2018, "Grad-CAM++", WACV).

torch-cam's definition (``torchcam.metrics.ClassificationMetric``): the explanation
map keeps the image where it is high, x' = x * map (per pixel, all channels, in pixel
space before preprocessing); with s the score of x and s' the score of x' for the
explained class,

    drop = relu(s - s') / (s + 1e-7)        increase = 1[s' > s]

and the reported figures are the means over images times 100 (lower average drop and
higher increase are better).

Two places to apply the map, two registered metrics:

- ``confidence``: x' = x * map on the pixels, before the model's preprocessing (the paper's
  "explanation map" E = L o I: hidden pixels turn black);
- ``confidence_torchcam``: torch-cam's evaluation script exactly (``ClassificationMetric.update``:
  ``masked_probs = self._get_probs(cam * input_tensor)``): the map multiplies the model input
  AFTER preprocessing (for ImageNet mean/std inputs hidden pixels turn to the mean colour, not
  black), so its published figures can be set beside ours. Both read the explained class's
  score as the run does (probabilities by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gradcam_cli.metrics.perturbation import check_inputs
from gradcam_cli.metrics.registry import MetricBatch, register_metric
from gradcam_cli.metrics.scoring import score_inputs
from gradcam_cli.settings import EvalSettings

EPSILON = 1e-7


@dataclass(frozen=True)
class Confidence:
    """Per image: ``scores`` s, ``masked`` s', ``drop`` in [0, 1], ``increase`` 0/1; means x 100."""

    scores: np.ndarray  # (B,)
    masked: np.ndarray  # (B,)
    drop: np.ndarray  # (B,) float64
    increase: np.ndarray  # (B,) bool

    @property
    def average_drop(self) -> float:
        """Mean drop over images, x 100 (percent)."""
        return float(self.drop.mean() * 100.0) if len(self.drop) else float("nan")

    @property
    def increase_rate(self) -> float:
        """Share of images whose score went up, x 100 (percent)."""
        return float(self.increase.mean() * 100.0) if len(self.increase) else float("nan")


def confidence(
    images: np.ndarray,
    maps: np.ndarray,
    classes,
    score_fn: Callable,
    *,
    chunk: int | None = None,
) -> Confidence:
    """Average drop / increase for images RGB uint8 (B, H, W, 3) and maps float32 (B, H, W) in [0, 1].

    The B images and the B masked images go through ``score_fn`` together, in chunks.
    Both are scored as float32 pixels, so an all-ones map gives x' == x exactly.
    """
    images, maps, classes = check_inputs(images, maps, classes)
    return _masked_confidence(score_fn, images.astype(np.float32), maps, classes, chunk)


def _masked_confidence(score: Callable, x: np.ndarray, maps: np.ndarray, classes: np.ndarray,
                       chunk: int | None) -> Confidence:
    """Score ``x`` (B, H, W, C) and ``x * map`` together through ``score`` in chunks; drop and increase."""
    n = len(x)
    both = np.concatenate([x, x * np.clip(maps, 0.0, 1.0)[..., None].astype(x.dtype)])  # the inputs, then x'
    scores = score_inputs(score, lambda a, b: both[a:b], 2 * n, np.concatenate([classes, classes]), chunk)
    s, s_masked = scores[:n], scores[n:]
    drop = np.maximum(s - s_masked, 0.0) / (s + EPSILON)
    return Confidence(scores=s, masked=s_masked, drop=drop, increase=s_masked > s)


@register_metric("confidence", better={"average_drop": "lower", "increase": "higher"})
def confidence_metric(batch: MetricBatch, score_fn: Callable, settings: EvalSettings) -> dict:
    """Average drop and increase in confidence, in percent."""
    conf = confidence(batch.pixels, batch.maps, batch.classes, score_fn)
    return {"average_drop": 100.0 * conf.drop, "increase": 100.0 * conf.increase}


def confidence_on_inputs(
    images: np.ndarray,
    maps: np.ndarray,
    classes,
    score_fn: Callable,
    *,
    chunk: int | None = None,
) -> Confidence:
    """Average drop / increase with torch-cam's masking: the map multiplies the preprocessed model
    input (``score_fn.prepare``; a plain callable's input is taken as already prepared)."""
    images, maps, classes = check_inputs(images, maps, classes)
    prepare = getattr(score_fn, "prepare", None)
    x = images.astype(np.float32)
    inputs = np.asarray(x if prepare is None else prepare(x), np.float32)
    # the forward call alone: the masked inputs are already prepared
    return _masked_confidence(getattr(score_fn, "forward", score_fn), inputs, maps, classes,
                              chunk or getattr(score_fn, "chunk", None))


@register_metric("confidence_torchcam", better={"average_drop_torchcam": "lower", "increase_torchcam": "higher"},
                 default=False)
def confidence_torchcam_metric(batch: MetricBatch, score_fn: Callable, settings: EvalSettings) -> dict:
    """Average drop and increase in confidence, in percent, on torch-cam's masked model input."""
    conf = confidence_on_inputs(batch.pixels, batch.maps, batch.classes, score_fn)
    return {"average_drop_torchcam": 100.0 * conf.drop, "increase_torchcam": 100.0 * conf.increase}
