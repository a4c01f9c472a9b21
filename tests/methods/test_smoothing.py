"""--eigen-smooth and --aug-smooth against per-image, per-pass NumPy / eager-tape references."""

from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf
from helpers import invoke, random_images

from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.settings import MethodOptions
from gradcam_cli.models.split import split_model

GRADIENT = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")


def flatten_model(bias: bool = True) -> keras.Model:
    """Conv -> Conv(target) -> Flatten -> Dense, linear output: gradients differ per position."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(6, 3, activation="relu", use_bias=bias)(inp)
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", use_bias=bias, name="target")(a)
    return keras.Model(inp, keras.layers.Dense(4, name="scores")(keras.layers.Flatten()(a)))


def tape(model, image, c):
    sub = keras.Model(model.inputs[0], [model.get_layer("target").output, model.output])
    x = tf.constant(image[None])
    with tf.GradientTape() as t:
        t.watch(x)
        acts, scores = sub(x, training=False)
        y = scores[0, c]
    return acts[0].numpy().astype(np.float64), t.gradient(y, acts)[0].numpy().astype(np.float64)


def first_component(weighted):
    flat = weighted.reshape(-1, weighted.shape[-1])
    centred = flat - flat.mean(axis=0)
    projection = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    mean = flat.mean(axis=1)
    return (projection if projection @ (mean - mean.mean()) >= 0 else -projection).reshape(weighted.shape[:2])


def weighted(name, a, g):
    s = a.sum(axis=(0, 1))
    if name == "gradcam":
        return a * g.mean(axis=(0, 1))
    if name == "gradcam++":
        alpha = np.where(g != 0, g**2 / (2 * g**2 + s * g**3 + 1e-6), 0.0)
        return a * (np.maximum(g, 0) * alpha).sum(axis=(0, 1))
    if name == "xgradcam":
        return a * (g * a).sum(axis=(0, 1)) / (s + 1e-7)
    if name == "layercam":
        return np.maximum(g, 0) * a
    return g * a  # hirescam


def normalised(raw):
    cam = np.maximum(raw, 0)
    return cam / cam.max() if cam.max() > 0 else cam


def test_eigen_smooth_is_the_first_component_of_the_weighted_activations():
    model = flatten_model()
    x = random_images(4, 12, seed=21)
    out = Explainer(split_model(model, "target"), classes=[0, 3], method=GRADIENT,
                    options=MethodOptions(eigen_smooth=True))(x)
    plain = Explainer(split_model(model, "target"), classes=[0, 3], method=GRADIENT)(x)
    for b in range(4):
        for n, c in enumerate([0, 3]):
            a, g = tape(model, x[b], c)
            for i, name in enumerate(GRADIENT):
                ref = normalised(first_component(weighted(name, a, g)))
                np.testing.assert_allclose(out.method_maps[b, n, i], ref, atol=1e-4, err_msg=f"{name} {b} {c}")
    assert not np.allclose(out.method_maps, plain.method_maps, atol=1e-2)


def test_eigen_smooth_score_cam_of_an_input_blind_model_is_eigen_cam():
    """Uniform Score-CAM weights: the weighted activations are A / K, whose first component is Eigen-CAM's."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="target")(inp)
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inp, dense(keras.layers.GlobalAveragePooling2D()(a)))
    dense.set_weights([np.zeros((6, 3), np.float32), np.array([1.0, 0.0, -1.0], np.float32)])
    x = random_images(3, 12, seed=6)
    split = split_model(model, "target")
    smoothed = Explainer(split, classes=[0, 2], method="scorecam", options=MethodOptions(eigen_smooth=True))(x)
    eigen = Explainer(split, classes=[0, 2], method="eigencam")(x)
    np.testing.assert_allclose(smoothed.maps, eigen.maps, atol=1e-5)
    assert (eigen.maps.max(axis=(2, 3)) == 1).all()


def aug_reference(model, image, c, name):
    """The six passes one by one: mirrored or not, times 0.9 / 1 / 1.1, maps mirrored back, mean, normalised."""
    maps = []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            seen = (image[:, ::-1] if flip else image) * np.float32(factor)
            a, g = tape(model, np.ascontiguousarray(seen), c)
            cam = normalised(weighted(name, a, g).sum(-1))
            maps.append(cam[:, ::-1] if flip else cam)
    return normalised(np.mean(maps, axis=0))


def test_aug_smooth_averages_six_passes_for_the_plain_pass_classes():
    model = flatten_model(bias=False)  # no biases: scores scale with the input, so its factor can reorder them
    x = random_images(3, 12, seed=31)
    dense = model.get_layer("scores")
    features = keras.Model(model.inputs[0], dense.input)(x[:1]).numpy()
    u = (features @ dense.kernel.numpy())[0]  # scores of image 0 before the bias
    lo, hi = np.argsort(u)[1], np.argsort(u)[2]
    bias = np.full(4, -1e3, np.float32)
    bias[lo], bias[hi] = (u[hi] - u[lo]) * 1.03, 0.0  # lo just ahead at factor 1, behind at 1.1
    dense.set_weights([dense.kernel.numpy(), bias])
    top_at = lambda f: int(np.argmax(features @ dense.kernel.numpy() * f + bias))  # noqa: E731  (ReLU net: A scales by f)
    assert top_at(1.0) == lo and top_at(1.1) == hi

    split = split_model(model, "target")
    out = Explainer(split, top=1, method=["gradcam", "layercam"], options=MethodOptions(aug_smooth=True))(x)
    plain = Explainer(split, top=1, method="gradcam")(x)
    np.testing.assert_array_equal(out.classes, plain.classes)
    assert out.classes[0, 0] == lo  # the plain pass's class, kept for the x1.1 passes
    for b in range(3):
        c = int(out.classes[b, 0])
        for i, name in enumerate(["gradcam", "layercam"]):
            np.testing.assert_allclose(out.method_maps[b, 0, i], aug_reference(model, x[b], c, name), atol=1e-5,
                                       err_msg=f"{name} {b}")
    assert not np.allclose(out.maps, plain.maps, atol=1e-2)


def test_cli_smoothing_flags_are_recorded_and_resume_checks_them(tmp_path, lite0_cam):
    out = tmp_path / "o"
    args = ["explain", "sample_images/coffee.jpg", "--out", out, "-q", "--top", 1]
    assert invoke(*args, "--aug-smooth", "--eigen-smooth").exit_code == 0
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["options"]["aug_smooth"] is True and doc["options"]["eigen_smooth"] is True
    again = invoke(*args, "--resume")
    assert again.exit_code == 2 and "aug_smooth True -> False" in again.stderr
