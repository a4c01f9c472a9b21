"""Agreement with occlusion: the Grad-CAM paper's faithfulness check (Selvaraju et al. 2017, sec. 5.1).

Occlusion (Zeiler and Fergus 2014) needs no labels and no gradients: hide one patch of the
image and see how much the explained class's score falls. A faithful map is high where
hiding the pixels costs the model most. The paper reports the rank correlation between
Grad-CAM and occlusion maps; this is that measure, defined so that it can be computed
exactly and compared across methods:

- the image (H, W) is cut into a ``GRID`` x ``GRID`` tiling of patches (row and column
  edges ``round(linspace(0, H, GRID + 1))``; no overlap, every pixel in one patch);
- patch k is occluded by setting its pixels to the image's mean colour (per channel, so the
  patch carries no edges and no colour of its own), giving x_k;
- the occlusion importance of patch k is ``d_k = s(x) - s(x_k)`` (s: the explained class's
  score, as every metric here reads it);
- the map's importance of patch k is its mean over the patch's pixels, ``c_k``;
- ``occlusion`` = Spearman's rank correlation between (c_k) and (d_k) over the patches,
  signed (-1 .. 1; higher is better, 0 is no agreement). A constant map or a constant
  occlusion answer carries no ranking: 0.

All ``GRID * GRID`` occluded images of a batch go through the compiled scorer in chunks.
The occlusion answer depends on the image and its class only, not on the method, so it is
computed once per image and reused for every method and baseline of the run (a small cache
keyed by the pixels' and classes' bytes).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable

import numpy as np

from gradcam_cli.metrics.perturbation import check_inputs
from gradcam_cli.metrics.registry import MetricBatch, register_metric
from gradcam_cli.metrics.scoring import score_inputs
from gradcam_cli.metrics.stats import rank_correlation
from gradcam_cli.settings import EvalSettings

GRID = 7  # patches per side: 49 occluded images per image (a 224 px input: 32 px patches)
_CACHE_BATCHES = 4  # batches of occlusion answers kept (one batch serves all its methods)
_cache: OrderedDict[bytes, np.ndarray] = OrderedDict()


def patch_edges(size: int, grid: int = GRID) -> np.ndarray:
    """The ``grid + 1`` edges of the patches along one side of ``size`` pixels."""
    if grid < 1 or size < grid:
        raise ValueError(f"cannot cut {size} pixels into {grid} patches: need grid >= 1 and size >= grid")
    return np.round(np.linspace(0, size, grid + 1)).astype(int)


def mean_colour(image: np.ndarray) -> np.ndarray:
    """The image's mean colour (C,), float64: what an occluded patch is set to."""
    return image.reshape(-1, image.shape[-1]).astype(np.float64).mean(axis=0)


def occluded(image: np.ndarray, k: int, grid: int = GRID, *, fill: np.ndarray | None = None) -> np.ndarray:
    """Image ``image`` (H, W, C) with patch k (row-major) set to ``fill`` (default its mean colour), float32."""
    height, width = image.shape[:2]
    rows, cols = patch_edges(height, grid), patch_edges(width, grid)
    r, c = divmod(int(k), grid)
    out = np.array(image, dtype=np.float32, copy=True)
    out[rows[r]:rows[r + 1], cols[c]:cols[c + 1]] = mean_colour(image) if fill is None else fill
    return out


def occlusion_drops(images: np.ndarray, classes, score_fn: Callable, *, grid: int = GRID,
                    chunk: int | None = None) -> np.ndarray:
    """float64 (B, grid * grid): ``s(x) - s(x_k)`` for each image and patch (row-major).

    The B images and their B * grid * grid occluded copies are scored together, in chunks.
    """
    images, _, classes = check_inputs(images, np.zeros(images.shape[:3], np.float32), classes)
    n, per = len(images), grid * grid
    count = n * (1 + per)

    def build(start: int, stop: int) -> np.ndarray:
        out = []
        for j in range(start, stop):
            if j < n:
                out.append(images[j].astype(np.float32))
            else:
                i, k = divmod(j - n, per)
                out.append(occluded(images[i], k, grid, fill=fills[i]))
        return np.stack(out)

    fills = [mean_colour(image) for image in images]  # once per image, not per patch
    picked = np.concatenate([classes, np.repeat(classes, per)])
    scores = score_inputs(score_fn, build, count, picked, chunk)
    return scores[:n, None] - scores[n:].reshape(n, per)


def patch_means(maps: np.ndarray, grid: int = GRID) -> np.ndarray:
    """float64 (B, grid * grid): each map's mean over each patch (row-major)."""
    maps = np.asarray(maps, np.float64)
    rows, cols = patch_edges(maps.shape[1], grid), patch_edges(maps.shape[2], grid)
    return np.stack([maps[:, rows[r]:rows[r + 1], cols[c]:cols[c + 1]].mean(axis=(1, 2))
                     for r in range(grid) for c in range(grid)], axis=1)


def occlusion_agreement(images: np.ndarray, maps: np.ndarray, classes, score_fn: Callable, *,
                        grid: int = GRID, drops: np.ndarray | None = None) -> np.ndarray:
    """float64 (B,): the rank correlation of each map's patch means with the occlusion drops
    (``drops`` from :func:`occlusion_drops`, computed here when not given)."""
    images, maps, classes = check_inputs(images, maps, classes)
    if drops is None:
        drops = occlusion_drops(images, classes, score_fn, grid=grid)
    return rank_correlation(patch_means(maps, grid), drops)


def _cached_drops(batch: MetricBatch, score_fn: Callable) -> np.ndarray:
    digest = hashlib.blake2b(digest_size=16)
    for part in (np.ascontiguousarray(batch.pixels), np.asarray(batch.classes, np.int64)):
        digest.update(str((part.dtype, part.shape)).encode())
        digest.update(part.tobytes())
    digest.update(str(id(score_fn)).encode())
    key = digest.digest()
    if key not in _cache:
        _cache[key] = occlusion_drops(batch.pixels, batch.classes, score_fn)
        while len(_cache) > _CACHE_BATCHES:
            _cache.popitem(last=False)
    _cache.move_to_end(key)
    return _cache[key]


@register_metric("occlusion", better={"occlusion": "higher"}, default=False)
def occlusion_metric(batch: MetricBatch, score_fn: Callable, settings: EvalSettings) -> dict:
    """Rank correlation (-1..1) of the map with the 7 x 7 occlusion drops of its class's score."""
    drops = _cached_drops(batch, score_fn)
    return {"occlusion": occlusion_agreement(batch.pixels, batch.maps, batch.classes, score_fn, drops=drops)}
