"""Guided Grad-CAM: equal to a hand-written forward pass with tf.custom_gradient guided ReLUs,
non-zero only where the input gradient is, the model and TensorFlow's ordinary gradients
unchanged after a run, and the CLI writing it as its own image."""

from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf
from builders import assert_unchanged, snapshot
from helpers import invoke, random_images
from PIL import Image

from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.models.split import split_model


def relu_zoo() -> keras.Model:
    """Every ReLU form guided backpropagation covers: activation='relu' in a Conv, a ReLU(6) layer,
    activation='relu6' in a Conv, activation='relu' in a Dense."""
    keras.utils.set_random_seed(9)
    inp = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    a = keras.layers.ReLU(max_value=6.0, name="r6")(a * 4.0)
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu6", name="target")(a)
    x = keras.layers.Dense(6, activation="relu", name="d1")(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="predictions")(x))
    c1 = model.get_layer("c1")
    c1.set_weights([c1.get_weights()[0], np.full(4, -0.3, np.float32)])  # a blank patch is dead: no gradient
    return model


@tf.custom_gradient
def guided_relu(x):
    return tf.nn.relu(x), lambda dy: dy * tf.cast(x > 0, dy.dtype) * tf.cast(dy > 0, dy.dtype)


@tf.custom_gradient
def guided_relu6(x):
    return tf.nn.relu6(x), lambda dy: dy * tf.cast((x > 0) & (x < 6), dy.dtype) * tf.cast(dy > 0, dy.dtype)


def forward(model, x, guided: bool):
    """The zoo's forward pass written out by hand: (target activations, logits)."""
    relu, relu6 = (guided_relu, guided_relu6) if guided else (tf.nn.relu, tf.nn.relu6)
    w = {name: [tf.constant(v) for v in model.get_layer(name).get_weights()] for name in ("c1", "target", "d1", "predictions")}
    a = relu(tf.nn.conv2d(x, w["c1"][0], 1, "SAME") + w["c1"][1])
    a = relu6(a * 4.0)
    acts = relu6(tf.nn.conv2d(a, w["target"][0], 1, "SAME") + w["target"][1])
    h = relu(tf.matmul(tf.reduce_mean(acts, axis=(1, 2)), w["d1"][0]) + w["d1"][1])
    return acts, tf.matmul(h, w["predictions"][0]) + w["predictions"][1]


def reference(model, image, c):
    x = tf.constant(image[None])
    with tf.GradientTape() as tape:
        tape.watch(x)
        acts, logits = forward(model, x, guided=False)
        y = logits[0, c]
    g = tape.gradient(y, acts)[0].numpy()
    cam = np.maximum((acts[0].numpy() * g.mean(axis=(0, 1))).sum(-1), 0)
    cam = cam / cam.max() if cam.max() > 0 else cam
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, logits = forward(model, x, guided=True)
        y = logits[0, c]
    guided = tape.gradient(y, x)[0].numpy()
    return cam, guided * upsampled(cam, image.shape[:2])[..., None]


def upsampled(cam, size):
    return tf.image.resize(cam[None, ..., None], size, method="bilinear")[0, ..., 0].numpy()


def plain_input_gradient(model, image, c):
    x = tf.constant(image[None])
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, logits = forward(model, x, guided=False)
        y = logits[0, c]
    return tape.gradient(y, x)[0].numpy()


def test_guided_equals_custom_gradient_reference_and_leaves_the_model_alone():
    model = relu_zoo()
    x = random_images(5, 16, seed=3)
    x[:3, 4:12, 4:12] = 0.0  # blank patches: the ordinary input gradient is exactly zero inside them
    # the hand-written forward pass is the model's
    np.testing.assert_allclose(tf.nn.softmax(forward(model, tf.constant(x), False)[1]).numpy(), model(x).numpy(),
                               atol=1e-6)
    before, outputs_before = snapshot(model), model(x).numpy()
    plain_before = plain_input_gradient(model, x[0], 1)
    explainer = Explainer(split_model(model, "target"), top=2, method=["gradcam", "guided"])
    out = explainer(x)
    one = explainer(x[2:3])
    assert explainer.trace_count() == 1
    assert out.guided.shape == (5, 2, 16, 16, 3)
    for b in range(5):
        for n in range(2):
            cam, ref = reference(model, x[b], int(out.classes[b, n]))
            np.testing.assert_allclose(out.method_maps[b, n, 1], cam, atol=1e-5)  # guided's slot: its Grad-CAM
            scale = np.abs(ref).max()
            assert scale > 0
            np.testing.assert_allclose(out.guided[b, n] / scale, ref / scale, atol=1e-5, err_msg=f"{b} {n}")
            plain = plain_input_gradient(model, x[b], int(out.classes[b, n]))
            assert not (out.guided[b, n] != 0)[plain == 0].any()  # non-zero only where the input gradient is
            assert b >= 3 or (plain == 0).sum() >= 18  # not vacuous: measured 54 zero gradients in a patch
            up = upsampled(cam, x.shape[1:3])
            assert not np.allclose(out.guided[b, n] / scale, plain * up[..., None] / scale, atol=1e-2)  # guiding matters
    np.testing.assert_allclose(one.guided[0], out.guided[2], rtol=1e-5, atol=1e-9)
    assert_unchanged(model, before)
    np.testing.assert_array_equal(model(x).numpy(), outputs_before)  # activations byte-equal
    np.testing.assert_array_equal(plain_input_gradient(model, x[0], 1), plain_before)  # ordinary gradients back


def test_cli_writes_guided_as_its_own_image(tmp_path, lite0_cam):
    out = tmp_path / "o"
    result = invoke("explain", "sample_images/chelsea.jpg", "--out", out, "-q", "--top", 1,
                    "--method", "gradcam", "--method", "guided")
    assert result.exit_code == 0, result.stderr
    [record] = json.loads((out / "predictions.json").read_text())["images"]
    [entry] = record["predictions"]
    base = f"chelsea.top1-{entry['label'].replace(' ', '_')}"
    assert entry["overlays"] == {"gradcam": f"{base}.gradcam.jpg"} and entry["guided"] == f"{base}.guided.png"
    with Image.open(out / entry["guided"]) as im:
        assert im.size == tuple(lite0_cam.profile.input_size[::-1]) and im.mode == "RGB"
        pixels = np.asarray(im)
    assert pixels.std() > 1  # not a blank image
    assert {p.name for p in out.iterdir()} == {"predictions.json", "predictions.jsonl", ".gradcam-run.json", ".gradcam.lock",
                                               entry["overlays"]["gradcam"], entry["guided"]}
