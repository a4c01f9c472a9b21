"""Grad-CAM engine: equality with the per-image, per-class tape; batching properties; fallback."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import random_images
from reference import gradcam_reference

from gradcam_cli.backbones import split_model
from gradcam_cli.cams import Explainer, normalise_maps


def small_cnn(skip_across_target: bool = False, separate_softmax: bool = False, classes: int = 5) -> keras.Model:
    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    b = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="target")(a)
    x = keras.layers.Add(name="skip")([a, b]) if skip_across_target else b
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if separate_softmax:
        x = keras.layers.Dense(classes, name="logits")(x)
        out = keras.layers.Activation("softmax", name="probs")(x)
    else:
        out = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out)


def assert_matches_reference(model, layer, x, result, atol=1e-5):
    for b in range(x.shape[0]):
        for j, c in enumerate(result.classes[b]):
            ref = gradcam_reference(model, layer, x[b], int(c))
            np.testing.assert_allclose(result.maps[b, j], ref, atol=atol)


@pytest.mark.parametrize("skip,separate", [(False, False), (True, False), (False, True)])
def test_small_models_match_reference(skip, separate):
    model = small_cnn(skip_across_target=skip, separate_softmax=separate)
    split = split_model(model, "target")
    assert split.cut is (not skip)  # a skip connection across the target layer forces the full path
    assert split.activation == "softmax"
    explainer = Explainer(split, top=3)
    assert explainer.path == ("full" if skip else "cut")
    x = random_images(4, 32)
    result = explainer(x)
    assert result.maps.shape == (4, 3, 32, 32)
    assert (result.maps.max(axis=(2, 3)) == 1.0).all()  # non-trivial maps, each normalised
    np.testing.assert_allclose(result.probs, model.predict(x, verbose=0), atol=1e-6)
    assert_matches_reference(model, "target", x, result)


def test_top_classes_are_the_highest_scores():
    model = small_cnn()
    x = random_images(6, 32, seed=3)
    result = Explainer(split_model(model, "target"), top=4)(x)
    expected = np.argsort(-model.predict(x, verbose=0), axis=1)[:, :4]
    np.testing.assert_array_equal(result.classes, expected)


def test_map_is_independent_of_batch_neighbours_and_batch_size():
    model = small_cnn()
    explainer = Explainer(split_model(model, "target"), top=2)
    x = random_images(7, 32, seed=5)
    whole = explainer(x)
    for b in range(7):
        alone = explainer(x[b : b + 1])
        np.testing.assert_allclose(alone.maps[0], whole.maps[b], atol=1e-6)
    shuffled = explainer(x[::-1])
    np.testing.assert_allclose(shuffled.maps[::-1], whole.maps, atol=1e-6)
    assert explainer.trace_count() == 1  # batch axis is None: no retrace for other batch sizes


def test_fixed_classes_for_every_image():
    model = small_cnn()
    explainer = Explainer(split_model(model, "target"), classes=[4, 0])
    x = random_images(3, 32, seed=7)
    result = explainer(x)
    np.testing.assert_array_equal(result.classes, [[4, 0]] * 3)
    assert_matches_reference(model, "target", x, result)


def test_forced_full_path_equals_cut_path():
    model = small_cnn()
    split = split_model(model, "target")
    x = random_images(3, 32, seed=11)
    cut = Explainer(split, top=3)(x)
    full = Explainer(split, top=3, force_full=True)(x)
    np.testing.assert_array_equal(cut.classes, full.classes)
    np.testing.assert_allclose(cut.maps, full.maps, atol=1e-5)


def test_all_zero_map_stays_zero_without_nan():
    import tensorflow as tf

    zeros = normalise_maps(tf.zeros((2, 3, 5, 5)))
    assert not np.isnan(zeros.numpy()).any() and (zeros.numpy() == 0).all()
    negative = normalise_maps(-tf.ones((1, 4, 4)))  # ReLU removes everything
    assert (negative.numpy() == 0).all()
    # a model whose class scores do not depend on the image: zero gradients, zero maps
    model = small_cnn()
    model.get_layer("predictions").kernel.assign(np.zeros((8, 5), np.float32))
    result = Explainer(split_model(model, "target"), top=2)(random_images(2, 32))
    assert not np.isnan(result.maps).any() and (result.maps == 0).all()


def test_model_is_not_mutated():
    model = small_cnn()
    before = [w.copy() for w in model.get_weights()]
    layer_count = len(model.layers)
    Explainer(split_model(model, "target"), top=2)(random_images(2, 32))
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    assert len(model.layers) == layer_count
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_big_dense_head_uses_the_jacobian_with_a_transposed_kernel():
    """A head with a Dense kernel over 2**23 weights: batch Jacobian + pre-transposed kernel."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="target")(inp)
    x = keras.layers.Flatten()(x)  # 8192 features
    x = keras.layers.Dense(1100, activation="relu", name="fc")(x)  # 9M weights: "heavy"
    out = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, out)
    split = split_model(model, "target")
    assert split.heavy_head
    explainer = Explainer(split, top=3)
    assert explainer.strategy == "jacobian"
    x = random_images(3, 32, seed=4)
    result = explainer(x)
    np.testing.assert_allclose(result.probs, model.predict(x, verbose=0), atol=1e-6)
    assert_matches_reference(model, "target", x, result)
    tiled = Explainer(split, top=3, strategy="tile")(x)
    np.testing.assert_allclose(tiled.maps, result.maps, atol=1e-6)
