"""Reference maps scored beside every method: a metric means little without them.

- ``random``: seeded uniform noise in [0, 1); image ``i`` of a run uses
  ``np.random.default_rng((seed, i))``, so a map does not depend on the batching.
- ``centre``: a centred isotropic Gaussian, sigma = 1/4 of the short side, peak 1
  (the centre bias of photographs, a strong baseline for the pointing game).

Both return float32 (B, H, W) in [0, 1], the maps contract.
"""

from __future__ import annotations

import numpy as np

#: the baselines ``evaluate`` scores beside every method (the keys of their columns and records)
BASELINES = ("random", "centre")
CENTRE_SIGMA = 0.25  # of the short side


def random_maps(count: int, size: tuple[int, int], *, seed: int = 0, start: int = 0) -> np.ndarray:
    """(count, H, W) uniform noise for images ``start .. start + count - 1`` of a run."""
    height, width = size
    out = np.empty((count, height, width), np.float32)
    for i in range(count):
        out[i] = np.random.default_rng((seed, start + i)).random((height, width), dtype=np.float32)
    return out


def centre_maps(count: int, size: tuple[int, int]) -> np.ndarray:
    """(count, H, W): exp(-d^2 / (2 sigma^2)), d from the image centre, sigma = min(H, W) / 4."""
    height, width = size
    sigma = CENTRE_SIGMA * min(height, width)
    y = np.arange(height, dtype=np.float64) - (height - 1) / 2.0
    x = np.arange(width, dtype=np.float64) - (width - 1) / 2.0
    cam = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2.0 * sigma * sigma)).astype(np.float32)
    return np.repeat(cam[None], count, axis=0)


def baseline_maps(name: str, count: int, size: tuple[int, int], *, seed: int = 0, start: int = 0) -> np.ndarray:
    """The baseline map ``name`` (``random`` or ``centre``) for ``count`` images."""
    if name == "random":
        return random_maps(count, size, seed=seed, start=start)
    if name == "centre":
        return centre_maps(count, size)
    raise ValueError(f"baseline map must be one of {', '.join(BASELINES)}, got {name!r}")
