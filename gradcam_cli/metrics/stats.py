"""Mean and 95% bootstrap confidence interval (percentile method, seeded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values and the bootstrap interval [low, high] around it."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap(
    values: Sequence[float] | np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Mean and percentile bootstrap interval of the values (NaN values are left out).

    ``resamples`` means of n values drawn with replacement (``np.random.default_rng(seed)``);
    the interval is their (1 - level) / 2 and (1 + level) / 2 quantiles (NumPy's default
    linear interpolation). No values: all NaN; one value: low = high = mean.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    resamples = int(resamples)
    if resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    rows = max(1, 4_000_000 // n)  # resamples drawn per block: memory stays ~32 MB for any n
    means = np.concatenate(
        [x[rng.integers(0, n, size=(min(rows, resamples - i), n))].mean(axis=1) for i in range(0, resamples, rows)]
    )
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(x.mean()), float(low), float(high), n)


def bootstrap_statistic(
    rows: Sequence[Sequence[float]] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """A statistic of all images' rows (N, K) -> float (e.g. MaxBoxAcc from hit curves) and its
    percentile bootstrap interval over images (rows drawn with replacement, seeded as
    :func:`bootstrap`); ``mean`` holds the statistic of the rows as they are."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    x = np.asarray(rows, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    values = np.array([statistic(x[rng.integers(0, n, size=n)]) for _ in range(int(resamples))])
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(statistic(x)), float(low), float(high), n)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of each row pair, (B, ...) x (B, ...) -> (B,) in [-1, 1], ties
    given average ranks; 0 where either row is constant (it carries no ranking)."""
    from scipy.stats import rankdata

    ra = rankdata(np.asarray(a, np.float64).reshape(len(a), -1), axis=1)
    rb = rankdata(np.asarray(b, np.float64).reshape(len(b), -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    na, nb = np.sqrt((ra * ra).sum(axis=1)), np.sqrt((rb * rb).sum(axis=1))
    out = np.zeros(len(ra))
    both = (na > 0) & (nb > 0)
    out[both] = (ra[both] * rb[both]).sum(axis=1) / (na[both] * nb[both])
    return out
