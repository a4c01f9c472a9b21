"""The strips under an overlay JPEG (``explain --caption --colorbar``): the colour bar's colours,
its labels, the caption's text, and the overlay above them untouched."""

from __future__ import annotations

import numpy as np
import pytest

from gradcam_cli.render.legend import colorbar_rect, colorbar_strip, decorated, overlay_caption
from gradcam_cli.render.overlay import colormap_id, colormap_table
from gradcam_cli.render.text import STRIP_RGB, TEXT_RGB, font_size_for, strip_height, text_strip


def rgb(colormap: str, level: int) -> np.ndarray:
    """OpenCV's colour of ``level`` in ``colormap``, RGB (an independent lookup: applyColorMap on one pixel)."""
    import cv2

    return cv2.applyColorMap(np.array([[level]], np.uint8), colormap_id(colormap))[0, 0, ::-1]


@pytest.mark.parametrize("colormap, width", [("jet", 451), ("turbo", 120), ("viridis", 1024), ("jet", 20)])
def test_colorbar_ends_are_the_colormaps_0_and_1_and_carry_their_labels(colormap, width):
    strip = colorbar_strip(width, colormap_id(colormap))
    size = font_size_for(width)
    assert strip.shape == (strip_height(size), width, 3) and strip.dtype == np.uint8
    x0, y0, x1, y1 = colorbar_rect(width)
    assert 0 < x0 < x1 <= width and 0 < y0 < y1 < strip.shape[0]
    assert np.all(strip[y0:y1, x0] == rgb(colormap, 0)) and np.all(strip[y0:y1, x1 - 1] == rgb(colormap, 255))
    for k in (1, (x1 - x0) // 3, (x1 - x0) // 2):  # evenly spread: column k is level 255 k / (columns - 1)
        assert np.all(strip[y0:y1, x0 + k] == rgb(colormap, round(255 * k / (x1 - x0 - 1)))), k
    ramp = strip[y0, x0:x1].astype(int)
    table = colormap_table(colormap_id(colormap))[:, 0, ::-1].astype(int)
    levels = [int(np.argmin(np.abs(table - colour).sum(axis=1))) for colour in ramp]
    assert levels == sorted(levels)  # left to right, 0 to 1
    assert np.all(strip[:y0] == STRIP_RGB) and np.all(strip[y1:] == STRIP_RGB)  # the band above and below
    if width >= 100:  # room for the labels: light text (anti-aliased: lighter than the band) beside the ramp
        assert (strip[:, :x0] > 150).all(axis=2).any() and (strip[:, x1:] > 150).all(axis=2).any()
        assert TEXT_RGB[0] > 150 > STRIP_RGB[0]


def test_decorated_keeps_the_overlay_and_adds_the_strips_under_it():
    overlay = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    entry = {"rank": 1, "label": "tabby", "class_index": 281, "probability": 0.6234}
    caption = overlay_caption(entry, "gradcam")
    assert caption == "tabby 0.62 · gradcam · top-1"
    assert overlay_caption({"rank": 2, "label": "age", "class_index": 0, "value": 31.25}, "layercam") == \
        "age 31.2 · layercam · top-2"
    h = strip_height(font_size_for(451))
    both = decorated(overlay, caption, colormap_id("jet"))
    assert both.shape == (300 + 2 * h, 451, 3)
    np.testing.assert_array_equal(both[:300], overlay)
    np.testing.assert_array_equal(both[300:300 + h], colorbar_strip(451, colormap_id("jet"))[..., ::-1])  # BGR
    np.testing.assert_array_equal(both[300 + h:], text_strip(caption, 451)[..., ::-1])
    assert decorated(overlay, caption).shape == (300 + h, 451, 3)
    assert decorated(overlay, None, colormap_id("jet")).shape == (300 + h, 451, 3)
    assert decorated(overlay) is overlay
