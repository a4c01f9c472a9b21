"""One door from a map to an image: the :data:`Upsampler` type every picture and metric takes.

An upsampler takes a map (h, w), float32 or uint8, and the (height, width) of an image, and
returns the map at that image in the same dtype. :func:`upsample_linear` is the bilinear
stretch of 'same'-padded models (OpenCV, pixel centres aligned); a model whose cells are not
spread evenly over the input gets :func:`gradcam_cli.models.geometry.upsample` bound to its
geometry instead (``GradCAM.upsampler``). Overlays, boxes, ``evaluate`` and the pointing game
all take one and never choose one themselves.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

#: (map (h, w) float32 or uint8, (height, width)) -> the map at (height, width), same dtype
Upsampler = Callable[[np.ndarray, tuple[int, int]], np.ndarray]


def upsample_linear(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The bilinear stretch (``cv2.resize`` INTER_LINEAR) of ``cam`` to ``size`` = (height, width);
    uint8 stays uint8 (OpenCV's fixed-point path), anything else becomes float32."""
    cam = np.asarray(cam)
    if cam.dtype != np.uint8:
        cam = cam.astype(np.float32, copy=False)
    height, width = (int(v) for v in size)
    return cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
