"""The CAM family: closed-form identities, an independent NumPy reference on shipped backbones,
tf-keras-vis where its definition is the same, and localisation on a CNN trained here."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from builders import peak_on, scenes, trained
from helpers import random_images

from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.methods import get_method
from gradcam_cli.models.split import split_model

GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")
ALL = (*GRADIENT_METHODS, "eigencam")


# ---------------------------------------------------------------------------
# the reference: plain NumPy (float64), one image and one class at a time


def normalised(raw: np.ndarray) -> np.ndarray:
    cam = np.maximum(raw, 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def reference_raw(name: str, a: np.ndarray, g: np.ndarray | None) -> np.ndarray:
    """One image's raw map (h, w) from its activations a (h, w, K) and gradients g (h, w, K)."""
    a = a.astype(np.float64)
    s = a.sum(axis=(0, 1))
    if name == "eigencam":
        flat = a.reshape(-1, a.shape[-1])
        centred = flat - flat.mean(axis=0)
        vt = np.linalg.svd(centred, full_matrices=False)[2]
        projection = centred @ vt[0]
        mean = flat.mean(axis=1)
        if projection @ (mean - mean.mean()) < 0:
            projection = -projection
        return projection.reshape(a.shape[:2])
    g = g.astype(np.float64)
    if name == "gradcam":
        weights = g.mean(axis=(0, 1))
    elif name == "gradcam++":
        alpha = np.where(g != 0, g**2 / (2 * g**2 + s * g**3 + 1e-6), 0.0)
        weights = (np.maximum(g, 0) * alpha).sum(axis=(0, 1))
    elif name == "xgradcam":
        weights = (g * a).sum(axis=(0, 1)) / (s + 1e-7)
    elif name == "layercam":
        return (np.maximum(g, 0) * a).sum(-1)
    elif name == "hirescam":
        return (g * a).sum(-1)
    else:
        raise ValueError(name)
    return (a * weights).sum(-1)


def tape_grads(model: keras.Model, layer: str, image: np.ndarray, classes) -> tuple[np.ndarray, list[np.ndarray]]:
    """Eager tape, one image: the target layer's activations and dy_c/dA for each class c, with
    y_c = final Dense input @ kernel + bias (the score before softmax)."""
    dense = model.layers[-1]
    sub = keras.Model(model.inputs[0], [model.get_layer(layer).output, dense.input])
    with tf.GradientTape(persistent=True) as tape:
        acts, features = sub(tf.constant(image[None]), training=False)
        logits = tf.matmul(features, dense.kernel) + dense.bias
        picked = [logits[0, int(c)] for c in classes]
    grads = [tape.gradient(y, acts)[0].numpy() for y in picked]
    return acts[0].numpy(), grads


def assert_engine_matches_reference(model, layer, x, out, methods, atol=1e-5):
    seen = {name: False for name in methods}
    for b in range(x.shape[0]):
        acts, grads = tape_grads(model, layer, x[b], out.classes[b])
        for j, g in enumerate(grads):
            for i, name in enumerate(methods):
                ref = normalised(reference_raw(name, acts, g))
                seen[name] |= bool(ref.max() > 0)
                np.testing.assert_allclose(out.method_maps[b, j, i], ref, atol=atol,
                                           err_msg=f"{name}, image {b}, class {out.classes[b, j]}")
    assert all(seen.values()), f"every reference map is empty for {[n for n, s in seen.items() if not s]}"


# ---------------------------------------------------------------------------
# closed forms on Conv -> ReLU -> GAP -> Dense


def gap_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="target")(inp)
    x = keras.layers.GlobalAveragePooling2D()(a)
    dense = keras.layers.Dense(4, activation="softmax", name="predictions")
    model = keras.Model(inp, dense(x))
    kernel = np.random.default_rng(seed).normal(0, 1, (6, 4)).astype(np.float32)
    kernel[:, 2] = np.abs(kernel[:, 2])  # class 2: every channel weighs positively
    kernel[3, 1] = 0.0  # class 1: one channel with a zero gradient everywhere
    dense.set_weights([kernel, np.array([0.3, -0.2, 0.1, 0.5], np.float32)])
    return model


@pytest.fixture(scope="module")
def gap():
    model = gap_model()
    split = split_model(model, "target")
    x = random_images(5, 8, seed=11)
    acts = keras.Model(model.inputs, model.get_layer("target").output)(x).numpy().astype(np.float64)
    kernel, bias = (w.astype(np.float64) for w in model.get_layer("predictions").get_weights())
    return model, split, x, acts, kernel, bias


def head_gradients(split, acts, c):
    a = tf.constant(acts, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(a)
        y = split.head(a)[:, c]
    return y.numpy(), tape.gradient(y, a).numpy()


def test_closed_forms_on_a_gap_head(gap):
    model, split, x, acts, kernel, bias = gap
    hw = acts.shape[1] * acts.shape[2]
    s = acts.sum(axis=(1, 2))  # (B, K)
    for c in range(4):
        y, g = head_gradients(split, acts, c)
        expected_g = np.broadcast_to(kernel[:, c] / hw, g.shape)
        np.testing.assert_allclose(g, expected_g, rtol=1e-6, atol=1e-9)  # g = W[:, c] / (h w)
        a32, g32 = tf.constant(acts, tf.float32), tf.constant(g)
        hires = get_method("hirescam").fn(a32, g32).numpy()
        np.testing.assert_allclose(hires.sum(axis=(1, 2)), y - bias[c], rtol=1e-5, atol=1e-5)
        gk = kernel[:, c] / hw
        np.testing.assert_allclose(get_method("xgradcam").fn(a32, g32).numpy(), gk * s / (s + 1e-7), rtol=1e-5, atol=1e-8)
        alpha = np.where(gk != 0, gk**2 / (2 * gk**2 + s * gk**3 + 1e-6), 0.0)  # constant over positions
        np.testing.assert_allclose(get_method("gradcam++").fn(a32, g32).numpy(), hw * np.maximum(gk, 0) * alpha,
                                   rtol=1e-5, atol=1e-8)


def test_engine_maps_equal_the_closed_forms(gap):
    model, split, x, acts, kernel, bias = gap
    out = Explainer(split, classes=[0, 1, 2, 3], method=ALL)(x)
    assert out.method_maps.shape == (5, 4, len(ALL), 8, 8)
    hw = 64
    for b in range(5):
        for c in range(4):
            gk = kernel[:, c] / hw
            g = np.broadcast_to(gk, acts[b].shape)
            for i, name in enumerate(ALL):
                ref = normalised(reference_raw(name, acts[b], g))
                np.testing.assert_allclose(out.method_maps[b, c, i], ref, atol=1e-5, err_msg=f"{name} {b} {c}")
        # layercam == gradcam where W[:, c] >= 0 (class 2), and not in general
        np.testing.assert_allclose(out.method_maps[b, 2, ALL.index("layercam")], out.method_maps[b, 2, 0], atol=1e-6)
        eigen = out.method_maps[b, :, ALL.index("eigencam")]
        assert (eigen == eigen[0]).all()  # class-agnostic: the same map for every class
    assert not np.allclose(out.method_maps[:, 0, ALL.index("layercam")], out.method_maps[:, 0, 0], atol=1e-3)
    assert get_method("eigencam").class_agnostic and not get_method("layercam").class_agnostic


def test_eigencam_sign_follows_the_channel_mean():
    """A flipped SVD sign would ReLU the map away; the fixed one correlates with the channel mean."""
    acts = np.zeros((1, 6, 6, 4), np.float32)
    acts[0, 1:3, 1:3, :] = [3.0, 2.0, 1.0, 4.0]  # one object, seen by every channel
    acts += np.random.default_rng(0).uniform(0, 0.1, acts.shape).astype(np.float32)
    raw = get_method("eigencam").fn(tf.constant(acts), None).numpy()[0]
    peak = np.unravel_index(np.argmax(raw), raw.shape)
    assert 1 <= peak[0] < 3 and 1 <= peak[1] < 3
    # many random activations (the SVD's own sign is arbitrary): every projection agrees with the mean
    # (measured: LAPACK's own sign disagrees with the mean for 15 of these 64)
    many = np.random.default_rng(1).normal(0.0, 1.0, (64, 5, 5, 7)).astype(np.float32)
    raws = get_method("eigencam").fn(tf.constant(many), None).numpy()
    for a, r in zip(many, raws):
        mean = a.mean(-1)
        assert (r * (mean - mean.mean())).sum() > 0
        np.testing.assert_allclose(r, reference_raw("eigencam", a, None), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# shipped backbones, weights none: batched engine == per-image NumPy reference


BACKBONES = [("mobilenet_v2", 96, "tile"), ("vgg16", 64, "jacobian")]


@pytest.mark.parametrize("name,size,strategy", BACKBONES)
def test_engine_equals_the_reference_on_shipped_backbones(name, size, strategy, registry):
    from gradcam_cli.config.profiles import override_profile
    from gradcam_cli.io.preprocess import normalise
    from gradcam_cli.models.build import build_model

    profile = override_profile(registry[name], input_size=size)
    keras.utils.set_random_seed(1)
    model = build_model(profile, "none")
    split = split_model(model, profile.target_layer)
    x = normalise(np.random.default_rng(5).integers(0, 256, (7, size, size, 3), dtype=np.uint8), profile)
    explainer = Explainer(split, top=2, method=ALL, strategy=strategy)
    whole = explainer(x)
    one = explainer(x[3:4])
    assert explainer.trace_count() == 1  # batch 7 then batch 1: no retrace
    assert_engine_matches_reference(model, profile.target_layer, x, whole, ALL)
    np.testing.assert_allclose(one.method_maps[0], whole.method_maps[3], atol=1e-5)


# ---------------------------------------------------------------------------
# tf-keras-vis, where its definition is ours


def flatten_model() -> keras.Model:
    """Conv -> Conv(target) -> Flatten -> Dense, linear output: gradients differ per position."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(6, 3, activation="relu")(inp)
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(a)
    return keras.Model(inp, keras.layers.Dense(4, name="scores")(keras.layers.Flatten()(a)))


def test_layercam_agrees_with_tf_keras_vis():
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.utils.scores import CategoricalScore

    model = flatten_model()
    x = random_images(4, 12, seed=8)
    classes = [0, 3, 1, 2]
    theirs = np.asarray(Layercam(model)(CategoricalScore(classes), x, penultimate_layer="target",
                                        expand_cam=False, normalize_cam=False))  # ReLU'd, not normalised
    out = Explainer(split_model(model, "target"), classes=[0, 1, 2, 3], method="layercam")(x)
    for b, c in enumerate(classes):
        assert theirs[b].max() > 0
        np.testing.assert_allclose(out.maps[b, c], theirs[b] / theirs[b].max(), atol=1e-5)


def test_gradcam_plus_plus_against_tf_keras_vis():
    """tf-keras-vis scores exp(y_c): that factor cancels in alpha and scales each map by a positive
    constant, which normalisation removes. What remains different: it divides each channel's
    alphas by their sum over positions (and has no 1e-6 in alpha's denominator). Its maps equal
    that variant computed from the same A and g; ours (pytorch-grad-cam's) differ from it."""
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.scores import CategoricalScore

    model = flatten_model()
    x = random_images(4, 12, seed=9)
    classes = [2, 0, 3, 1]
    theirs = np.asarray(GradcamPlusPlus(model)(CategoricalScore(classes), x, penultimate_layer="target",
                                               expand_cam=False, normalize_cam=False))
    out = Explainer(split_model(model, "target"), classes=[0, 1, 2, 3], method="gradcam++")(x)
    differs = 0.0
    for b, c in enumerate(classes):
        acts, [g] = tape_grads(model, "target", x[b], [c])
        a, g = acts.astype(np.float64), g.astype(np.float64)
        denom = 2 * g**2 + a.sum(axis=(0, 1)) * g**3
        alpha = g**2 / np.where(g**2 == 0, 1.0, denom)
        total = alpha.sum(axis=(0, 1))
        alpha = alpha / np.where(total == 0, 1.0, total)
        variant = normalised((a * (np.maximum(g, 0) * alpha).sum(axis=(0, 1))).sum(-1))
        np.testing.assert_allclose(theirs[b] / theirs[b].max(), variant, atol=1e-4)
        np.testing.assert_allclose(out.maps[b, c], normalised(reference_raw("gradcam++", acts, g)), atol=1e-5)
        differs = max(differs, float(np.abs(out.maps[b, c] - variant).max()))
    assert differs > 0.05  # the two variants are not the same maps


# ---------------------------------------------------------------------------
# localisation on the CNN trained on synthetic scenes


def test_every_class_specific_method_peaks_on_the_object():
    model = trained("softmax")
    x, y, boxes = scenes("softmax", 120, seed=2)
    methods = [m for m in ALL if not get_method(m).class_agnostic]
    out = Explainer(split_model(model, "target"), top=1, method=methods)(x)
    assert (out.classes[:, 0] == y).mean() >= 0.95
    for i, name in enumerate(methods):
        hits = sum(peak_on(out.method_maps[b, 0, i], boxes[b][int(y[b])]) for b in range(len(y)))
        assert hits / len(y) >= 0.9, f"{name}: peak on the object for only {hits}/{len(y)} images"
