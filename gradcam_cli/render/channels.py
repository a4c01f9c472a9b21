"""Pictures of what a model computes inside: channel grids, filter-pattern grids, deprocessing.

``channel_grid`` draws one layer's activation (h, w, C) as coloured tiles (Deep Learning
with Python, 5.4.1: each channel standardised, 16 per row) laid out as
:func:`channel_layout` says; ``pattern_grid`` puts filter patterns side by side. Each tile
can carry a label (its channel, filter or unit) in a strip above it (:func:`tile_label`: the
grid's and GIF's caption strip, :mod:`gradcam_cli.render.text`), so the tile is untouched;
``deprocess`` turns float images (filter patterns, Guided Grad-CAM) into displayable
uint8. Arrays in, RGB uint8 arrays out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from gradcam_cli.render.overlay import colormap_id
from gradcam_cli.render.text import size_to_fit, strip_height, text_strip

#: background of the channel grid (gaps and title band), RGB
BACKGROUND = (255, 255, 255)
TITLE_COLOUR = (0, 0, 0)
_TITLE_PAD = 3


def standardise(channel: np.ndarray) -> np.ndarray:
    """One channel (h, w) -> uint8 levels: ``(x - mean) / std * 64 + 128``, rounded, clipped to 0..255.

    A channel with no spread (std 0, or below float rounding of its mean) is flat 128:
    no NaN, no warning.
    """
    return _levels(np.asarray(channel)[..., None])[..., 0]


def _levels(activation: np.ndarray) -> np.ndarray:
    """(h, w, C) -> (h, w, C) uint8: :func:`standardise` per channel, vectorised."""
    x = np.asarray(activation, np.float64)
    mean = x.mean(axis=(0, 1))
    std = x.std(axis=(0, 1))
    dead = (x.max(axis=(0, 1)) == x.min(axis=(0, 1))) | (std <= 1e-9 * np.abs(mean))
    scale = np.where(dead, 0.0, 64.0 / np.where(dead, 1.0, std))
    levels = (x - mean) * scale + 128.0
    return np.clip(np.rint(levels), 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.load_default()


def _title_size(title: str) -> tuple[int, int]:
    """(width, height) of the title band for ``title`` ('' -> no band)."""
    if not title:
        return 0, 0
    left, top, right, bottom = _font().getbbox(title)
    height = _font().getbbox("Ag|")[3]
    return right + 2 * _TITLE_PAD, height + 2 * _TITLE_PAD


def label_size(labels: list[str], width: int) -> int:
    """The font size of the labels of tiles ``width`` px wide: the size at which the longest fits
    (no smaller than 10 px; a longer one is cut with an ellipsis)."""
    return size_to_fit(max(labels, key=len), width) if labels else 0


def tile_label(text: str, width: int, size: int) -> np.ndarray:
    """A tile's label strip, RGB uint8 (strip_height(size), width, 3): ``text`` light on dark."""
    return text_strip(text, width, size)


@dataclass(frozen=True)
class ChannelLayout:
    """Where :func:`channel_grid` puts things: channel ``i`` is at row ``i // cols``, column
    ``i % cols``; its label strip's top-left pixel is ``(title_height + row * (label_height + tile_h
    + gap), col * (tile_w + gap))`` and its tile's ``label_height`` px lower (:meth:`origin`)."""

    scale: int  # integer nearest-neighbour upscale factor of each tile
    tile_h: int
    tile_w: int
    rows: int
    cols: int
    gap: int
    title_height: int
    height: int
    width: int
    label_height: int = 0  # the strip above each tile (0: no labels)
    label_size: int = 0  # its font size

    def origin(self, i: int) -> tuple[int, int]:
        """The top-left pixel (y, x) of channel ``i``'s tile."""
        row, col = divmod(i, self.cols)
        return self.title_height + row * (self.label_height + self.tile_h + self.gap) + self.label_height, \
            col * (self.tile_w + self.gap)


def channel_layout(h: int, w: int, channels: int, *, per_row: int = 16, min_tile: int = 32, gap: int = 2,
                   title: str = "", labels: bool = True) -> ChannelLayout:
    """The layout of a grid of ``channels`` tiles of (h, w) each (see :class:`ChannelLayout`);
    ``labels``: a strip above each tile for its channel number."""
    if per_row < 1 or min_tile < 1 or gap < 0 or channels < 1 or h < 1 or w < 1:
        raise ValueError(
            f"grid needs per_row >= 1, min_tile >= 1, gap >= 0 and a non-empty (h, w, C) activation; got "
            f"per_row={per_row}, min_tile={min_tile}, gap={gap}, shape=({h}, {w}, {channels})"
        )
    scale = max(1, math.ceil(min_tile / min(h, w)))
    cols = min(per_row, channels)
    rows = math.ceil(channels / cols)
    tile_h, tile_w = h * scale, w * scale
    title_w, title_h = _title_size(title)
    size = label_size([str(channels - 1)], tile_w) if labels else 0
    label_h = strip_height(size) if labels else 0
    width = max(cols * tile_w + (cols - 1) * gap, title_w)
    height = title_h + rows * (label_h + tile_h) + (rows - 1) * gap
    return ChannelLayout(scale, tile_h, tile_w, rows, cols, gap, title_h, height, width, label_h, size)


def channel_grid(
    activation: np.ndarray,
    *,
    per_row: int = 16,
    min_tile: int = 32,
    gap: int = 2,
    colormap: str = "viridis",
    title: str | None = None,
    labels: bool = True,
) -> np.ndarray:
    """One layer's activation (h, w, C) -> RGB uint8 grid image, laid out as :func:`channel_layout` says.

    Each channel is :func:`standardise`-d, coloured with the OpenCV ``colormap``
    and upscaled by an integer factor (nearest neighbour) so that its shorter side
    is at least ``min_tile`` px. ``title`` (default ``"h x w x C"``) is drawn above
    with Pillow's default font; ``""`` draws none. Gaps and title band are white.
    ``labels``: each tile's channel number in a :func:`tile_label` strip above it.
    """
    activation = np.asarray(activation)
    if activation.ndim != 3:
        raise ValueError(f"activation must be (h, w, channels), got shape {activation.shape}")
    h, w, channels = activation.shape
    title = f"{h} x {w} x {channels}" if title is None else title
    layout = channel_layout(h, w, channels, per_row=per_row, min_tile=min_tile, gap=gap, title=title, labels=labels)
    levels = _levels(activation)  # (h, w, C)
    strip = levels.transpose(0, 2, 1).reshape(h, channels * w)  # channels side by side
    coloured = cv2.cvtColor(cv2.applyColorMap(strip, colormap_id(colormap)), cv2.COLOR_BGR2RGB)
    tiles = coloured.reshape(h, channels, w, 3).transpose(1, 0, 2, 3)  # (C, h, w, 3)
    if layout.scale > 1:
        tiles = tiles.repeat(layout.scale, axis=1).repeat(layout.scale, axis=2)
    canvas = np.empty((layout.height, layout.width, 3), np.uint8)
    canvas[:] = BACKGROUND
    for i in range(channels):
        y, x = layout.origin(i)
        canvas[y : y + layout.tile_h, x : x + layout.tile_w] = tiles[i]
        if labels:
            canvas[y - layout.label_height : y, x : x + layout.tile_w] = tile_label(str(i), layout.tile_w,
                                                                                    layout.label_size)
    if title:
        _draw_title(canvas, title)
    return canvas


def _draw_title(canvas: np.ndarray, title: str) -> None:
    from PIL import Image, ImageDraw

    image = Image.fromarray(canvas)
    ImageDraw.Draw(image).text((_TITLE_PAD, _TITLE_PAD), title, fill=TITLE_COLOUR, font=_font())
    canvas[:] = np.asarray(image)


def pattern_grid(patterns: np.ndarray, per_row: int = 8, margin: int = 5, labels: list[str] | None = None) -> np.ndarray:
    """Patterns (F, s, s, 3) uint8 -> one RGB uint8 grid, ``per_row`` across, black ``margin`` px between.

    ``labels`` (one per pattern: its filter number, or its unit's class name): each in a
    :func:`tile_label` strip of ``label_size(labels, w)`` right above its pattern, so pattern ``i``
    (row ``i // cols``, column ``i % cols``) starts at ``(row * (L + h + margin) + L, col * (w +
    margin))``, ``L`` the strip's height (0 without labels).
    """
    patterns = np.asarray(patterns)
    if patterns.ndim != 4 or len(patterns) == 0 or per_row < 1 or margin < 0:
        raise ValueError(f"pattern_grid needs (F, h, w, 3) patterns, per_row >= 1, margin >= 0; got {patterns.shape}")
    count, h, w, c = patterns.shape
    if labels is not None and len(labels) != count:
        raise ValueError(f"expected one label per pattern; got {len(labels)} labels for {count} patterns")
    size = label_size(list(labels), w) if labels else 0
    top = strip_height(size) if labels else 0
    cols = min(per_row, count)
    rows = -(-count // cols)
    grid = np.zeros((rows * (top + h) + (rows - 1) * margin, cols * w + (cols - 1) * margin, c), np.uint8)
    for i, pattern in enumerate(patterns):
        row, col = divmod(i, cols)
        y, x = row * (top + h + margin), col * (w + margin)
        grid[y + top : y + top + h, x : x + w] = pattern
        if labels:
            grid[y : y + top, x : x + w] = tile_label(labels[i], w, size)
    return grid


def deprocess(images: np.ndarray, *, nearest: bool = False) -> np.ndarray:
    """Float images (..., H, W, 3) -> uint8 for display, each image on its own: centred, 0.1 per
    standard deviation (+ 1e-5) around mid-grey 0.5, clipped to 0..1, times 255.

    The display of the book's filter patterns and of pytorch-grad-cam's Guided Grad-CAM.
    Levels are rounded down (the book's ``astype``), or to the ``nearest`` level
    (``gradcam explain --method guided`` writes its PNGs so).
    """
    x = np.asarray(images, np.float64)
    axes = (-3, -2, -1)
    x = x - x.mean(axis=axes, keepdims=True)
    x = x / (x.std(axis=axes, keepdims=True) + 1e-5) * 0.1 + 0.5
    x = np.clip(x, 0.0, 1.0) * 255.0
    return (np.rint(x) if nearest else x).astype(np.uint8)
