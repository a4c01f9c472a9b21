"""Metrics: identities on linear models, the imputer's exactness, batched == a plain per-step
reference, and every metric on a CNN trained here on synthetic scenes (mask beats random
beats inverted mask; the sanity check catches a model-independent map).

The references in this file are written independently of gradcam_cli.metrics: pixel orders
from Python's stable ``sorted``, perturbed images built pixel by pixel, one eager model call
per image and step, the trapezoid rule as a loop.
"""

from __future__ import annotations

import math

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import SAMPLES

from gradcam_cli.errors import BoxesError
from gradcam_cli.metrics import baselines, confidence, perturbation, pointing, road, sanity, stats
from gradcam_cli.metrics.scoring import make_score_fn, score_inputs
from gradcam_cli.render.boxes import box_from_map

SIZE, OBJ, SCALE = 32, 8, 8  # model input, object side, original images are SCALE x larger
COLOURS = np.array([[235, 60, 40], [40, 90, 235]], np.float64)  # class 0 red, class 1 blue


# ---------------------------------------------------------------------------
# helpers


def linear_score(w: np.ndarray, bias: float = 0.0):
    """score = sum(w * pixels) + bias, in float64: any linear (affine) model."""
    flat = w.reshape(-1).astype(np.float64)
    return lambda pixels, classes: np.asarray(pixels, np.float64).reshape(len(pixels), -1) @ flat + bias


def scenes(n: int, seed: int):
    """Grey noise with one bright 8 x 8 square; label = its colour. Returns (uint8 images, labels, (y0, x0))."""
    rng = np.random.default_rng(seed)
    x = rng.normal(110, 25, (n, SIZE, SIZE, 3))
    y = rng.integers(0, 2, n)
    pos = rng.integers(0, SIZE - OBJ + 1, (n, 2))
    for i, (y0, x0) in enumerate(pos):
        x[i, y0 : y0 + OBJ, x0 : x0 + OBJ] = COLOURS[y[i]] + rng.normal(0, 8, (OBJ, OBJ, 3))
    return x.clip(0, 255).astype(np.uint8), y.astype(np.int32), pos


def masks_of(pos) -> np.ndarray:
    out = np.zeros((len(pos), SIZE, SIZE), np.float32)
    for i, (y0, x0) in enumerate(pos):
        out[i, y0 : y0 + OBJ, x0 : x0 + OBJ] = 1.0
    return out


def scale01(pixels):
    return np.asarray(pixels, np.float32) / 255.0


def small_cnn(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inp, out, name="synthetic")


@pytest.fixture(scope="module")
def trained():
    model = small_cnn()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    x, y, _ = scenes(800, seed=1)
    model.fit(scale01(x), y, epochs=4, batch_size=32, verbose=0)
    return model


def reference_order(cam: np.ndarray) -> list[int]:
    flat = cam.reshape(-1).tolist()
    return sorted(range(len(flat)), key=lambda i: -flat[i])  # Python's sort is stable


def eager_score(model, pixels: np.ndarray, cls: int) -> float:
    logits = model(scale01(pixels)[None], training=False)
    return float(tf.nn.softmax(logits, axis=-1)[0, cls])


def trapezoid(ys, xs) -> float:
    return sum((ys[i] + ys[i + 1]) / 2 * (xs[i + 1] - xs[i]) for i in range(len(ys) - 1))


def gradcam(model, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Plain Grad-CAM at the last conv layer, upsampled to the input: (B, SIZE, SIZE) in [0, 1]."""
    sub = keras.Model(model.inputs, [model.get_layer("target").output, model.output])
    with tf.GradientTape() as tape:
        acts, logits = sub(tf.constant(scale01(x)), training=False)
        picked = tf.gather(logits, tf.constant(classes), axis=1, batch_dims=1)
    grads = tape.gradient(picked, acts)
    weights = tf.reduce_mean(grads, axis=(1, 2))
    cams = tf.nn.relu(tf.einsum("bhwk,bk->bhw", acts, weights)).numpy()
    peak = cams.max(axis=(1, 2), keepdims=True)
    cams = np.where(peak > 0, cams / np.maximum(peak, 1e-12), 0.0).astype(np.float32)
    return np.stack([cv2.resize(c, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) for c in cams])


# ---------------------------------------------------------------------------
# deletion / insertion


@pytest.mark.parametrize("kind", ["blur", "mean", "black"])
def test_linear_model_deletion_plus_insertion_is_f_x_plus_f_baseline(kind):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (3, 24, 20, 3), dtype=np.uint8)
    maps = rng.random((3, 24, 20), dtype=np.float32)
    maps[0, :5] = 0.5  # ties
    f = linear_score(rng.normal(size=(24, 20, 3)), bias=0.7)
    base = perturbation.make_baseline(images, kind)
    d = perturbation.deletion(images, maps, [0, 0, 0], f, baseline=kind, steps=7, chunk=5)
    i = perturbation.insertion(images, maps, [0, 0, 0], f, baseline=kind, steps=7, chunk=5)
    expected = f(images.astype(np.float32), None) + f(base, None)
    np.testing.assert_allclose(d.scores + i.scores, np.repeat(expected[:, None], 8, axis=1), rtol=1e-12)
    np.testing.assert_allclose(d.scores[:, 0], f(images, None), rtol=1e-12)  # step 0: the image
    np.testing.assert_allclose(i.scores[:, 0], f(base, None), rtol=1e-12)  # step 0: the baseline
    assert d.fractions[0] == 0 and d.fractions[-1] == 1


def test_baselines_are_what_they_say():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (2, 30, 26, 3), dtype=np.uint8)
    assert not perturbation.make_baseline(images, "black").any()
    mean = perturbation.make_baseline(images, "mean")
    for b in range(2):
        for c in range(3):
            assert np.allclose(mean[b, :, :, c], images[b, :, :, c].astype(np.float64).mean(), atol=1e-3)
    blur = perturbation.make_baseline(images, "blur")
    kernel = cv2.getGaussianKernel(11, 5.0)
    padded = cv2.copyMakeBorder(images[1].astype(np.float64), 5, 5, 5, 5, cv2.BORDER_REFLECT_101)
    y, x = 13, 7  # one pixel by the definition: sum of the 11 x 11 Gaussian times the window
    expected = (padded[y : y + 11, x : x + 11] * (kernel @ kernel.T)[..., None]).sum(axis=(0, 1))
    assert np.allclose(blur[1, y, x], expected, atol=1e-3)
    with pytest.raises(ValueError, match="baseline must be one of"):
        perturbation.make_baseline(images, "grey")


def test_step_counts_and_ranks_follow_the_stated_rules():
    assert perturbation.step_counts(10, 4).tolist() == [0, 3, 5, 8, 10]  # 2.5 -> 3, 7.5 -> 8: halves up
    cam = np.array([[[0.2, 0.9, 0.2], [0.9, 0.0, 0.2]]], np.float32)
    ranks = perturbation.pixel_ranks(cam)[0]
    assert ranks.tolist() == [2, 0, 3, 1, 5, 4]  # ties: the earlier pixel (row-major) first


def test_batched_metrics_equal_a_per_image_per_step_reference():
    model = small_cnn(seed=5)
    images, labels, _ = scenes(3, seed=6)
    maps = np.random.default_rng(7).random((3, SIZE, SIZE), dtype=np.float32)
    maps[1] = np.round(maps[1] * 4) / 4  # many ties
    score_fn = make_score_fn(model, scale01, activation="softmax", chunk=7)
    steps, hw = 10, SIZE * SIZE
    for kind, insert in (("mean", False), ("black", True)):
        fn = perturbation.insertion if insert else perturbation.deletion
        got = fn(images, maps, labels, score_fn, baseline=kind, steps=steps)
        for b in range(3):
            base = np.zeros((SIZE, SIZE, 3)) if kind == "black" else images[b].reshape(-1, 3).mean(axis=0)
            base = np.broadcast_to(base, (SIZE, SIZE, 3)).astype(np.float32)
            order = reference_order(maps[b])
            curve = []
            for k in range(steps + 1):
                n = math.floor(k * hw / steps + 0.5)
                x = (base.copy() if insert else images[b].astype(np.float32)).reshape(-1, 3)
                source = (images[b].astype(np.float32) if insert else base).reshape(-1, 3)
                for p in order[:n]:
                    x[p] = source[p]
                curve.append(eager_score(model, x.reshape(SIZE, SIZE, 3), labels[b]))
            np.testing.assert_allclose(got.scores[b], curve, atol=1e-5)
            fractions = [math.floor(k * hw / steps + 0.5) / hw for k in range(steps + 1)]
            assert abs(got.auc[b] - trapezoid(curve, fractions)) < 1e-5
    conf = confidence.confidence(images, maps, labels, score_fn)
    for b in range(3):
        s = eager_score(model, images[b].astype(np.float32), labels[b])
        s2 = eager_score(model, images[b].astype(np.float32) * maps[b][..., None], labels[b])
        assert abs(conf.scores[b] - s) < 1e-5 and abs(conf.masked[b] - s2) < 1e-5
        assert abs(conf.drop[b] - max(s - s2, 0) / (s + 1e-7)) < 1e-5 and conf.increase[b] == (s2 > s)
    got = road.road(images, maps, labels, score_fn, percentages=(20, 70), noise=0.0)
    for b in range(3):
        order = reference_order(maps[b])
        for j, p in enumerate((20, 70)):
            n = math.floor(p * hw / 100 + 0.5)
            for removed_ids, out in ((order[:n], got.morf), (order[hw - n :], got.lerf)):
                removed = np.zeros(hw, bool)
                removed[removed_ids] = True
                x = road.impute(images[b], removed.reshape(SIZE, SIZE), noise=0.0)
                assert abs(out[b, j] - eager_score(model, x, labels[b])) < 1e-5
    assert score_fn.trace_count() == 1  # chunks of 7 and every remainder: one trace


# ---------------------------------------------------------------------------
# the scorer


def test_score_fn_activations_pick_each_inputs_class():
    model = small_cnn(seed=8)
    pixels = np.random.default_rng(9).uniform(0, 255, (5, SIZE, SIZE, 3)).astype(np.float32)
    classes = np.array([0, 1, 1, 0, 1])
    logits = model(scale01(pixels), training=False).numpy()
    picked = lambda a: a[np.arange(5), classes]  # noqa: E731
    for activation, expected in (
        ("softmax", tf.nn.softmax(logits).numpy()),
        ("sigmoid", tf.sigmoid(logits).numpy()),
        ("logit", logits),
        ("linear", logits),
    ):
        got = make_score_fn(model, scale01, activation=activation, chunk=2)(pixels, classes)
        np.testing.assert_allclose(got, picked(expected), atol=1e-6)
    with pytest.raises(ValueError, match="activation must be one of"):
        make_score_fn(model, scale01, activation="tanh")
    with pytest.raises(ValueError, match="one entry per input"):
        score_inputs(lambda p, c: p.sum((1, 2, 3)), lambda a, b: pixels[a:b], 5, classes[:4])


# ---------------------------------------------------------------------------
# average drop / increase


def test_average_drop_and_increase_of_an_all_ones_map_are_zero():
    model = small_cnn(seed=10)
    images, labels, _ = scenes(6, seed=11)
    score_fn = make_score_fn(model, scale01, chunk=4)
    result = confidence.confidence(images, np.ones((6, SIZE, SIZE), np.float32), labels, score_fn)
    assert result.average_drop == 0.0 and result.increase_rate == 0.0
    np.testing.assert_array_equal(result.scores, result.masked)
    # linear score, a half map: s' = s / 2 exactly, drop = 1/2 for positive scores
    f = linear_score(np.ones((SIZE, SIZE, 3)))
    half = confidence.confidence(images, np.full((6, SIZE, SIZE), 0.5, np.float32), labels, f)
    np.testing.assert_allclose(half.drop, 0.5, rtol=1e-6)
    assert abs(half.average_drop - 50.0) < 1e-4 and half.increase_rate == 0.0


# ---------------------------------------------------------------------------
# ROAD


def test_imputer_reproduces_a_constant_image_and_a_linear_ramp():
    rng = np.random.default_rng(12)
    removed = rng.random((20, 30)) < 0.6
    constant = np.full((20, 30, 3), 77.0)
    assert np.abs(road.impute(constant, removed, noise=0.0) - 77.0).max() < 1e-9
    yy, xx = np.mgrid[0:20, 0:30].astype(np.float64)
    ramp = np.stack([2 * yy + 3 * xx, yy - xx + 100, 0.5 * xx + 5], axis=-1)
    hole = np.zeros((20, 30), bool)
    hole[4:16, 6:24] = True  # inside: every removed pixel has all 8 neighbours in the image
    filled = road.impute(ramp, hole, noise=0.0)
    assert np.abs(filled - ramp).max() < 1e-4
    # one removed pixel: 1/6 of each edge neighbour + 1/12 of each diagonal one; in a corner,
    # the same weights normalised over the 3 neighbours inside the image
    image = rng.uniform(0, 255, (20, 30, 3))
    alone = np.zeros((20, 30), bool)
    alone[7, 11] = alone[0, 0] = True
    filled = road.impute(image, alone, noise=0.0)
    edges = image[6, 11] + image[8, 11] + image[7, 10] + image[7, 12]
    diagonals = image[6, 10] + image[6, 12] + image[8, 10] + image[8, 12]
    assert np.abs(filled[7, 11] - (edges / 6 + diagonals / 12)).max() < 1e-3
    corner = (image[0, 1] / 6 + image[1, 0] / 6 + image[1, 1] / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert np.abs(filled[0, 0] - corner).max() < 1e-3
    # kept pixels are kept; the noise is 0.01 of the range, seeded
    image = rng.uniform(0, 255, (20, 30, 3))
    noisy = road.impute(image, hole, noise=0.01, rng=np.random.default_rng(1))
    clean = road.impute(image, hole, noise=0.0)
    np.testing.assert_array_equal(noisy[~hole], image[~hole].astype(np.float32))
    assert abs((noisy - clean)[hole].std() - 2.55) < 0.25
    np.testing.assert_array_equal(noisy, road.impute(image, hole, noise=0.01, rng=np.random.default_rng(1)))


def test_road_removes_exactly_p_percent_by_rank_on_a_mostly_zero_map():
    cam = np.zeros((1, 20, 20), np.float32)
    cam[0, 5:9, 7:12] = np.linspace(0.1, 1.0, 20).reshape(4, 5)  # 20 of 400 pixels (5%) non-zero
    morf = road.removal_masks(cam, 10)[0]
    assert morf.sum() == 40 and morf[cam[0] > 0].all()  # exactly 10%, the 5% non-zero among them
    lerf = road.removal_masks(cam, 10, most_relevant_first=False)[0]
    assert lerf.sum() == 40 and not lerf[cam[0] > 0].any()
    # through road(): a score that counts the pixels that changed
    image = np.random.default_rng(13).integers(0, 256, (1, 20, 20, 3), dtype=np.uint8)
    changed = lambda px, c: (np.abs(px - image[0].astype(np.float32)).sum(-1) > 1e-3).sum((1, 2))  # noqa: E731
    result = road.road(image, cam, [0], changed, chunk=4)
    expected = [round(p * 4) for p in road.PERCENTAGES]
    assert result.morf[0].tolist() == expected and result.lerf[0].tolist() == expected


# ---------------------------------------------------------------------------
# pointing game, localisation, boxes CSV


def test_boxes_csv_header_rows_and_errors(tmp_path):
    good = tmp_path / "boxes.csv"
    good.write_text("path,label,x0,y0,x1,y1\na.jpg,cat,1,2,30,40\na.jpg,dog,5,5,9,9\n\nb/c.png,cat,0,0,4,4\n")
    boxes = pointing.read_boxes_csv(good)
    assert boxes == {
        "a.jpg": [pointing.Box("cat", 1, 2, 30, 40), pointing.Box("dog", 5, 5, 9, 9)],
        "b/c.png": [pointing.Box("cat", 0, 0, 4, 4)],
    }
    for text, message in (
        ("a.jpg,cat,1,2,30\n", r"boxes.csv:1: expected 6 columns"),
        ("a.jpg,cat,1,2,30,40\nb.jpg,cat,1,x,3,4\n", r"boxes.csv:2: x0,y0,x1,y1 must be integers"),
        ("a.jpg,cat,10,2,3,40\n", r"boxes.csv:1: a box needs 0 <= x0 < x1"),
    ):
        good.write_text(text)
        with pytest.raises(BoxesError, match=message):
            pointing.read_boxes_csv(good)
    with pytest.raises(BoxesError, match="cannot read boxes CSV"):
        pointing.read_boxes_csv(tmp_path / "missing.csv")


def test_pointing_tolerance_map_box_and_iou():
    keep = lambda cam, size: cam  # noqa: E731  (identity upsampler: maps already at original size)
    cam = np.zeros((1, 60, 80), np.float32)
    cam[0, 30, 10] = 1.0  # peak at x=10, y=30
    box = [[pointing.Box("cat", 25, 0, 40, 20)]]  # columns 25..39, rows 0..19: distance hypot(15, 11)
    d = math.hypot(15, 11)

    def hit(tol, label="cat"):
        return pointing.pointing_game(cam, [(60, 80)], box, [label], tolerance=tol, upsample=keep)[0]

    assert hit(math.ceil(d)) and not hit(math.floor(d)) and not hit(100, "dog")
    assert not pointing.pointing_game(np.zeros((1, 60, 80), np.float32), [(60, 80)], box, ["cat"], upsample=keep)[0]
    blobs = np.zeros((40, 50), np.float32)
    blobs[2:6, 3:8] = 1.0  # 20 px
    blobs[10:20, 30:33] = 0.2  # 30 px, above 15% of the max: the largest segment
    blobs[30, 40] = 0.1  # below the threshold
    assert box_from_map(blobs) == [30, 10, 33, 20]  # the box localisation_error scores
    assert pointing.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert pointing.iou((0, 0, 2, 2), (2, 2, 4, 4)) == 0.0
    gt = [[pointing.Box("cat", 30, 10, 33, 20)]]
    assert not pointing.localisation_error(blobs[None], [(40, 50)], gt, ["cat"], upsample=keep)[0]
    assert pointing.localisation_error(blobs[None], [(40, 50)], gt, ["dog"], upsample=keep)[0]  # wrong class


# ---------------------------------------------------------------------------
# the trained synthetic CNN: mask beats random beats inverted on every metric


def test_true_mask_beats_random_and_inverted_maps_on_a_trained_cnn(trained):
    images, labels, pos = scenes(24, seed=2)
    score_fn = make_score_fn(trained, scale01, activation="softmax", chunk=64)
    predicted = np.argmax(trained(scale01(images), training=False).numpy(), axis=1)
    assert (predicted == labels).mean() >= 0.95  # the model learned the task
    mask = masks_of(pos)
    candidates = {
        "mask": mask,
        "random": baselines.random_maps(24, (SIZE, SIZE), seed=3),
        "inverted": 1.0 - mask,
        "gradcam": gradcam(trained, images, labels),
    }
    sizes = [(SIZE * SCALE, SIZE * SCALE)] * 24
    gt = [[pointing.Box(str(c), x0 * SCALE, y0 * SCALE, (x0 + OBJ) * SCALE, (y0 + OBJ) * SCALE)]
          for c, (y0, x0) in zip(labels, pos)]
    got = {}
    for name, maps in candidates.items():
        got[name] = {  # black baselines: a blurred 8 px square keeps its colour, p(class) stays ~1 on it
            "deletion": perturbation.deletion(images, maps, labels, score_fn, baseline="black").auc.mean(),
            "insertion": perturbation.insertion(images, maps, labels, score_fn, baseline="black").auc.mean(),
            "road": road.road(images, maps, labels, score_fn).combined.mean(),
            "pointing": pointing.pointing_game(maps, sizes, gt, [str(c) for c in labels]).mean(),
            "loc_error": pointing.localisation_error(maps, sizes, gt, [str(c) for c in predicted]).mean(),
        }
    mask_, rand, inv = got["mask"], got["random"], got["inverted"]
    for other in (rand, inv):
        assert mask_["deletion"] < other["deletion"], got
        assert mask_["insertion"] > other["insertion"], got
        assert mask_["road"] > other["road"], got
        assert mask_["loc_error"] < other["loc_error"], got
        assert other["pointing"] <= 0.4, got  # chance: about (64 + 2 * 15)^2 / 256^2 = 13%
    assert mask_["pointing"] == 1.0 and mask_["loc_error"] == (predicted != labels).mean()
    assert got["gradcam"]["deletion"] < rand["deletion"] and got["gradcam"]["insertion"] > rand["insertion"], got


def test_sanity_cascade_breaks_gradcam_flags_a_model_blind_map_and_leaves_the_model_alone(trained):
    images, labels, pos = scenes(8, seed=4)
    before = [w.tobytes() for w in trained.get_weights()]
    result = sanity.cascading_randomisation(trained, lambda m: gradcam(m, images, labels))
    assert [w.tobytes() for w in trained.get_weights()] == before  # byte-equal: the user's model untouched
    assert result.blocks == [("logits",), ("target",), ("conv2",), ("conv1",)]
    assert result.spearman.shape == (4, 8) and result.ssim.shape == (4, 8)
    assert result.mean_spearman[-1] < 0.5 and not result.failed, result.mean_spearman
    blind = sanity.cascading_randomisation(trained, lambda m: masks_of(pos) * 0.5 + 0.25, max_steps=2)
    assert [len(b) for b in blind.blocks] == [2, 2]  # 4 layers grouped into 2 consecutive blocks
    assert np.allclose(blind.spearman, 1.0) and np.allclose(blind.ssim, 1.0) and blind.failed


def test_reinitialise_resets_every_variable_from_the_layer_s_own_initialiser():
    # a depthwise kernel is a variable named "kernel" whose initialiser is depthwise_initializer; a
    # separable conv has two kernels; BatchNorm's moving statistics are state learned from the data
    dw = keras.layers.DepthwiseConv2D(3, depthwise_initializer=keras.initializers.Constant(0.25), use_bias=False)
    sep = keras.layers.SeparableConv2D(2, 3, depthwise_initializer=keras.initializers.Constant(0.5),
                                       pointwise_initializer=keras.initializers.Constant(-1.0))
    bn = keras.layers.BatchNormalization()
    for layer in (dw, sep, bn):
        layer.build((None, 8, 8, 3))
        for variable in layer.weights:
            variable.assign(np.full(variable.shape, 7.0, np.float32))  # "trained"
        sanity._reinitialise(layer, seed=3)
    got = {f"{layer.name.split('_')[0]}/{v.name}": np.unique(np.asarray(v)).tolist()
           for layer in (dw, sep, bn) for v in layer.weights}
    assert got == {"depthwise/kernel": [0.25], "separable/depthwise_kernel": [0.5],
                   "separable/pointwise_kernel": [-1.0], "separable/bias": [0.0], "batch/gamma": [1.0],
                   "batch/beta": [0.0], "batch/moving_mean": [0.0], "batch/moving_variance": [1.0]}, got


def test_sanity_cascade_on_lite0_changes_the_maps_at_every_step_down_to_the_stem(lite0_cam):
    # Lite0's blocks are conv -> BatchNorm -> ReLU6. Re-initialised convs with the pretrained moving
    # statistics left in place made the target activations input-independent after a few blocks, so the
    # maps (and the correlation) stopped changing: the deeper steps randomised layers the maps no longer saw
    from gradcam_cli.engine.explainer import Explainer
    from gradcam_cli.io.discover import InputRef
    from gradcam_cli.models.split import split_model
    from gradcam_cli.run.step import Item, decode_item

    cam = lite0_cam
    refs = [InputRef(str(SAMPLES / f"{name}.jpg"), name) for name in ("astronaut", "chelsea")]
    items = [decode_item(ref, cam.profile) for ref in refs]
    assert all(isinstance(item, Item) for item in items), items
    batch = np.stack([item.model_input for item in items])
    classes = np.array([e.predictions[0].class_index for e in cam.explain_prepared(batch, top=1)], np.int32)
    seen = []

    def maps_fn(model):
        split = split_model(model, cam.layer, output=cam.profile.output)
        acts = np.asarray(split.full(batch)[0], np.float64)
        seen.append(np.linalg.norm(acts - acts.mean(axis=0)) / np.linalg.norm(acts - acts.mean()))
        result = Explainer(split, top=1, extra_class=True, method="gradcam")(batch, classes)
        return np.stack([cam.upsampler(m, cam.profile.input_size) for m in result.maps[:, -1]])

    before = [w.tobytes() for w in cam.model.get_weights()]  # BatchNorm's moving statistics included
    maps = []
    result = sanity.cascading_randomisation(cam.model, lambda m: maps.append(maps_fn(m)) or maps[-1], max_steps=4)
    assert [w.tobytes() for w in cam.model.get_weights()] == before
    names = [name for block in result.blocks for name in block]
    assert names[0] == "predictions" and names[-1] == "stem_conv" and len(names) == len(set(names)), names
    assert {"top_conv", "top_bn", "block6d_dwconv", "block1a_dwconv"} <= set(names), names  # at and under the target
    changes = [float(np.abs(b - a).max()) for a, b in zip(maps[1:], maps[2:])]
    assert min(changes) > 0.05, changes  # each block randomised moves the maps
    assert min(seen) > 0.05, seen  # the randomised trunk still passes the image through
    assert (result.mean_spearman < 0.5).all(), result.mean_spearman  # the test, at every step


def test_spearman_and_ssim_against_independent_references():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(14)
    a = rng.random((3, 24, 30))
    b = np.stack([a[0] * 0.5 + rng.random((24, 30)) * 0.5, -a[1], np.round(rng.random((24, 30)) * 3) / 3])
    got = sanity.spearman(a, b)
    for i in range(3):
        assert abs(got[i] - abs(spearmanr(a[i].ravel(), b[i].ravel()).statistic)) < 1e-12
    assert sanity.spearman(np.zeros((2, 4, 4)), np.stack([np.zeros((4, 4)), a[0, :4, :4]])).tolist() == [1.0, 0.0]
    smooth = cv2.GaussianBlur(a[0], (0, 0), 3)
    for x, y in ((a[0], b[0]), (smooth, a[0]), (a[0], a[0]), (smooth / smooth.max(), b[2])):
        expected = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False)
        assert abs(sanity.ssim(x, y) - expected) < 1e-9
    c1 = 0.01**2  # two constant maps (no variance): SSIM = (2 u v + C1) / (u^2 + v^2 + C1), by hand
    assert abs(sanity.ssim(np.full((16, 16), 0.2), np.full((16, 16), 0.6)) - (0.24 + c1) / (0.4 + c1)) < 1e-12


# ---------------------------------------------------------------------------
# statistics, baseline maps


def test_bootstrap_interval():
    values = np.random.default_rng(15).normal(3.0, 2.0, 400)
    got = stats.bootstrap(np.concatenate([values, [np.nan]]), seed=5)
    assert got.n == 400 and got.mean == pytest.approx(values.mean(), abs=1e-12)
    means = values[np.random.default_rng(5).integers(0, 400, (1000, 400))].mean(axis=1)
    assert (got.low, got.high) == tuple(np.quantile(means, [0.025, 0.975]))
    width = 2 * 1.96 * values.std() / math.sqrt(400)  # the normal approximation
    assert abs((got.high - got.low) / width - 1) < 0.15 and got.low < got.mean < got.high
    assert stats.bootstrap([2.5]) == stats.Interval(2.5, 2.5, 2.5, 1)
    assert stats.bootstrap([]).n == 0


def test_baseline_maps():
    centre = baselines.centre_maps(2, (41, 61))
    assert centre.shape == (2, 41, 61) and centre.dtype == np.float32
    assert centre[0, 20, 30] == 1.0  # the peak at the centre; sigma = 41 / 4 = 10.25
    assert abs(centre[0, 20, 40] - math.exp(-0.5 * (10 / 10.25) ** 2)) < 1e-6
    np.testing.assert_array_equal(centre[1], centre[0])
    rand = baselines.random_maps(5, (8, 9), seed=1)
    assert rand.shape == (5, 8, 9) and rand.min() >= 0 and rand.max() < 1
    np.testing.assert_array_equal(baselines.random_maps(2, (8, 9), seed=1, start=3), rand[3:5])  # batching-free
    assert not np.array_equal(baselines.random_maps(1, (8, 9), seed=2), rand[:1])


def test_contract_errors_and_light_imports():
    import subprocess
    import sys

    images = np.zeros((2, 8, 8, 3), np.uint8)
    f = linear_score(np.ones((8, 8, 3)))
    for args, message in (
        ((images.astype(np.float64), np.zeros((2, 8, 8)), [0, 0]), r"images must be RGB uint8 \(B, H, W, 3\), or "
                                                                   "float32 for full-depth inputs"),
        ((images[..., :1], np.zeros((2, 8, 8)), [0, 0]), "images must be RGB uint8"),
        ((images, np.zeros((2, 4, 4)), [0, 0]), r"maps must be float32 \(B, H, W\) = \(2, 8, 8\)"),
        ((images, np.zeros((2, 8, 8)), [0]), "one class per image"),
    ):
        with pytest.raises(ValueError, match=message):
            perturbation.deletion(*args, f)
    full_depth = perturbation.deletion(images.astype(np.float32), np.zeros((2, 8, 8)), [0, 0], f, steps=2)
    assert np.array_equal(full_depth.scores, perturbation.deletion(images, np.zeros((2, 8, 8)), [0, 0], f,
                                                                   steps=2).scores)  # float32 pixels: the same curves
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        perturbation.insertion(images, np.zeros((2, 8, 8)), [0, 0], f, steps=0)
    code = (
        "import sys; from gradcam_cli.metrics import baselines, confidence, perturbation, pointing, "
        "road, sanity, scoring, stats; heavy = {'tensorflow', 'keras', 'scipy'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
