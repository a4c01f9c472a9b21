"""MaxBoxAcc (Choe et al. 2020, "Evaluating Weakly Supervised Object Localization Methods Right", CVPR).

The localisation error of :mod:`.pointing` boxes each map at one threshold (the Grad-CAM
paper's 15%). Choe et al. show that a method's localisation then depends on that one choice,
and score instead the box accuracy at the best threshold over the whole data set:

- each map, upsampled to its image, is min-max normalised to [0, 1];
- for each threshold tau in ``THRESHOLDS`` (0.00, 0.01, ..., 0.99, the paper's
  ``cam_curve_interval`` of 0.01) the map is cut as their code (``wsolevaluation``,
  ``compute_bboxes_from_scoremaps``) cuts it: the map as 8-bit (``map * 255``), pixels above
  ``int(tau * max)`` kept (OpenCV's ``THRESH_BINARY``, strict), the largest outer contour by
  ``cv2.contourArea``, its bounding rectangle; no contour: no box;
- the image counts at tau when that box has IoU >= ``DELTA`` (0.5) with a ground-truth box of
  the explained class (as the pointing game and the localisation error read the boxes CSV);
- BoxAcc(tau) is the share of images that count, and MaxBoxAcc = max over tau of BoxAcc(tau),
  in percent.

Each image's record keeps its hit curve over the thresholds (``boxacc_curve``, 100 values of
0 / 1); MaxBoxAcc is a statistic of the whole run (the maximum of the mean curve), so its
interval is a bootstrap of that statistic over images. Boxes here are inclusive-exclusive
(``x, y, x + w, y + h``), as everywhere in gradcam-cli; the paper's code clips x1, y1 to the
last pixel and counts both ends, a difference of at most one pixel per side. The ``centre``
baseline is scored beside every method, as the paper's centre-Gaussian baseline.
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

from gradcam_cli.metrics.pointing import IOU_HIT, Box, iou
from gradcam_cli.metrics.registry import MetricBatch, register_metric
from gradcam_cli.render.resample import Upsampler, upsample_linear
from gradcam_cli.settings import EvalSettings

THRESHOLDS = np.arange(0, 100) / 100.0  # 0.00 .. 0.99
DELTA = IOU_HIT


def normalise(cam: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (a constant map becomes all zeros)."""
    cam = np.asarray(cam, np.float64)
    low, high = float(cam.min()), float(cam.max())
    return (cam - low) / (high - low) if high > low else np.zeros_like(cam)


def to_8bit(scoremap: np.ndarray) -> np.ndarray:
    """A map in [0, 1] as wsolevaluation's 8-bit image (``map * 255``, truncated)."""
    return (np.asarray(scoremap, np.float64) * 255).astype(np.uint8)


def threshold_box(scoremap: np.ndarray, tau: float) -> tuple[int, int, int, int] | None:
    """The box of the largest contour of ``scoremap`` (in [0, 1]) above ``tau`` of its 8-bit maximum."""
    return _box_8bit(to_8bit(scoremap), tau)


def _box_8bit(image: np.ndarray, tau: float) -> tuple[int, int, int, int] | None:
    _, binary = cv2.threshold(image, int(tau * int(image.max())), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not contours:
        return None
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return (x, y, x + w, y + h)


def box_hits(maps: np.ndarray, sizes: Sequence[tuple[int, int]], boxes: Sequence[Sequence[Box]],
             labels: Sequence[str], *, upsample: Upsampler = upsample_linear,
             thresholds: np.ndarray = THRESHOLDS, delta: float = DELTA) -> np.ndarray:
    """float64 (B, len(thresholds)): 1 where the map's box at tau has IoU >= delta with a box of
    the image's explained class. maps (B, h, w); sizes: original (height, width)."""
    out = np.zeros((len(maps), len(thresholds)))
    for i, (cam, size, image_boxes, label) in enumerate(zip(maps, sizes, boxes, labels)):
        truth = [b.corners for b in image_boxes if b.label == str(label)]
        if not truth:
            continue
        image = to_8bit(normalise(upsample(np.asarray(cam, np.float32), tuple(int(v) for v in size))))
        for t, tau in enumerate(thresholds):
            box = _box_8bit(image, float(tau))
            out[i, t] = float(box is not None and any(iou(box, gt) >= delta for gt in truth))
    return out


def max_box_acc(curves: np.ndarray) -> float:
    """MaxBoxAcc in percent from per-image hit curves (N, K): the best threshold's mean."""
    curves = np.asarray(curves, np.float64)
    return float(100.0 * curves.mean(axis=0).max()) if len(curves) else float("nan")


@register_metric("maxboxacc", better={"maxboxacc": "higher"}, curves=("boxacc_curve",), needs_boxes=True,
                 dataset={"maxboxacc": ("boxacc_curve", max_box_acc)},
                 curve_axis="threshold (fraction of the map's range)")
def maxboxacc_metric(batch: MetricBatch, score_fn: Callable, settings: EvalSettings) -> dict:
    """Each boxed image's box-accuracy curve over the thresholds (MaxBoxAcc is taken over the run)."""
    keep = batch.with_boxes()
    out: list = [None] * len(batch.classes)
    if keep:
        hits = box_hits(batch.small[keep], [batch.sizes[i] for i in keep], [batch.boxes[i] for i in keep],
                        [str(int(batch.classes[i])) for i in keep], upsample=batch.upsample)
        for i, row in zip(keep, hits):
            out[i] = row
    return {"boxacc_curve": out}
