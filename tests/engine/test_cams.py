"""Grad-CAM engine: equality with the per-image, per-class tape; batching properties; fallback."""

from __future__ import annotations

import keras
import tensorflow as tf
import numpy as np
import pytest

from helpers import random_images
from reference import gradcam_reference

from gradcam_cli.models.split import split_model
from gradcam_cli.engine.explainer import Explainer, normalise_maps


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
    full = Explainer(split, top=3, whole_model=True)(x)
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
    # XLA sums the 8192-wide matmul of the tiled head in another order: ~3e-6 apart
    np.testing.assert_allclose(tiled.maps, result.maps, atol=1e-5)


def vgg_like(between=None, pool: bool = True, twice: bool = False, shared: bool = False,
             dtype: str | None = None) -> keras.Model:
    """target (16x16x32) -> [MaxPool] -> Flatten -> Dense(>= 2^20 weights) -> Dense softmax, like VGG's head."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c1", dtype=dtype)(inp)
    t = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="target", dtype=dtype)(x)
    x = keras.layers.MaxPooling2D(name="pool", dtype=dtype)(t) if pool else t
    if between is not None:
        x = between(x)
    x = keras.layers.Flatten(name="flatten", dtype=dtype)(x)
    units = int(x.shape[-1]) if shared else (1 << 20) // int(x.shape[-1]) + 1
    fc1 = keras.layers.Dense(units, activation="relu", name="fc1", dtype=dtype)
    x = fc1(x)
    if shared:  # fc1 called a second time: that call needs the exact gradient
        x = fc1(keras.layers.Dense(units, activation="relu", name="fc2", dtype=dtype)(x))
    if twice:  # the target also feeds another branch: the shortcut must not be taken
        x = keras.layers.Concatenate()([x, keras.layers.GlobalAveragePooling2D()(t)])
    out = keras.layers.Dense(6, activation="softmax", name="predictions", dtype=dtype)(x)
    return keras.Model(inp, out)


def channel_sums(split, x, heads):
    import tensorflow as tf

    acts = split.trunk(x)
    out = []
    for head in heads:
        with tf.GradientTape() as tape:
            tape.watch(acts)
            score = tf.reduce_sum(tf.cast(head(acts)[:, 2], tf.float32))
        out.append(tf.cast(tape.gradient(score, acts), tf.float32).numpy())
    return out


@pytest.mark.parametrize("pool", [True, False])
def test_channel_head_sums_are_exact_and_maps_match_reference(pool):
    model = vgg_like(pool=pool)
    split = split_model(model, "target")
    assert split.channel_head is not None
    x = random_images(3, 32, seed=5)
    exact, cheap = channel_sums(split, x, (split.head, split.channel_head))
    # per-channel sums over positions are the exact gradient's; single positions are not
    np.testing.assert_allclose(cheap.sum(axis=(1, 2)), exact.sum(axis=(1, 2)), rtol=1e-4, atol=1e-6)
    assert np.abs(cheap - exact).max() > 10 * np.abs(exact).max() * 1e-4
    for strategy in ("jacobian", "tile"):
        result = Explainer(split, top=3, strategy=strategy)(x)
        assert_matches_reference(model, "target", x, result)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_channel_head_on_a_half_precision_model(dtype):
    split = split_model(vgg_like(dtype=dtype), "target")
    assert split.channel_head is not None
    exact, cheap = channel_sums(split, random_images(2, 32, seed=7), (split.head, split.channel_head))
    scale = np.abs(exact.sum(axis=(1, 2))).max()
    assert np.abs(cheap.sum(axis=(1, 2)) - exact.sum(axis=(1, 2))).max() < 0.02 * scale


@pytest.mark.parametrize("case", ["relu between", "average pool", "target used twice", "dense called twice"])
def test_channel_head_only_where_sums_survive(case):
    between = {"relu between": keras.layers.ReLU(), "average pool": keras.layers.AveragePooling2D(3, 1)}.get(case)
    model = vgg_like(between=between, twice=case == "target used twice", shared=case == "dense called twice")
    split = split_model(model, "target")
    assert split.channel_head is None
    x = random_images(2, 32, seed=6)
    assert_matches_reference(model, "target", x, Explainer(split, top=2)(x))


class HistogramScale(keras.layers.Layer):
    """x times the number of its elements, counted by ``histogram_fixed_width``: an op XLA cannot
    compile, in the head."""

    def call(self, x):
        count = tf.reduce_sum(tf.histogram_fixed_width(x, [0.0, 1.0], 4))
        return x * tf.cast(count, x.dtype) / tf.cast(tf.size(x), x.dtype)


def test_a_head_xla_cannot_compile_runs_in_the_plain_graph():
    """The part after the trunk runs as one XLA cluster; a head with an op XLA lacks falls back
    to the plain graph at the first call, with the same maps as the reference tape."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="target")(inp)
    x = HistogramScale()(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x))
    explainer = Explainer(split_model(model, "target"), top=2, method=("gradcam", "layercam"))
    assert explainer.xla
    x = random_images(3, 16, seed=5)
    result = explainer(x)
    assert not explainer.xla and explainer.trace_count() == 1
    assert_matches_reference(model, "target", x, result)
    np.testing.assert_allclose(result.probs, model.predict(x, verbose=0), atol=1e-6)
