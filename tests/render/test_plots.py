"""``evaluate``'s plots: what a reader needs to tell the methods apart, read off the matplotlib figure."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.colors import to_rgba
from PIL import Image

from gradcam_cli.render import plots

METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "random"]


def sanity(n_methods: int, steps: int = 6) -> dict:
    rng = np.random.default_rng(0)
    return {m: {"spearman": list(rng.uniform(0, 1, steps)), "ssim": list(rng.uniform(0, 1, steps))}
            for m in (METHODS + [f"m{k}" for k in range(n_methods)])[:n_methods]}


def figure_facts(monkeypatch, draw) -> dict:
    """Calls ``draw()`` and reads the figure it saves: each line's label, colour and style, and the
    pixel boxes of the axes and of every legend (the figure as written, after its layout)."""
    seen = {}
    save = plots._png

    def capture(fig, plt):
        fig.canvas.draw()  # lays the figure out, as saving does
        renderer = fig.canvas.get_renderer()
        [ax] = fig.axes
        seen["lines"] = [(line.get_label(), to_rgba(line.get_color()), line.get_linestyle()) for line in ax.get_lines()
                         if not line.get_label().startswith("_")]
        seen["axes"] = ax.get_window_extent(renderer).frozen()  # pixels now, not a live transform
        seen["legends"] = [legend.get_window_extent(renderer).frozen() for legend in [*fig.legends, ax.get_legend()] if legend]
        seen["figure"] = fig.bbox.frozen()
        return save(fig, plt)

    monkeypatch.setattr(plots, "_png", capture)
    seen["png"] = draw()
    return seen


def test_sanity_plot_gives_each_of_eight_methods_its_own_colour_and_keeps_the_legend_off_the_curves(monkeypatch):
    data = sanity(8)
    facts = figure_facts(monkeypatch, lambda: plots.sanity_png(data))
    colour = {}
    for label, rgba, style in facts["lines"]:
        method, measure = label.rsplit(" ", 1)
        assert (measure, style) in (("Spearman", "-"), ("SSIM", ":")), label
        colour.setdefault(method, set()).add(rgba)
    assert list(colour) == list(data)
    # a method's Spearman and SSIM lines share one colour, and no two methods share one
    assert all(len(c) == 1 for c in colour.values()), colour
    assert len({c for cs in colour.values() for c in cs}) == 8
    # the legend lies outside the axes, wholly inside the picture
    assert facts["legends"]
    for legend in facts["legends"]:
        assert not legend.overlaps(facts["axes"]), (legend, facts["axes"])
        assert facts["figure"].contains(legend.x0, legend.y0) and facts["figure"].contains(legend.x1, legend.y1)
    assert Image.open(io.BytesIO(facts["png"])).format == "PNG"


def test_sanity_plot_colours_stay_distinct_beyond_twenty_methods(monkeypatch):
    facts = figure_facts(monkeypatch, lambda: plots.sanity_png(sanity(23, steps=3)))
    colours = {label.rsplit(" ", 1)[0]: rgba for label, rgba, _ in facts["lines"]}
    assert len(colours) == 23 and len(set(colours.values())) == 23
    assert plots.sanity_png({}) is None
