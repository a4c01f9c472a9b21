"""Deletion and insertion in 3-D: the 2-D definitions (:mod:`.perturbation`) with voxels for pixels.

For a volume of (H, W, D) voxels at the 3-D model's input size and its map upsampled there
(trilinearly, as maps are placed back on volumes):

- voxels are ranked by the map, most important first; ties by a stable argsort of ``-map`` in
  C order over (i, j, k) (the earlier voxel first), as pixels are in row-major order;
- step k (k = 0..steps) takes the n_k = round(k * H * W * D / steps) most important voxels
  (round half up, :func:`~.perturbation.step_counts`): deletion replaces them (every channel) by
  the baseline's, insertion restores them onto the baseline;
- each step is scored for the explained class; the AUC is the trapezoid rule over the fraction
  of voxels n_k / (H * W * D).

Baselines, on the values the model's preprocessing is applied to (the volume after
``--intensity`` and the resize, as a full-depth 2-D input's: ``black`` is 0 of that scale):

- ``black``: zeros;
- ``mean``: each volume's per-channel mean;
- ``blur``: the 2-D kernel along all three axes: a separable Gaussian of 11 taps, sigma 5
  (``cv2.getGaussianKernel(11, 5)``, the kernel of 2-D ``cv2.GaussianBlur``), each axis's border
  reflected without repeating the edge voxel (OpenCV's BORDER_REFLECT_101).

The random and centre reference maps are 3-D too (:func:`volume_baseline_map`): seeded uniform
noise at the target layer's (h, w, d) (``np.random.default_rng((seed, i))`` for the run's i-th
volume), and a centred isotropic Gaussian with sigma 1/4 of the shortest side.

Only these two metrics are defined on volumes here: the others (confidence, ROAD, occlusion,
pointing, localisation, MaxBoxAcc) rest on 2-D images (a neighbour imputer, patches, boxes) and
are refused by name (:func:`check_volume_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from gradcam_cli.metrics.perturbation import BLUR_KERNEL, BLUR_SIGMA, Curves, auc, step_counts
from gradcam_cli.metrics.scoring import score_inputs

#: the metrics defined on volumes (3-D models)
VOLUME_METRICS = ("deletion", "insertion")
#: the plots' x axis for the volume curves
VOLUME_AXIS = "fraction of voxels"


def check_volume_metrics(names: Sequence[str]) -> None:
    """ValueError naming the first metric not defined on volumes."""
    for name in names:
        if name not in VOLUME_METRICS:
            raise ValueError(f"metric '{name}' is not defined on volumes (3-D models): it rests on 2-D images; use "
                             f"--metrics {','.join(VOLUME_METRICS)}")


def voxel_ranks(maps: np.ndarray) -> np.ndarray:
    """(B, H, W, D) maps -> int32 (B, H * W * D): each voxel's rank, 0 = most important (stable, C order)."""
    flat = np.asarray(maps, dtype=np.float32).reshape(len(maps), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order, dtype=np.int32)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(flat.shape[1], dtype=np.int32), flat.shape), axis=1)
    return ranks


def gaussian_taps() -> np.ndarray:
    """The 11 taps of 2-D blur's kernel (``cv2.getGaussianKernel(11, 5)``), float64, summing to 1."""
    import cv2

    return cv2.getGaussianKernel(BLUR_KERNEL, BLUR_SIGMA, cv2.CV_64F).reshape(-1)


def blur_volume(values: np.ndarray) -> np.ndarray:
    """(H, W, D, C) -> float32: the 11-tap Gaussian along each spatial axis, BORDER_REFLECT_101 borders."""
    taps = gaussian_taps()
    half = len(taps) // 2
    out = np.asarray(values, np.float64)
    for axis in range(3):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (half, half)
        padded = np.pad(out, pad, mode="reflect")  # d c b | a b c d | c b a: the edge voxel once
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(t, t + n), axis=axis) for t, w in enumerate(taps))
    return out.astype(np.float32)


def volume_baseline(values: np.ndarray, kind: str) -> np.ndarray:
    """The baseline (B, H, W, D, C) float32 of ``black``, ``mean`` or ``blur`` (module docstring)."""
    x = np.asarray(values, np.float32)
    if kind == "black":
        return np.zeros_like(x)
    if kind == "mean":
        return np.broadcast_to(x.mean(axis=(1, 2, 3), keepdims=True), x.shape).astype(np.float32)
    if kind == "blur":
        return np.stack([blur_volume(v) for v in x])
    raise ValueError(f"baseline must be one of black, mean, blur, got {kind!r}")


def volume_curves(values: np.ndarray, maps: np.ndarray, classes, score_fn: Callable, *, insert: bool,
                  baseline: str = "black", steps: int = 20, chunk: int | None = None) -> Curves:
    """Deletion (``insert=False``) or insertion curves of volumes ``values`` float32 (B, H, W, D, C)
    with maps float32 (B, H, W, D); ``score_fn(volumes (M, H, W, D, C), classes (M,)) -> (M,)`` as
    the 2-D metrics' (the volumes before preprocessing). Every step of every volume goes through
    ``score_fn`` in chunks of ``chunk``."""
    x = np.asarray(values, np.float32)
    maps = np.asarray(maps, np.float32)
    if x.ndim != 5 or maps.shape != x.shape[:4]:
        raise ValueError(f"volumes must be float32 (B, H, W, D, C) and maps (B, H, W, D) at their size; got "
                         f"{x.shape} and {maps.shape}: upsample the maps to the model input first")
    classes = np.asarray(classes, np.int32).reshape(-1)
    n, voxels = len(x), int(np.prod(x.shape[1:4]))
    base = volume_baseline(x, baseline)
    ranks = voxel_ranks(maps)
    counts = step_counts(voxels, steps)
    per = steps + 1
    first, second = (base, x) if insert else (x, base)

    def build(start: int, stop: int) -> np.ndarray:
        flat = np.arange(start, stop)
        b, k = flat // per, flat % per
        taken = (ranks[b] < counts[k][:, None]).reshape(-1, *x.shape[1:4], 1)
        return np.where(taken, second[b], first[b])

    scores = score_inputs(score_fn, build, n * per, np.repeat(classes, per), chunk).reshape(n, per)
    fractions = counts / float(voxels)
    return Curves(scores=scores, auc=auc(scores, fractions), fractions=fractions)


def volume_baseline_map(name: str, size: tuple[int, int, int], *, seed: int = 0, index: int = 0) -> np.ndarray:
    """The reference map ``random`` or ``centre`` at (h, w, d), float32 in [0, 1]."""
    if name == "random":
        return np.random.default_rng((seed, index)).random(size, dtype=np.float32)
    if name == "centre":
        sigma = 0.25 * min(size)
        axes = [np.arange(n, dtype=np.float64) - (n - 1) / 2.0 for n in size]
        d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
        return np.exp(-d2 / (2.0 * sigma * sigma)).astype(np.float32)
    raise ValueError(f"baseline map must be random or centre, got {name!r}")
