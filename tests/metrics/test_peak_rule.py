"""The localisation tests' own rule (:func:`builders.peak_on`): the map's peak, after the bilinear
upsampling the overlays use, must lie on the object. cv2 clamps at the border, so a peak cell on
the map's edge is a flat top of s/2 x s pixels; the peak is its middle, not its first pixel in
row-major order (the image's edge), and a map with no positive value, or a constant one, points nowhere."""

from __future__ import annotations

import numpy as np
from builders import OBJ, SIZE, peak_on, peak_pixel


def one_hot(cell: tuple[int, int], grid: int = 6) -> np.ndarray:
    cam = np.zeros((grid, grid), np.float32)
    cam[cell] = 1.0
    return cam


def test_an_edge_cell_peaks_in_the_middle_of_its_flat_top():
    scale = SIZE // 6  # 8 pixels a cell
    y, x = peak_pixel(one_hot((0, 2)))
    assert 1 <= y <= scale // 2 - 2, y  # rows 0-3 are flat (clamped); their middle, not row 0
    assert 2 * scale <= x < 3 * scale, x  # inside the cell's columns
    # a square whose rows 1-12 cover most of that cell: on it (a plain argmax said row 0: off it)
    assert peak_on(one_hot((0, 2)), (1, 2 * scale - 2))
    y, x = peak_pixel(one_hot((5, 5)))  # the far corner: rows and columns 44-47 flat
    assert 44 < y < 47 and 44 < x < 47, (y, x)


def test_an_inner_cell_peaks_at_its_centre():
    y, x = peak_pixel(one_hot((3, 2)))
    assert y in (27, 28) and x in (19, 20), (y, x)  # the cell's centre, 3.5 pixels into the cell
    assert peak_on(one_hot((3, 2)), (20, 12)) and not peak_on(one_hot((3, 2)), (20 + OBJ - 3, 12))


def test_a_map_without_a_positive_value_points_nowhere():
    blank = np.zeros((6, 6), np.float32)
    assert peak_pixel(blank) is None
    assert not peak_on(blank, (0, 0))  # a plain argmax said (0, 0): on a square in the corner
    flat = np.full((6, 6), 0.5, np.float32)  # a constant map: no place singled out, not its middle
    assert peak_pixel(flat) is None and not peak_on(flat, (18, 18)) and not peak_on(flat, (0, 0))
