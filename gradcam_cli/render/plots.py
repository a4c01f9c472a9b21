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


def curves_png(mean_curves: dict[str, dict[str, list]], kinds: Sequence[str] | dict[str, str],
               dashed: Collection[str] = ()) -> bytes | None:
    """The mean curves (method -> curve name -> values over 0 .. 1): one panel per curve of
    ``kinds`` measured, in that order (a dict: curve name -> its x axis; a list: each over the
    fraction of pixels); methods in ``dashed`` (the baselines) dashed. None when no curve was measured."""
    axes_of = dict(kinds) if isinstance(kinds, dict) else {k: "fraction of pixels" for k in kinds}
    # one panel per curve measured (an empty one would warn that its legend has no lines)
    kinds = [k for k in axes_of if any(k in by_kind for by_kind in mean_curves.values())]
    if not kinds:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), constrained_layout=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for method, by_kind in mean_curves.items():
            if kind in by_kind:
                y = by_kind[kind]
                ax.plot(np.linspace(0, 1, len(y)), y, label=method, linestyle="--" if method in dashed else "-")
        ax.set(title=f"{kind} (mean over images)", xlabel=axes_of[kind], ylabel="score")
        ax.legend(fontsize=8)
    return _png(fig, plt)


def method_colours(n: int) -> list[tuple]:
    """``n`` distinct RGBA colours, one per method: matplotlib's tab10 up to 10 (its grey left to
    last), tab20's dark then light halves up to 20, then ``n`` evenly spaced hues of the perceptual
    ``turbo`` map."""
    from matplotlib import colormaps

    if n <= 10:
        tab10 = colormaps["tab10"].colors
        return [tuple(c) + (1.0,) for c in (tab10[:7] + tab10[8:] + tab10[7:8])[:n]]
    if n <= 20:
        tab20 = colormaps["tab20"].colors
        return [tuple(c) + (1.0,) for c in (tab20[0::2] + tab20[1::2])[:n]]
    return [tuple(colormaps["turbo"](x)) for x in np.linspace(0.05, 0.95, n)]


#: legend entries per legend column of the sanity plot (more methods: more columns)
_LEGEND_ROWS = 16


def sanity_png(sanity: dict[str, dict]) -> bytes | None:
    """The cascade (method -> its ``spearman`` and ``ssim`` per blocks randomised); None when empty.

    One colour per method (:func:`method_colours`), Spearman solid with circles, SSIM dotted with
    crosses in the same colour; the legend (methods, then the two line styles) to the right of the
    axes, never over the curves."""
    if not sanity:
        return None
    plt = _pyplot()
    from matplotlib.lines import Line2D

    entries = len(sanity) + 3
    columns = -(-entries // _LEGEND_ROWS)
    fig, ax = plt.subplots(figsize=(6 + 1.8 * columns, max(4.0, 0.22 * min(entries, _LEGEND_ROWS) + 1)),
                           layout="constrained")
    handles = []
    for (method, result), colour in zip(sanity.items(), method_colours(len(sanity))):
        ax.plot(range(1, len(result["spearman"]) + 1), result["spearman"], color=colour, marker="o", linestyle="-",
                label=f"{method} Spearman")
        ax.plot(range(1, len(result["ssim"]) + 1), result["ssim"], color=colour, marker="x", linestyle=":",
                label=f"{method} SSIM")
        handles.append(Line2D([], [], color=colour, linewidth=3, label=method))
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    handles += [Line2D([], [], color="black", marker="o", linestyle="-", label="Spearman"),
                Line2D([], [], color="black", marker="x", linestyle=":", label="SSIM"),
                Line2D([], [], color="black", linewidth=0.8, linestyle="--", label="0.5: fails if above at the end")]
    ax.set(title="sanity check: layers randomised from the top", xlabel="blocks randomised", ylabel="similarity")
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, ncols=columns)
    return _png(fig, plt)
