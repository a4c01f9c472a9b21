"""Pointing game (Zhang et al. 2016, "Top-down neural attention by excitation backprop", ECCV)
and top-1 localisation error (the ILSVRC protocol as used by Selvaraju et al. 2017, Grad-CAM).

Both work in ORIGINAL image pixels: each map (at model input size) is upsampled to its
image's original (height, width) by ``upsample`` (:mod:`gradcam_cli.render.resample`; the
default is the bilinear stretch the overlays use; ``evaluate`` passes the model's own).

Boxes are (x0, y0, x1, y1) in original pixels, inclusive-exclusive: the box covers
columns x0..x1-1 and rows y0..y1-1.

- Pointing game: the map's maximum (the first in row-major order on ties) is a hit when
  its Euclidean distance to a box of the explained class is at most ``tolerance``
  pixels (15 in Zhang et al.; 0 inside the box). An image with no box of the explained
  class, or an all-zero map (no maximum), is a miss.
- Localisation error (top-1): the map's box is the Grad-CAM paper's box
  (:func:`gradcam_cli.render.boxes.map_box`, the one ``explain --boxes`` writes): the bounding
  box of the largest 8-connected segment (ties: the lowest label) of the pixels >= 15% of the
  map's maximum. The image is an error unless some ground-truth
  box carries the predicted (explained) class and has IoU >= 0.5 with the map's box:
  with one class per image this is "wrong class, or IoU < 0.5 with every box". An
  all-zero map has no box: an error.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from gradcam_cli.errors import BoxesError
from gradcam_cli.metrics.registry import MetricBatch, register_metric
from gradcam_cli.render.boxes import map_box
from gradcam_cli.render.resample import Upsampler, upsample_linear
from gradcam_cli.settings import BOX_THRESHOLD, EvalSettings

TOLERANCE = 15
IOU_HIT = 0.5


@dataclass(frozen=True)
class Box:
    """A ground-truth box in original pixels, inclusive-exclusive; ``label`` as written in the CSV."""

    label: str
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def corners(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


def read_boxes_csv(path: str | os.PathLike) -> dict[str, list[Box]]:
    """``path,label,x0,y0,x1,y1`` rows -> {path as written: [Box, ...]}; several rows per image allowed.

    A first row whose coordinates are not integers is taken as a header. Coordinates are
    integers with x0 < x1 and y0 < y1. Errors name ``file:line``.
    """
    boxes: dict[str, list[Box]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != 6:
                    raise BoxesError(
                        f"{path}:{line}: expected 6 columns path,label,x0,y0,x1,y1; got {len(row)}: fix the row"
                    )
                name, label, *coords = (cell.strip() for cell in row)
                try:
                    x0, y0, x1, y1 = (int(c) for c in coords)
                except ValueError:
                    if line == 1:
                        continue  # a header
                    raise BoxesError(
                        f"{path}:{line}: x0,y0,x1,y1 must be integers; got {','.join(coords)}: fix the row"
                    ) from None
                if not (x0 < x1 and y0 < y1) or min(x0, y0) < 0:
                    raise BoxesError(
                        f"{path}:{line}: a box needs 0 <= x0 < x1 and 0 <= y0 < y1; "
                        f"got {x0},{y0},{x1},{y1}: fix the row"
                    )
                boxes.setdefault(name, []).append(Box(label, x0, y0, x1, y1))
    except OSError as exc:
        raise BoxesError(f"cannot read boxes CSV {path}: {exc.strerror or exc}; check the --boxes-csv path") from None
    except UnicodeDecodeError:
        raise BoxesError(f"{path}: not UTF-8 text; save the boxes CSV as UTF-8") from None
    return boxes


def _check(maps, sizes, boxes, labels) -> None:
    if not (len(maps) == len(sizes) == len(boxes) == len(labels)):
        raise ValueError(
            f"maps, sizes, boxes and labels need one entry per image; got {len(maps)}, {len(sizes)}, "
            f"{len(boxes)}, {len(labels)}"
        )


def peak(cam: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the maximum (first in row-major order); None for a map whose maximum is <= 0."""
    index = int(np.argmax(cam))
    y, x = divmod(index, cam.shape[1])
    return None if cam[y, x] <= 0 else (x, y)


def distance_to_box(x: int, y: int, box: tuple[int, int, int, int]) -> float:
    """Euclidean distance in pixels from pixel (x, y) to the pixels of an inclusive-exclusive box."""
    x0, y0, x1, y1 = box
    dx = max(x0 - x, 0, x - (x1 - 1))
    dy = max(y0 - y, 0, y - (y1 - 1))
    return float(np.hypot(dx, dy))


def pointing_game(
    maps: np.ndarray,
    sizes: Sequence[tuple[int, int]],
    boxes: Sequence[Sequence[Box]],
    labels: Sequence[str],
    *,
    tolerance: float = TOLERANCE,
    upsample: Upsampler = upsample_linear,
) -> np.ndarray:
    """bool (B,): hit for each image. maps float32 (B, h, w); sizes: original (height, width);
    boxes: each image's ground-truth boxes; labels: the explained class of each image, as in the CSV."""
    _check(maps, sizes, boxes, labels)
    hits = np.zeros(len(maps), dtype=bool)
    for i, (cam, size, image_boxes, label) in enumerate(zip(maps, sizes, boxes, labels)):
        point = peak(upsample(cam, tuple(size)))
        if point is None:
            continue
        hits[i] = any(
            distance_to_box(*point, box.corners) <= tolerance for box in image_boxes if box.label == str(label)
        )
    return hits


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two inclusive-exclusive boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0) * max(height, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def localisation_error(
    maps: np.ndarray,
    sizes: Sequence[tuple[int, int]],
    boxes: Sequence[Sequence[Box]],
    labels: Sequence[str],
    *,
    threshold: float = BOX_THRESHOLD,
    upsample: Upsampler = upsample_linear,
) -> np.ndarray:
    """bool (B,): top-1 localisation error per image (see the module docstring).

    ``labels``: the predicted (explained) class of each image, as written in the CSV.
    """
    _check(maps, sizes, boxes, labels)
    errors = np.ones(len(maps), dtype=bool)
    for i, (cam, size, image_boxes, label) in enumerate(zip(maps, sizes, boxes, labels)):
        box = map_box(cam, tuple(size), threshold, upsample)
        if box is not None:
            errors[i] = not any(
                iou(box, gt.corners) >= IOU_HIT for gt in image_boxes if gt.label == str(label)
            )
    return errors


def _on_boxed_images(batch: MetricBatch, measure: Callable) -> list[float | None]:
    """``measure(maps, sizes, boxes, labels)`` -> bool per image, on the images with boxes, as
    percentages (None for the others)."""
    keep = batch.with_boxes()
    out: list[float | None] = [None] * len(batch.classes)
    if keep:
        values = measure(batch.small[keep], [batch.sizes[i] for i in keep], [batch.boxes[i] for i in keep],
                         [str(int(batch.classes[i])) for i in keep])
        for i, value in zip(keep, values):
            out[i] = 100.0 * float(value)
    return out


@register_metric("pointing", better={"pointing": "higher"}, needs_boxes=True)
def pointing_metric(batch: MetricBatch, score_fn: Callable, settings: EvalSettings) -> dict:
    """Pointing game hits (percent), within ``--tolerance`` pixels of a box of the explained class."""
    return {"pointing": _on_boxed_images(batch, lambda *a: pointing_game(*a, tolerance=settings.tolerance,
                                                                         upsample=batch.upsample))}


@register_metric("localisation", better={"localisation_error": "lower"}, needs_boxes=True)
def localisation_metric(batch: MetricBatch, score_fn: Callable, settings: EvalSettings) -> dict:
    """Top-1 localisation error (percent): the map's box against the boxes of the explained class."""
    return {"localisation_error": _on_boxed_images(batch, lambda *a: localisation_error(*a, upsample=batch.upsample))}
