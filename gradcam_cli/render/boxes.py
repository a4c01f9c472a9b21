"""The Grad-CAM paper's localisation box: threshold the map, keep its largest segment, box it.

Selvaraju et al. (2017), section 4.1: "we threshold the map at 15% of its maximum
intensity, take the bounding box of the largest connected segment". Boxes are
``[x0, y0, x1, y1]`` in original-image pixels, inclusive-exclusive (``x1 - x0`` is
the width), or ``None`` for an all-zero map.

The paper's code stretches the map bilinearly to the model input (the whole image squashed) and
boxes it there; stretching it to the original image instead gives the same box up to the pixel
grids. A coarse map (7 x 7 cells) often passes 15% of its peak up to every edge: the box is then
the whole image, which is the protocol's answer, not an upsampling artefact (docs/explain.md
gives the measurements, ``tools/box_coverage.py``).
"""

from __future__ import annotations

import cv2
import numpy as np

from gradcam_cli.render.resample import Upsampler, upsample_linear
from gradcam_cli.settings import BOX_THRESHOLD


def box_from_map(cam: np.ndarray, threshold: float = BOX_THRESHOLD) -> list[int] | None:
    """The box of the largest 8-connected segment of ``cam >= threshold * cam.max()``.

    ``cam`` is float (H, W) in [0, 1] at the resolution the box is wanted in. Ties in
    area go to the segment OpenCV labels first (the first in raster order). An
    all-zero (or all-negative) map has no segment: ``None``.
    """
    cam = np.asarray(cam, np.float32)
    if cam.ndim != 2 or cam.size == 0:
        raise ValueError(f"expected one map of shape (H, W); got shape {cam.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"expected a box threshold in [0, 1] (a fraction of the map's maximum); got {threshold}")
    peak = float(cam.max())
    if not peak > 0.0:  # also catches NaN
        return None
    mask = (cam >= threshold * peak).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    label = 1 + int(np.argmax(stats[1:count, cv2.CC_STAT_AREA]))  # label 0 is the background
    x, y, w, h = (int(stats[label, k]) for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                   cv2.CC_STAT_HEIGHT))
    return [x, y, x + w, y + h]


def map_box(
    cam: np.ndarray,
    image_size: tuple[int, int],
    threshold: float = BOX_THRESHOLD,
    upsample: Upsampler = upsample_linear,
) -> list[int] | None:
    """The box of a map (h, w) in the pixels of an image of ``image_size`` (height, width).

    The map is first upsampled to the image as the overlay is (``upsample``, default
    :func:`~gradcam_cli.render.resample.upsample_linear`; pass the overlay's own upsampler).
    """
    height, width = (int(v) for v in image_size)
    cam = np.asarray(cam, np.float32)
    if cam.ndim != 2:
        raise ValueError(f"expected one map of shape (h, w); got shape {cam.shape}")
    up = upsample(cam, (height, width))
    if up.shape != (height, width):
        raise ValueError(f"the upsampler returned shape {up.shape}; expected {(height, width)}")
    return box_from_map(up, threshold)


def draw_box(image_bgr: np.ndarray, box: list[int] | None, colour=(0, 255, 0), thickness: int = 2) -> np.ndarray:
    """A copy of ``image_bgr`` with ``box`` (inclusive-exclusive) outlined on its edge pixels; unchanged if ``None``."""
    out = np.array(image_bgr, copy=True)
    if box is not None:
        x0, y0, x1, y1 = box
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), tuple(int(c) for c in colour), int(thickness))
    return out
