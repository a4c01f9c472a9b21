"""What an overlay JPEG may carry under its picture (``explain --caption --colorbar``): a colour bar
of the colormap from 0 to 1, then a caption strip naming the map. Arrays in, arrays out.

Both are one-line strips as wide as the overlay, drawn with the grid's and GIF's text code
(:mod:`gradcam_cli.render.text`): light text on the dark band, one font size for a width.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from gradcam_cli.render.overlay import colormap_table
from gradcam_cli.render.text import STRIP_RGB, TEXT_RGB, font_size_for, load_font, strip_height, text_strip

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1: inclusive-exclusive pixels
#: the end labels of the colour bar: the map's range
LOW, HIGH = "0", "1"


def overlay_caption(entry: dict, method: str) -> str:
    """``"tabby 0.62 · gradcam · top-1"``: a map's class label, probability (a regression output's
    value), method and rank; ``entry`` is its record in ``predictions.json``."""
    score = f"{entry['probability']:.2f}" if "probability" in entry else f"{entry.get('value', 0):.3g}"
    return f"{entry['label']} {score} · {method} · top-{entry['rank']}"


def colorbar_rect(width: int, size: int | None = None) -> Rect:
    """Where the colour ramp lies in a :func:`colorbar_strip` ``width`` px wide: between the "0" and
    "1" labels (the whole width, less the padding, when the strip is too narrow for them), over
    the middle half of the strip's height."""
    size = size or font_size_for(width)
    height, pad = strip_height(size), max(2, size // 3)
    font = load_font(size)
    x0, x1 = pad + math.ceil(font.getlength(LOW)) + pad, width - pad - math.ceil(font.getlength(HIGH)) - pad
    if x1 - x0 < 8:  # no room for the labels: the ramp alone
        x0, x1 = min(pad, width // 4), width - min(pad, width // 4)
    return x0, height // 4, x1, height - height // 4


def colorbar_strip(width: int, colormap, size: int | None = None) -> np.ndarray:
    """A colour bar, RGB uint8 (strip_height(size), width, 3): the ``colormap`` (an OpenCV id or a
    (256, 1, 3) BGR table) from level 0 (the map's 0, leftmost column) to 255 (its 1, rightmost
    column), evenly, labelled "0" and "1" at its ends, on the caption's dark band."""
    size = size or font_size_for(width)
    x0, y0, x1, y1 = colorbar_rect(width, size)
    height, pad = strip_height(size), max(2, size // 3)
    strip = Image.new("RGB", (width, height), STRIP_RGB)
    if x0 > pad:
        draw, font = ImageDraw.Draw(strip), load_font(size)
        draw.text((pad, height // 2), LOW, font=font, fill=TEXT_RGB, anchor="lm")
        draw.text((width - pad, height // 2), HIGH, font=font, fill=TEXT_RGB, anchor="rm")
    table = colormap if isinstance(colormap, np.ndarray) else colormap_table(int(colormap))
    levels = np.rint(np.linspace(0.0, 255.0, x1 - x0)).astype(np.uint8)
    band = np.array(strip)
    band[y0:y1, x0:x1] = table[levels, 0, ::-1][None]
    return band


def decorated(overlay_bgr: np.ndarray, caption: str | None = None, colormap=None) -> np.ndarray:
    """``overlay_bgr`` (BGR uint8) with, under it, a :func:`colorbar_strip` of ``colormap`` (None:
    none) and then a caption strip of ``caption`` (None: none); BGR uint8, as wide as the overlay."""
    width = overlay_bgr.shape[1]
    parts = [overlay_bgr]
    if colormap is not None:
        parts.append(colorbar_strip(width, colormap)[..., ::-1])
    if caption is not None:
        parts.append(text_strip(caption, width)[..., ::-1])
    return np.ascontiguousarray(np.concatenate(parts, axis=0)) if len(parts) > 1 else overlay_bgr
