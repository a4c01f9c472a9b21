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


def _linear_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` to ``size`` samples, half-pixel centres, edges clamped."""
    n = a.shape[axis]
    if n == size:
        return a
    src = np.clip((np.arange(size, dtype=np.float64) + 0.5) * (n / size) - 0.5, 0.0, n - 1.0)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    shape = [1] * a.ndim
    shape[axis] = size
    frac = (src - i0).astype(np.float32).reshape(shape)
    low, high = np.take(a, i0, axis=axis), np.take(a, i1, axis=axis)
    high -= low  # in place: two arrays of the output's size at a time (a 256^3 map: 2 x 64 MiB)
    high *= frac
    low += high
    return low


def upsample_trilinear(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A 3-D map (h, w, d[, ...]) at ``shape`` (H, W, D): linear along each axis in turn, half-pixel
    centres (TensorFlow's resize, and Score-CAM's 3-D masks, :func:`gradcam_cli.engine.volume.trilinear`),
    float32. The door from a 3-D map to its volume, and from a volume to a 3-D model's input size."""
    out = np.asarray(volume, np.float32)
    for axis, size in enumerate(shape):
        out = _linear_axis(out, axis, int(size))
    return np.ascontiguousarray(out, np.float32)
