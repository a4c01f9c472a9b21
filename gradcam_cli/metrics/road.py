"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci 2022, ICML).

Pixels are removed by rank and filled in by the *noisy linear imputer*, so that the
model cannot tell from the shape of the hole where the removed pixels were:

- each removed pixel's value is the weighted mean of its in-image 8 neighbours
  (weight 1/6 for the 4 edge neighbours, 1/12 for the 4 diagonal ones, normalised over
  the neighbours inside the image), known neighbours giving their values and removed
  ones their unknowns: one sparse linear system per image, all 3 channels solved
  together as 3 right-hand sides (``scipy.sparse`` + ``spsolve``);
- Gaussian noise of standard deviation ``noise`` = 0.01 of the intensity range
  (0.01 * 255 in pixel space) is added to the imputed pixels (seeded; not clipped).

MoRF (most relevant first) removes the p% highest-ranked pixels, LeRF (least relevant
first) the p% lowest-ranked, for p = 10, 20, ..., 90. Pixels are selected BY RANK:
exactly n_p = round(p * H * W / 100) pixels (halves up), ranked as in deletion (a
stable argsort of ``-map`` in row-major order), so MoRF(p) and LeRF(100 - p) remove
complementary sets. Scores are those of the perturbed images for the explained class.

ROAD-combined, per image: the mean over the percentages of (LeRF(p) - MoRF(p)) / 2;
higher is better. Aggregate: its mean over images.

Compared with pytorch-grad-cam (``metrics/road.py``, ``perturbation_confidence.py``):
the imputer and its weights are the same (its noise is absolute on the normalised
tensor; here relative to the pixel range, before preprocessing). Its pixel selection
is a threshold, ``mask = cam < np.percentile(cam, p)`` (pixels kept; the rest
imputed), so its MoRF(p) removes the top (100 - p)% and LeRF(p) (on ``1 - cam``) the
bottom (100 - p)%; over the symmetric set 10..90 the averages cover the same
percentages as here. Its ``ROADCombined`` returns (mean LeRF - mean MoRF) / 2 of
score *differences* (after - before); the original score cancels, so the value equals
ours. With a threshold, ties decide the count: when more than p% of a map is exactly 0
(common after a ReLU) the percentile is 0, ``cam < 0`` keeps nothing and every pixel
is removed. Selection by rank removes exactly p%.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from gradcam_cli.metrics.perturbation import check_inputs, pixel_ranks
from gradcam_cli.metrics.registry import MetricBatch, register_metric
from gradcam_cli.metrics.scoring import score_inputs
from gradcam_cli.settings import EvalSettings

PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
NOISE = 0.01
#: (dy, dx, weight) of the 8 neighbours: 1/6 for the edges, 1/12 for the diagonals (sum 1)
NEIGHBOURS = (
    (-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12),
    (0, -1, 1 / 6), (0, 1, 1 / 6),
    (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12),
)


@dataclass(frozen=True)
class Road:
    """Scores after removal, (B, P) for MoRF and LeRF at ``percentages``; ``combined`` (B,)."""

    morf: np.ndarray
    lerf: np.ndarray
    percentages: tuple[int, ...]

    @property
    def combined(self) -> np.ndarray:
        """Per image: mean over the percentages of (LeRF - MoRF) / 2."""
        return ((self.lerf - self.morf) / 2.0).mean(axis=1)


def removal_count(pixels: int, percent: float) -> int:
    """n_p = round(p * pixels / 100), halves rounded up."""
    if not 0 <= percent <= 100:
        raise ValueError(f"a ROAD percentage must lie in [0, 100], got {percent!r}")
    return int(np.floor(percent * pixels / 100.0 + 0.5))


def removal_masks(maps: np.ndarray, percent: float, most_relevant_first: bool = True) -> np.ndarray:
    """bool (B, H, W): the pixels ROAD removes at ``percent``, selected by rank (exactly n_p per map)."""
    maps = np.asarray(maps, dtype=np.float32)
    b, h, w = maps.shape
    n = removal_count(h * w, percent)
    ranks = pixel_ranks(maps)
    removed = ranks < n if most_relevant_first else ranks >= h * w - n
    return removed.reshape(b, h, w)


def impute(
    image: np.ndarray,
    removed: np.ndarray,
    *,
    noise: float = NOISE,
    rng: np.random.Generator | None = None,
    value_range: float = 255.0,
) -> np.ndarray:
    """The noisy linear imputer: image (H, W, C), removed bool (H, W) -> float32 (H, W, C).

    Pixels not removed keep their values exactly. ``noise`` is a fraction of
    ``value_range``; ``rng`` defaults to ``np.random.default_rng(0)``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    h, w = removed.shape
    values = np.asarray(image, dtype=np.float64).reshape(h * w, -1)
    unknown = np.flatnonzero(removed.reshape(-1))
    m = len(unknown)
    out = values.copy()
    if m == 0:
        return out.reshape(image.shape).astype(np.float32)
    if m == h * w:
        raise ValueError("the imputer needs at least one known pixel; got a mask that removes all of them")
    variable = np.full(h * w, -1, dtype=np.int64)
    variable[unknown] = np.arange(m)
    ys, xs = np.divmod(unknown, w)
    diagonal = np.zeros(m)
    rhs = np.zeros((m, values.shape[1]))
    rows, cols, weights = [], [], []
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        eq = np.flatnonzero((ny >= 0) & (ny < h) & (nx >= 0) & (nx < w))
        neighbour = ny[eq] * w + nx[eq]
        diagonal[eq] += weight
        var = variable[neighbour]
        free = var >= 0
        rows.append(eq[free])
        cols.append(var[free])
        weights.append(np.full(int(free.sum()), -weight))
        rhs[eq[~free]] += weight * values[neighbour[~free]]
    rows.append(np.arange(m))
    cols.append(np.arange(m))
    weights.append(diagonal)
    system = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    solution = spsolve(system.tocsc(), rhs).reshape(m, -1)
    if noise:
        rng = rng if rng is not None else np.random.default_rng(0)
        solution = solution + rng.standard_normal(solution.shape) * (noise * value_range)
    out[unknown] = solution
    return out.reshape(image.shape).astype(np.float32)


def road(
    images: np.ndarray,
    maps: np.ndarray,
    classes,
    score_fn: Callable,
    *,
    percentages: Sequence[float] = PERCENTAGES,
    noise: float = NOISE,
    seed: int = 0,
    image_ids: Sequence[int] | None = None,
    chunk: int | None = None,
) -> Road:
    """MoRF and LeRF scores at ``percentages`` for images RGB uint8 (B, H, W, 3), maps (B, H, W).

    The 2 * P imputed versions of every image go through ``score_fn`` in chunks; the
    next chunk is imputed while the current one is scored. The noise of image b's
    j-th version (MoRF then LeRF, in ``percentages`` order) comes from
    ``np.random.default_rng((seed, image_ids[b], j))``: pass global image indices
    as ``image_ids`` to make it independent of batching (default: 0..B-1).
    """
    images, maps, classes = check_inputs(images, maps, classes)
    percentages = tuple(percentages)
    n, h, w = maps.shape
    ids = list(range(n)) if image_ids is None else [int(i) for i in image_ids]
    if len(ids) != n:
        raise ValueError(f"image_ids must hold one id per image ({n}); got {len(ids)}")
    ranks = pixel_ranks(maps).reshape(n, h, w)
    counts = [removal_count(h * w, p) for p in percentages]
    per_image = 2 * len(percentages)

    def build(start: int, stop: int) -> np.ndarray:
        out = []
        for flat in range(start, stop):
            b, j = divmod(flat, per_image)
            count = counts[j % len(percentages)]
            removed = ranks[b] < count if j < len(percentages) else ranks[b] >= h * w - count
            rng = np.random.default_rng((seed, ids[b], j))
            out.append(impute(images[b], removed, noise=noise, rng=rng))
        return np.stack(out)

    scores = score_inputs(score_fn, build, n * per_image, np.repeat(classes, per_image), chunk)
    scores = scores.reshape(n, 2, len(percentages))
    return Road(morf=scores[:, 0], lerf=scores[:, 1], percentages=percentages)


@register_metric("road", better={"road_morf": "lower", "road_lerf": "higher", "road_combined": "higher"})
def road_metric(batch: MetricBatch, score_fn: Callable, settings: EvalSettings) -> dict:
    """ROAD's MoRF and LeRF means over the percentages, and their combination; noise seeded per image."""
    result = road(batch.pixels, batch.maps, batch.classes, score_fn, seed=settings.seed, image_ids=list(batch.ids))
    return {"road_morf": result.morf.mean(axis=1), "road_lerf": result.lerf.mean(axis=1),
            "road_combined": result.combined}
