"""A segmentation target's region outlined on its overlay (render/outline.py)."""

from __future__ import annotations

import numpy as np

from gradcam_cli.render.outline import OUTLINE_BGR, draw_outline


def test_the_outline_follows_the_region_stretched_onto_the_picture():
    picture = np.full((64, 96, 3), 40, np.uint8)
    region = np.zeros((16, 16), bool)
    region[4:12, 4:8] = True  # rows 16..48, columns 24..48 of the picture
    out = draw_outline(picture, region)
    white = np.all(out == OUTLINE_BGR, axis=-1)
    assert white[16, 30] and white[47, 30] and white[30, 24] and white[30, 47]  # its four sides
    assert not white[30, 36] and not white[5, 5] and not white[60, 90]  # not inside, not far outside
    assert np.array_equal(picture, np.full((64, 96, 3), 40, np.uint8))  # drawn on a copy
    assert draw_outline(picture, np.zeros((16, 16), bool)) is picture  # an empty region: nothing to draw
