"""A detector's box, drawn with its label on its overlay (``--target box``)."""

from __future__ import annotations

import cv2
import numpy as np

#: white box and label on a black band, two pixels wide on a picture of up to 512 pixels
BOX_BGR = (255, 255, 255)


def draw_detection(picture_bgr: np.ndarray, box: list | None, label: str) -> np.ndarray:
    """A copy of ``picture_bgr`` with ``box`` ([x0, y0, x1, y1] floats in the picture's pixels) and
    ``label`` above it (inside it at the top edge); a missing box, or one wholly outside the picture,
    draws nothing."""
    height, width = picture_bgr.shape[:2]
    if box is None:
        return picture_bgr
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (min(x1, width) > max(x0, 0) and min(y1, height) > max(y0, 0)):
        return picture_bgr
    clip = lambda v, hi: int(round(min(max(v, 0.0), hi - 1)))
    p0, p1 = (clip(x0, width), clip(y0, height)), (clip(x1, width), clip(y1, height))
    thick = max(2, round(max(height, width) / 256))
    out = picture_bgr.copy()
    cv2.rectangle(out, p0, p1, BOX_BGR, thick)
    scale = max(0.4, max(height, width) / 640)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ty = p0[1] - thick if p0[1] - th - base - thick >= 0 else p0[1] + th + thick
    cv2.rectangle(out, (p0[0], ty - th - base // 2), (min(p0[0] + tw, width - 1), ty + base // 2), (0, 0, 0), -1)
    cv2.putText(out, label, (p0[0], ty), cv2.FONT_HERSHEY_SIMPLEX, scale, BOX_BGR, 1, cv2.LINE_AA)
    return out
