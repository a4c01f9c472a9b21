"""Pictures of a 3-D map on its volume: a montage of slices (PNG) and a GIF through the slices.

The volume is drawn through an 8-bit view (a window, as 2-D full-depth inputs: computed by the
caller) and the map, already at the volume's shape, is blended over it with the run's colormap
and alpha, slice by slice along the last axis (k: axial for a NIfTI in RAS order). Each slice is
shown as radiologists read an axial slice: i (left-right) across, j (posterior-anterior) up, i.e.
the (i, j) plane transposed and flipped vertically.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from gradcam_cli.render.gif import gif_bytes
from gradcam_cli.render.overlay import colormap_table, encode_png

#: the montage shows at most this many slices, evenly spaced
MONTAGE_SLICES = 16
#: each tile's long side at least (small volumes are enlarged, nearest neighbour)
TILE_SIDE = 128
#: black pixels between the montage's tiles
GAP = 2


def _upright(plane: np.ndarray) -> np.ndarray:
    """An (i, j) plane as a picture: rows are j from anterior (top) to posterior, columns i."""
    return np.ascontiguousarray(plane.T[::-1])


def picked_slices(depth: int, count: int = MONTAGE_SLICES) -> list[int]:
    """``count`` slice indices spread evenly over ``depth`` (all of them when there are fewer)."""
    if depth <= count:
        return list(range(depth))
    return sorted({round(float(v)) for v in np.linspace(0, depth - 1, count)})


def slice_overlay(view: np.ndarray, cam: np.ndarray, k: int, *, alpha: float, colormap) -> np.ndarray:
    """Slice ``k`` of a view (X, Y, Z) uint8 with the map (X, Y, Z) float in [0, 1] over it: RGB uint8."""
    grey = _upright(view[:, :, k])
    levels = cv2.convertScaleAbs(_upright(np.asarray(cam[:, :, k], np.float32)), alpha=255.0)
    table = colormap_table(int(colormap)) if isinstance(colormap, (int, np.integer)) else colormap
    heat = cv2.cvtColor(cv2.applyColorMap(levels, table), cv2.COLOR_BGR2RGB)
    base = np.repeat(grey[..., None], 3, axis=2)
    picture = cv2.addWeighted(base, 1.0 - alpha, heat, alpha, 0.0)
    scale = max(1, math.ceil(TILE_SIDE / max(picture.shape[:2])))
    return np.kron(picture, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else picture


def montage_png(view: np.ndarray, cam: np.ndarray, *, alpha: float = 0.4, colormap=cv2.COLORMAP_JET) -> bytes:
    """A grid of up to :data:`MONTAGE_SLICES` slices along the last axis, each with the map over it."""
    tiles = [slice_overlay(view, cam, k, alpha=alpha, colormap=colormap) for k in picked_slices(view.shape[2])]
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    h, w = tiles[0].shape[:2]
    gap = GAP
    sheet = np.zeros((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), np.uint8)  # black between tiles
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return encode_png(sheet)


def slices_gif(view: np.ndarray, cam: np.ndarray, caption: str, *, alpha: float = 0.4, colormap=cv2.COLORMAP_JET,
               ms: int = 120) -> bytes:
    """A GIF through every slice along the last axis (at most 64, evenly spaced), captioned with the slice."""
    ks = picked_slices(view.shape[2], 64)
    frames = [slice_overlay(view, cam, k, alpha=alpha, colormap=colormap) for k in ks]
    return gif_bytes(frames, [f"{caption} · slice {k}" for k in ks], ms=ms)
