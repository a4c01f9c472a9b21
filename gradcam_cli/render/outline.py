"""A segmentation target's region, outlined on its overlay."""

from __future__ import annotations

import cv2
import numpy as np

#: white, and two pixels wide on a picture of up to 512 pixels (more on larger ones)
OUTLINE_BGR = (255, 255, 255)


def draw_outline(picture_bgr: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``picture_bgr`` with the outline of ``region`` (bool (h, w), covering the whole picture: a model
    output's, stretched onto it) drawn on a copy; an empty region draws nothing."""
    region = np.asarray(region, bool)
    if not region.any():
        return picture_bgr
    height, width = picture_bgr.shape[:2]
    mask = cv2.resize(region.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = picture_bgr.copy()
    cv2.drawContours(out, contours, -1, OUTLINE_BGR, max(2, round(max(height, width) / 256)))
    return out
