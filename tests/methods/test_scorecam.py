"""Score-CAM: masks, masked scores in chunks, weights, the input-blind model, Faster Score-CAM's
channel choice, localisation, and the CLI flags; against a plain per-channel NumPy/OpenCV loop."""

from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from builders import peak_on, scenes, trained
from helpers import random_images

from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.engine.score import masked_scores
from gradcam_cli.methods import get_method
from gradcam_cli.settings import MethodOptions
from gradcam_cli.methods.score import channel_masks
from gradcam_cli.models.split import split_model


def small_model(zero_kernel: bool = False) -> keras.Model:
    keras.utils.set_random_seed(6)
    inp = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    a = keras.layers.MaxPooling2D()(a)
    a = keras.layers.Conv2D(7, 3, padding="same", activation="relu", name="target")(a)
    x = keras.layers.GlobalAveragePooling2D()(a)
    dense = keras.layers.Dense(4, activation="softmax", name="predictions")
    model = keras.Model(inp, dense(x))
    if zero_kernel:  # scores = the bias, whatever the input
        dense.set_weights([np.zeros((7, 4), np.float32), np.array([0.5, -1.0, 2.0, 0.1], np.float32)])
    return model


def reference_scores(model, acts, x, classes, channels=None, toward="zero"):
    """Per image, per channel: OpenCV bilinear upsampling, min-max, mask (the image times it, or toward
    the image's mean colour: mean + mask x (image - mean)), one logits pass each."""
    dense = model.get_layer("predictions")
    features = keras.Model(model.inputs[0], dense.input)
    h, w = x.shape[1:3]
    out = []
    for b in range(x.shape[0]):
        picked = range(acts.shape[-1]) if channels is None else channels[b]
        masked = []
        for k in picked:
            up = cv2.resize(acts[b, :, :, k], (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64)
            span = up.max() - up.min()
            mask = (up - up.min()) / (span + 1e-8) if span > 1e-8 else np.zeros_like(up)
            base = x[b].mean(axis=(0, 1)) if toward == "mean" else 0.0
            masked.append(base + mask[..., None] * (x[b] - base))
        logits = features(np.asarray(masked, np.float32)).numpy() @ dense.kernel.numpy() + dense.bias.numpy()
        out.append(logits[:, classes[b]].T)  # (N, K')
    return np.asarray(out)


def reference_map(acts_b, scores_bn):
    w = np.exp(scores_bn - scores_bn.max())
    w = w / w.sum()
    cam = np.maximum((acts_b.astype(np.float64) * w).sum(-1), 0)
    return cam / cam.max() if cam.max() > 0 else cam


def test_masks_are_upsampled_min_max_and_zero_for_a_constant_channel():
    acts = np.random.default_rng(0).uniform(0, 3, (2, 4, 5, 3)).astype(np.float32)
    acts[1, :, :, 2] = 1.5  # constant
    masks = channel_masks(tf.constant(acts), (12, 15)).numpy()
    assert masks.shape == (2, 12, 15, 3)
    assert (masks[1, :, :, 2] == 0).all()
    for b, k in [(0, 0), (0, 2), (1, 1)]:
        up = cv2.resize(acts[b, :, :, k], (15, 12), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(masks[b, :, :, k], (up - up.min()) / (up.max() - up.min()), atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_masked_scores_in_chunks_equal_one_pass_per_channel(chunk):
    model = small_model()
    split = split_model(model, "target")
    x = random_images(3, 16, seed=2)
    acts = split.trunk(tf.constant(x)).numpy()
    classes = np.array([[0, 2], [3, 1], [2, 2]], np.int32)
    got = tf.function(lambda z, a, c: masked_scores(lambda t: split.full(t)[1], z, a, c, chunk))(x, acts, classes)
    np.testing.assert_allclose(got.numpy(), reference_scores(model, acts, x, classes), rtol=1e-4, atol=1e-4)


def test_engine_maps_equal_the_reference_batch_7_and_1_without_retrace():
    model = small_model()
    split = split_model(model, "target")
    x = random_images(7, 16, seed=3)
    explainer = Explainer(split, top=2, method="scorecam", options=MethodOptions(scorecam_batch=16))
    assert explainer.strategy == "forward"  # no gradients
    whole, one = explainer(x), explainer(x[4:5])
    assert explainer.trace_count() == 1
    acts = split.trunk(tf.constant(x)).numpy()
    ref = reference_scores(model, acts, x, whole.classes)
    for b in range(7):
        for n in range(2):
            np.testing.assert_allclose(whole.maps[b, n], reference_map(acts[b], ref[b, n]), atol=1e-5)
    np.testing.assert_allclose(one.maps[0], whole.maps[4], atol=1e-5)
    weights = get_method("scorecam").fn(tf.constant(acts), tf.constant(ref, tf.float32)).numpy()
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)  # channel weights sum to 1


def test_masks_toward_the_mean_equal_the_reference_and_differ_from_zero():
    """``--scorecam-baseline mean`` on a CNN (auto keeps zero there): each masked input is the image's mean
    colour plus the mask times the image less it."""
    model = small_model()
    split = split_model(model, "target")
    x = random_images(3, 16, seed=8)
    mean = Explainer(split, top=2, method="scorecam", options=MethodOptions(scorecam_baseline="mean", scorecam_batch=4))
    auto = Explainer(split, top=2, method="scorecam")
    assert (mean.masked_toward, auto.masked_toward) == ("mean", "zero")
    out, zero = mean(x), auto(x)
    acts = split.trunk(tf.constant(x)).numpy()
    ref = reference_scores(model, acts, x, out.classes, toward="mean")
    for b in range(3):
        for n in range(2):
            np.testing.assert_allclose(out.maps[b, n], reference_map(acts[b], ref[b, n]), atol=1e-5)
    assert not np.allclose(out.maps, zero.maps, atol=1e-3)


def test_a_model_that_ignores_its_input_gives_the_mean_activation():
    model = small_model(zero_kernel=True)
    split = split_model(model, "target")
    x = random_images(4, 16, seed=4)
    out = Explainer(split, classes=[0, 2, 3], method="scorecam")(x)
    acts = split.trunk(tf.constant(x)).numpy()
    for b in range(4):
        mean = np.maximum(acts[b].mean(-1), 0)
        for n in range(3):
            np.testing.assert_allclose(out.maps[b, n], mean / mean.max(), atol=1e-5)


def test_faster_score_cam_keeps_the_channels_of_highest_variance():
    model = small_model()
    split = split_model(model, "target")
    x = random_images(3, 16, seed=5)
    out = Explainer(split, classes=[1, 3], method="scorecam", options=MethodOptions(scorecam_channels=3))(x)
    acts = split.trunk(tf.constant(x)).numpy()
    channels = np.argsort(-acts.var(axis=(1, 2)), axis=1)[:, :3]
    ref = reference_scores(model, acts, x, np.array([[1, 3]] * 3), channels)
    for b in range(3):
        chosen = acts[b][..., channels[b]]
        for n in range(2):
            np.testing.assert_allclose(out.maps[b, n], reference_map(chosen, ref[b, n]), atol=1e-5)
    every = Explainer(split, classes=[1, 3], method="scorecam")(x)
    assert not np.allclose(out.maps, every.maps, atol=1e-3)


def test_score_cam_peaks_on_the_object():
    model = trained("softmax")
    x, y, boxes = scenes("softmax", 100, seed=2)
    out = Explainer(split_model(model, "target"), top=1, method=["scorecam", "gradcam"])(x)
    hits = sum(peak_on(out.method_maps[b, 0, 0], boxes[b][int(y[b])]) for b in range(len(y)))
    assert hits / len(y) >= 0.9, f"peak on the object for only {hits}/{len(y)} images"


def test_cli_scorecam_flags_are_recorded(tmp_path, lite0_cam):
    from helpers import invoke

    out = tmp_path / "o"
    result = invoke("explain", "sample_images/chelsea.jpg", "--out", out, "-q", "--top", 2, "--method", "scorecam",
                    "--scorecam-channels", 6, "--scorecam-batch", 4)
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["method"] == "scorecam"
    assert doc["options"]["scorecam_channels"] == 6 and doc["options"]["scorecam_batch"] == 4
    [record] = doc["images"]
    assert len(record["predictions"]) == 2 and (out / record["predictions"][0]["overlay"]).is_file()
    bad = invoke("explain", "sample_images/chelsea.jpg", "--out", out, "--scorecam-channels", 0)
    assert bad.exit_code == 2
