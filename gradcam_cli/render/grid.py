"""One picture per image: the original alone in the first row, then one row per method.

Each method's maps (``groups``: how many pictures each method has, in order) start a new row and
wrap after ``columns`` tiles, so a row never mixes methods. Every tile is fitted to ``tile`` px on
its long side (aspect kept), letterboxed on a neutral grey in a cell ``tile`` px wide, under a
title strip. :func:`grid_layout` gives the rectangles, so a caller (or a test) can cut any tile
back out of the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from gradcam_cli.render.text import font_size_for, strip_height, text_strip

#: the canvas and letterbox colour, RGB
BACKGROUND_RGB = (224, 224, 224)
#: px between tiles and around the grid
GAP = 8

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1: inclusive-exclusive pixels


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes in a grid. ``pictures[0]`` is the original's fitted rectangle."""

    height: int
    width: int
    columns: int
    tile: int
    titles: list[Rect]  # the title strip of each tile
    pictures: list[Rect]  # the fitted picture of each tile (letterbox excluded)
    cells: list[tuple[int, int]]  # the (row, column) of each tile


def tile_title(prediction: dict, method: str | None = None) -> str:
    """``"1. Egyptian_cat (285) 0.810"``, and ``" · gradcam"`` when a method is named.

    ``prediction`` is a record of ``predictions.json`` (rank, label, class_index, probability; a
    regression output's has a ``value`` instead: ``"1. age (0) value 31.2"``).
    """
    score = (f"{prediction['probability']:.3f}" if "probability" in prediction
             else f"value {prediction.get('value', 0):.3g}")
    title = f"{prediction['rank']}. {prediction['label']} ({prediction['class_index']}) {score}"
    return f"{title} · {method}" if method else title


def fit_size(height: int, width: int, tile: int) -> tuple[int, int]:
    """(height, width) scaled so the long side is ``tile`` px, aspect kept, each side >= 1."""
    scale = tile / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def fit_image(image: np.ndarray, tile: int) -> np.ndarray:
    """``image`` resized so its long side is ``tile`` px (area averaging when shrinking)."""
    height, width = fit_size(image.shape[0], image.shape[1], tile)
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def grid_cells(groups: list[int], columns: int) -> list[tuple[int, int]]:
    """The (row, column) of the original, then of each group's pictures: the original alone in
    row 0; each group (a method's maps) starts a new row and wraps after ``columns``."""
    cells, row = [(0, 0)], 1
    for count in groups:
        cells += [(row + k // columns, k % columns) for k in range(count)]
        row += math.ceil(count / columns)
    return cells


def grid_layout(sizes: list[tuple[int, int]], *, columns: int = 3, tile: int = 384,
                groups: list[int] | None = None) -> GridLayout:
    """The layout of a grid of pictures of ``sizes`` [(height, width), ...]: ``sizes[0]`` the
    original, then the maps, ``groups`` (default: one group of them all) at a time (:func:`grid_cells`).

    Every cell is ``tile`` px wide (room for its title) and as tall as the tallest
    fitted picture, so a grid of landscape pictures wastes no rows of background.
    """
    if not sizes:
        raise ValueError("a grid needs at least one picture; got none")
    if columns < 1 or tile < 16:
        raise ValueError(f"expected columns >= 1 and tile >= 16 px; got columns={columns}, tile={tile}")
    groups = [len(sizes) - 1] if groups is None else [int(g) for g in groups]
    if any(g < 0 for g in groups) or sum(groups) != len(sizes) - 1:
        raise ValueError(f"expected groups that count the {len(sizes) - 1} pictures after the original; got {groups}")
    columns = max(1, min(columns, max(groups, default=0)))
    cells = grid_cells(groups, columns)
    fitted = [fit_size(height, width, tile) for height, width in sizes]
    title_h = strip_height(font_size_for(tile))
    picture_h = max(fh for fh, _ in fitted)
    cell_h = title_h + picture_h
    titles, pictures = [], []
    for (row, column), (fh, fw) in zip(cells, fitted):
        x = GAP + column * (tile + GAP)
        y = GAP + row * (cell_h + GAP)
        titles.append((x, y, x + tile, y + title_h))
        px, py = x + (tile - fw) // 2, y + title_h + (picture_h - fh) // 2
        pictures.append((px, py, px + fw, py + fh))
    return GridLayout(
        height=GAP + (cells[-1][0] + 1) * (cell_h + GAP),
        width=GAP + columns * (tile + GAP),
        columns=columns,
        tile=tile,
        titles=titles,
        pictures=pictures,
        cells=cells,
    )


def grid_image(
    original_rgb: np.ndarray,
    overlays: list[np.ndarray],
    titles: list[str],
    *,
    columns: int = 3,
    tile: int = 384,
    channels: str = "bgr",
    original_title: str = "original",
    groups: list[int] | None = None,
) -> np.ndarray:
    """The grid of one image, RGB uint8: ``original_rgb`` alone in the first row, then ``overlays``
    titled ``titles``, a new row for each group (``groups``: the number of overlays of each method,
    in order; default one group).

    ``overlays`` are uint8 HWC pictures in ``channels`` order ("bgr", as
    ``render.overlays`` returns them, or "rgb"); one title per overlay (see
    :func:`tile_title`). The layout is ``grid_layout`` of the pictures' sizes.
    """
    if channels not in ("bgr", "rgb"):
        raise ValueError(f"channels must be 'bgr' or 'rgb'; got {channels!r}")
    if len(titles) != len(overlays):
        raise ValueError(f"expected one title per overlay; got {len(titles)} titles for {len(overlays)} overlays")
    pictures = [_rgb(original_rgb, "original_rgb")]
    pictures += [_rgb(o if channels == "rgb" else o[..., ::-1], f"overlays[{i}]") for i, o in enumerate(overlays)]
    layout = grid_layout([p.shape[:2] for p in pictures], columns=columns, tile=tile, groups=groups)
    canvas = np.empty((layout.height, layout.width, 3), np.uint8)
    canvas[:] = BACKGROUND_RGB
    size = font_size_for(tile)
    for picture, title, (tx0, ty0, tx1, ty1), (px0, py0, px1, py1) in zip(
        pictures, [original_title, *titles], layout.titles, layout.pictures
    ):
        canvas[ty0:ty1, tx0:tx1] = text_strip(title, tx1 - tx0, size)
        canvas[py0:py1, px0:px1] = fit_image(picture, tile)
    return canvas


def _rgb(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected a uint8 HWC picture with 3 channels; got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)
