"""Preprocessing matches Keras' preprocess_input; resizing averages like INTER_AREA."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from keras.applications import imagenet_utils

from gradcam_cli.io.preprocess import normalise, preprocess_tensor, resize
from gradcam_cli.config.profiles import Profile


def profile(mode, mean=None, std=None):
    return Profile(name="p", builder="x.y", input_size=(8, 8), target_layer="t", preprocessing=mode, mean=mean, std=std)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_matches_keras_preprocess_input(mode):
    batch = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    expected = imagenet_utils.preprocess_input(batch.astype(np.float32), mode=mode)
    np.testing.assert_allclose(normalise(batch, profile(mode)), expected, rtol=1e-6, atol=1e-5)


MODES = [("caffe", None, None), ("tf", None, None), ("torch", None, None), ("scale", None, None),
         ("none", None, None), ("mean_std", (127.0, 110.5, 90.0), (128.0, 64.0, 57.3))]


@pytest.mark.parametrize("mode, mean, std", MODES)
def test_uint8_table_path_equals_the_formula_exactly(mode, mean, std):
    from gradcam_cli.io.preprocess import _affine

    p = profile(mode, mean, std)
    batch = np.random.default_rng(2).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    batch[0, 0, :3] = [[0, 0, 0], [255, 255, 255], [1, 128, 254]]
    expected = _affine(batch.astype(np.float32), mode, mean, std)
    for given, want in ((batch, expected), (batch[1], expected[1]), (batch[:, ::2], expected[:, ::2])):
        got = normalise(given, p)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    # float input takes the formula itself
    np.testing.assert_array_equal(normalise(batch.astype(np.float32), p), expected)


@pytest.mark.parametrize("mode, mean, std", MODES)
def test_the_tensor_path_is_the_numpy_formula(mode, mean, std):
    """``preprocess_tensor`` (inside ``gradcam filters``' graph) gives ``normalise``'s values."""
    import tensorflow as tf

    p = profile(mode, mean, std)
    x = np.random.default_rng(2).uniform(0, 255, (2, 5, 4, 3)).astype(np.float32)
    got = preprocess_tensor(tf.constant(x), p)
    assert isinstance(got, tf.Tensor) and got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), normalise(x, p), rtol=1e-6, atol=1e-5)


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown preprocessing 'cafe'; expected caffe, tf, torch"):
        normalise(np.zeros((1, 2, 2, 3), np.float32), profile("cafe"))


def test_other_modes():
    batch = np.full((1, 2, 2, 3), 255, np.uint8)
    assert (normalise(batch, profile("scale")) == 1.0).all()
    assert (normalise(batch, profile("none")) == 255.0).all()
    out = normalise(batch, profile("mean_std", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)))
    np.testing.assert_allclose(out, 1.0)


@pytest.mark.parametrize("source, size", [((768, 1024), (224, 224)), ((768, 1024), (299, 299)),
                                          ((480, 640), (299, 299)), ((300, 400), (224, 224)), ((300, 400), (299, 299)),
                                          ((300, 4000), (224, 224)), ((4000, 300), (224, 224)),
                                          ((1000, 6000), (224, 224))])
def test_fast_resize_averages_like_one_area_resize(source, size):
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (*source, 3), dtype=np.uint8), (0, 0), 3)
    ours = resize(image, size).astype(np.int16)
    direct = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA).astype(np.int16)
    assert ours.shape == (*size, 3)
    assert np.abs(ours - direct).mean() < 1.0 and np.abs(ours - direct).max() <= 12


@pytest.mark.parametrize("source", [(4000, 300), (300, 4000), (1000, 6000), (6000, 1000)])
def test_resize_of_a_panorama_skips_no_lines(source):
    """One-pixel lines every 7 pixels across the long side, shrunk 4.5x to 27x along it: every
    output pixel averages several lines (a two-tap bilinear shrink would give 255s and 0s)."""
    image = np.zeros((*source, 3), np.uint8)
    if source[0] > source[1]:
        image[::7] = 255
    else:
        image[:, ::7] = 255
    small = resize(image, (224, 224)).astype(np.float64)
    level = image.mean()  # 255 / 7
    assert abs(small.mean() - level) < 2
    assert np.abs(small - level).max() < 0.5 * level


@pytest.mark.parametrize("source, size", [((3, 5000), (1, 1024)), ((5000, 3), (1024, 1))])
def test_resize_of_a_thin_strip_drops_no_row(source, size):
    """Only the last row (or column) of a thin strip is white: every output pixel still sees it, as
    one INTER_AREA does (halving the odd 3 would cut it off)."""
    image = np.zeros((*source, 3), np.uint8)
    if source[0] < source[1]:
        image[-1] = 255
    else:
        image[:, -1] = 255
    ours = resize(image, size).astype(np.int16)
    direct = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA).astype(np.int16)
    assert ours.shape == (*size, 3) and ours.min() > 0
    assert np.abs(ours - direct).max() <= 1


def test_resize_enlarges_and_keeps_the_target_size():
    image = np.random.default_rng(1).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    assert resize(image[:100, :50], (224, 224)).shape == (224, 224, 3)  # enlarging
    same = image[:224, :224]
    assert resize(same, (224, 224)) is same


def test_grey_is_bt601_luma_and_leaves_grey_unchanged():
    """Issue 22.2: grey(): OpenCV's RGB2GRAY (0.299 R + 0.587 G + 0.114 B, rounded) on three equal
    channels; a grey image is its own luma; Pillow's 'L' is the same luma to within one level."""
    from PIL import Image

    from gradcam_cli.io.preprocess import grey

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 40, 50, 3), np.uint8)
    out = grey(rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    exact = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out[..., 0] - exact).max() <= 0.51  # rounded, in 14-bit fixed point
    pillow = np.asarray(Image.fromarray(rgb[0]).convert("L")).astype(int)
    assert np.abs(out[0, ..., 0].astype(int) - pillow).max() <= 1
    levels = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    assert (grey(levels) == levels).all()
