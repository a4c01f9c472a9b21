"""Overlays equal the blend formula: (1 - alpha) * image + alpha * colormap(upsampled map); PNGs take RGB;
deprocessing and the pattern grid (render.channels) are their formulas."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gradcam_cli.render import overlay as render
from gradcam_cli.render.channels import deprocess, label_size, pattern_grid, tile_label
from gradcam_cli.render.text import font_size_for, strip_height


def reference(image_rgb, cam, alpha, colormap):
    """The formula in floats: bilinear upsampling, 0..255 levels, OpenCV's colormap, the blend; BGR."""
    height, width = image_rgb.shape[:2]
    up = cv2.resize(cam.astype(np.float64), (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.clip(np.rint(up * 255.0), 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap(levels, colormap).astype(np.float64)
    return (1.0 - alpha) * image_rgb[..., ::-1].astype(np.float64) + alpha * heat


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("colormap", ["jet", "turbo", "viridis"])
def test_overlay_equals_the_blend_formula(alpha, colormap):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (96, 130, 3), dtype=np.uint8)
    cams = rng.random((2, 7, 7)).astype(np.float32)
    cams[1] = 0.0
    cams[1, 3, 3] = 1.0
    code = render.colormap_id(colormap)
    out = render.overlays(image, cams, alpha=alpha, colormap=code)
    assert len(out) == 2
    for got, cam in zip(out, cams):
        assert got.dtype == np.uint8 and got.shape == image.shape
        want = reference(image, cam, alpha, code)
        # bilinear on uint8 levels vs on floats: within a level or two of the map, times the
        # colormap's slope (jet: up to 4 colour levels per map level) times alpha, plus rounding
        assert np.abs(got - want).max() <= 8 * alpha + 1.0
        assert np.abs(got - want).mean() < 0.5


def test_overlay_channel_order_and_extremes():
    image = np.zeros((20, 20, 3), np.uint8)
    image[..., 0] = 200  # pure red, RGB
    cam = np.ones((4, 4), np.float32)
    (bgr,) = render.overlays(image, cam[None], alpha=0.0)
    assert (bgr[..., 2] == 200).all() and (bgr[..., :2] == 0).all()  # still red, now in BGR order
    (hot,) = render.overlays(image, cam[None], alpha=1.0, colormap=render.colormap_id("jet"))
    np.testing.assert_array_equal(hot[0, 0], cv2.applyColorMap(np.full((1, 1), 255, np.uint8), cv2.COLORMAP_JET)[0, 0])


def test_unknown_colormap_names_close_matches():
    with pytest.raises(ValueError, match="did you mean jet"):
        render.colormap_id("jett")


def test_colormap_table_gives_the_builtin_colours_for_every_colormap_and_level():
    """The cached user table is the built-in colormap byte for byte (the overlays' faster path)."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for name, code in render.colormaps().items():
        table = render.colormap_table(code)
        assert table.shape == (256, 1, 3) and not table.flags.writeable, name
        np.testing.assert_array_equal(cv2.applyColorMap(levels, table), cv2.applyColorMap(levels, code), err_msg=name)


def test_overlay_takes_a_colour_table_of_ones_own():
    """An OpenCV user table (256, 1, 3) BGR instead of a colormap id: each level gets its row."""
    table = np.zeros((256, 1, 3), np.uint8)
    table[:, 0, 1] = np.arange(256)  # green = level
    (hot,) = render.overlays(np.zeros((8, 8, 3), np.uint8), np.ones((1, 2, 2), np.float32), alpha=1.0, colormap=table)
    assert (hot[..., 1] == 255).all() and (hot[..., [0, 2]] == 0).all()


def test_png_takes_rgb_and_decodes_to_the_same_pixels():
    rgb = np.random.default_rng(5).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    decoded = cv2.imdecode(np.frombuffer(render.encode_png(rgb), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded[..., ::-1], rgb)  # OpenCV decodes BGR


def test_deprocess_is_the_display_formula_per_image():
    rng = np.random.default_rng(6)
    images = rng.normal(size=(3, 5, 4, 3)) * np.array([1.0, 1e3, 1e-3])[:, None, None, None] + 7.0
    out = deprocess(images)
    assert out.dtype == np.uint8 and out.shape == images.shape
    for image, got in zip(images, out):
        scaled = np.clip((image - image.mean()) / (image.std() + 1e-5) * 0.1 + 0.5, 0.0, 1.0) * 255.0
        np.testing.assert_array_equal(got, scaled.astype(np.uint8))  # each image on its own; levels rounded down
        np.testing.assert_array_equal(deprocess(image, nearest=True), np.rint(scaled).astype(np.uint8))
    assert np.all(deprocess(np.full((4, 4, 3), 2.5)) == 127)  # no spread: mid-grey, no NaN


def test_pattern_grid_layout_and_margins():
    patterns = np.stack([np.full((4, 6, 3), 10 + i, np.uint8) for i in range(10)])
    grid = pattern_grid(patterns, per_row=8, margin=5)
    assert grid.shape == (2 * 4 + 5, 8 * 6 + 7 * 5, 3)
    for i in range(10):
        row, col = divmod(i, 8)
        y, x = row * 9, col * 11
        assert np.all(grid[y : y + 4, x : x + 6] == 10 + i)
    assert np.all(grid[4:9] == 0) and np.all(grid[:, 6:11] == 0)
    assert np.all(grid[9:, 2 * 11 :] == 0)  # the empty cells of the last row


def test_pattern_grid_labels_each_pattern_in_a_strip_above_it():
    patterns = np.stack([np.full((40, 40, 3), 10 + i, np.uint8) for i in range(5)])
    labels = ["0", "17", "Egyptian_cat", "tabby", "3"]
    grid = pattern_grid(patterns, per_row=3, margin=5, labels=labels)
    size = label_size(labels, 40)
    top = strip_height(size)
    assert grid.shape == (2 * (top + 40) + 5, 3 * 40 + 2 * 5, 3)
    for i, label in enumerate(labels):
        row, col = divmod(i, 3)
        y, x = row * (top + 40 + 5), col * 45
        np.testing.assert_array_equal(grid[y + top : y + top + 40, x : x + 40], patterns[i])  # untouched
        np.testing.assert_array_equal(grid[y : y + top, x : x + 40], tile_label(label, 40, size))
    assert np.all(grid[:, 40:45] == 0) and np.all(grid[top + 40 : top + 45] == 0)  # black margins
    np.testing.assert_array_equal(pattern_grid(patterns, per_row=3, margin=5)[:40, :40], patterns[0])  # no labels


def test_tile_labels_keep_four_digit_numbers_whole():
    """The font shrinks (down to 10 px) until the longest number fits: Lite0's last layer, 1280
    channels of 7 x 7 upscaled to 35 px tiles, shows "1279" whole, not cut to "12…"."""
    from gradcam_cli.render.text import fit_text, load_font

    size = label_size(["1279"], 35)
    assert 10 <= size < font_size_for(35)
    assert fit_text("1279", load_font(size), 35 - 2 * max(2, size // 3)) == "1279"
    assert label_size(["7"], 35) == font_size_for(35)  # a short label keeps the strip's usual size
    with pytest.raises(ValueError, match="one label per pattern"):
        pattern_grid(np.zeros((2, 4, 4, 3), np.uint8), labels=["0"])
