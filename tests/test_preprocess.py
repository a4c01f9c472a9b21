"""Preprocessing matches Keras' preprocess_input; resizing averages like INTER_AREA."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from keras.applications import imagenet_utils

from gradcam_cli.preprocess import normalise, resize
from gradcam_cli.profiles import Profile


def profile(mode, mean=None, std=None):
    return Profile(name="p", builder="x.y", input_size=(8, 8), target_layer="t", preprocessing=mode, mean=mean, std=std)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_matches_keras_preprocess_input(mode):
    batch = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    expected = imagenet_utils.preprocess_input(batch.astype(np.float32), mode=mode)
    np.testing.assert_allclose(normalise(batch, profile(mode)), expected, rtol=1e-6, atol=1e-5)


def test_other_modes():
    batch = np.full((1, 2, 2, 3), 255, np.uint8)
    assert (normalise(batch, profile("scale")) == 1.0).all()
    assert (normalise(batch, profile("none")) == 255.0).all()
    out = normalise(batch, profile("mean_std", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)))
    np.testing.assert_allclose(out, 1.0)


def test_resize_halving_matches_one_area_resize():
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8), (0, 0), 3)
    ours = resize(image, (224, 224)).astype(np.int16)
    direct = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert ours.shape == (224, 224, 3)
    assert np.abs(ours - direct).mean() < 1.0 and np.abs(ours - direct).max() <= 12
    assert resize(image[:100, :50], (224, 224)).shape == (224, 224, 3)  # enlarging
    assert resize(image[:224, :224], (224, 224)) is not None
