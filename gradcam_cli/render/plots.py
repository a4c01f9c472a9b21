"""``evaluate``'s plots as PNG bytes (matplotlib on the Agg backend; no file I/O here)."""

from __future__ import annotations

import io
from typing import Collection, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _png(fig, plt) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def curves_png(mean_curves: dict[str, dict[str, list]], kinds: Sequence[str],
               dashed: Collection[str] = ()) -> bytes | None:
    """The mean curves (method -> curve name -> values over the fraction of pixels): one panel per
    curve of ``kinds`` measured, in that order; methods in ``dashed`` (the baselines) dashed. None
    when no curve was measured."""
    # one panel per curve measured (an empty one would warn that its legend has no lines)
    kinds = [k for k in kinds if any(k in by_kind for by_kind in mean_curves.values())]
    if not kinds:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), constrained_layout=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for method, by_kind in mean_curves.items():
            if kind in by_kind:
                y = by_kind[kind]
                ax.plot(np.linspace(0, 1, len(y)), y, label=method, linestyle="--" if method in dashed else "-")
        ax.set(title=f"{kind} (mean over images)", xlabel="fraction of pixels", ylabel="score")
        ax.legend(fontsize=8)
    return _png(fig, plt)


def sanity_png(sanity: dict[str, dict]) -> bytes | None:
    """The cascade (method -> its ``spearman`` and ``ssim`` per blocks randomised); None when empty."""
    if not sanity:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for method, result in sanity.items():
        ax.plot(range(1, len(result["spearman"]) + 1), result["spearman"], marker="o", label=f"{method} Spearman")
        ax.plot(range(1, len(result["ssim"]) + 1), result["ssim"], marker="x", linestyle=":", label=f"{method} SSIM")
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.set(title="sanity check: layers randomised from the top", xlabel="blocks randomised", ylabel="similarity")
    ax.legend(fontsize=8)
    return _png(fig, plt)
