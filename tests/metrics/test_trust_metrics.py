"""Occlusion agreement and MaxBoxAcc against independent references (issue 26 item 3).

The references here are written apart from gradcam_cli.metrics: occluded images built patch by
patch with explicit loops, one eager model call each, SciPy's ``spearmanr``; box accuracy
worked out by hand on maps whose boxes are known, and the centre Gaussian's boxes from its
formula.
"""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import invoke
from PIL import Image
from scipy.stats import spearmanr

from gradcam_cli.metrics import baselines, boxacc, confidence, occlusion, stats
from gradcam_cli.metrics.pointing import Box
from gradcam_cli.metrics.registry import MetricBatch, default_metric_names, get_metric
from gradcam_cli.metrics.scoring import make_score_fn
from gradcam_cli.settings import EvalSettings

SIZE = 28


def tiny_model(seed: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="tanh")(x)
    x = keras.layers.Flatten()(x)  # position-dependent, so occluding different patches differs
    return keras.Model(inp, keras.layers.Dense(3)(x))


def identity(cam, size):
    assert cam.shape == tuple(size)
    return cam


# ---------------------------------------------------------------------------
# occlusion


def test_occlusion_agreement_equals_a_naive_per_window_loop():
    model = tiny_model()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, SIZE, SIZE, 3)).astype(np.uint8)
    maps = rng.random((5, SIZE, SIZE)).astype(np.float32)
    classes = np.array([0, 1, 2, 1, 0], np.int32)
    score_fn = make_score_fn(model, lambda p: p / 255.0, chunk=16)  # 16 does not divide 5 * 50: a short chunk

    got = occlusion.occlusion_agreement(images, maps, classes, score_fn)

    def score(x, c):  # one eager call per image, softmax in float64
        logits = np.asarray(model(tf.constant(x[None] / 255.0, tf.float32), training=False), np.float64)[0]
        e = np.exp(logits - logits.max())
        return e[c] / e.sum()

    grid, edges = 7, [round(i * SIZE / 7) for i in range(8)]  # 28 px: 4 px patches
    for i in range(5):
        base = score(images[i].astype(np.float64), classes[i])
        mean = [images[i][..., ch].astype(np.float64).mean() for ch in range(3)]
        drops, means = [], []
        for r in range(grid):
            for c in range(grid):
                x = images[i].astype(np.float64)
                for y in range(edges[r], edges[r + 1]):
                    for xx in range(edges[c], edges[c + 1]):
                        x[y, xx] = mean
                drops.append(base - score(x, classes[i]))
                means.append(maps[i, edges[r]:edges[r + 1], edges[c]:edges[c + 1]].astype(np.float64).mean())
        want = spearmanr(means, drops).statistic
        # float32 model inputs and a batched compiled pass vs float64 eager: drops agree to ~1e-7,
        # and a rank correlation only moves when two drops swap order (none are that close here)
        assert got[i] == pytest.approx(want, abs=1e-6), i
    assert np.all(np.abs(got) <= 1.0)


def test_a_map_equal_to_the_occlusion_drops_agrees_perfectly_and_its_inverse_not():
    model = tiny_model(seed=5)
    images = np.random.default_rng(1).integers(0, 256, (2, SIZE, SIZE, 3)).astype(np.uint8)
    classes = np.array([1, 2], np.int32)
    score_fn = make_score_fn(model, lambda p: p / 255.0)
    drops = occlusion.occlusion_drops(images, classes, score_fn)
    edges = occlusion.patch_edges(SIZE)
    maps = np.zeros((2, SIZE, SIZE), np.float32)
    for k in range(49):
        r, c = divmod(k, 7)
        maps[:, edges[r]:edges[r + 1], edges[c]:edges[c + 1]] = drops[:, k, None, None]
    maps = (maps - maps.min()) / (maps.max() - maps.min())
    assert occlusion.occlusion_agreement(images, maps, classes, score_fn) == pytest.approx([1.0, 1.0], abs=1e-9)
    assert occlusion.occlusion_agreement(images, 1 - maps, classes, score_fn) == pytest.approx([-1.0, -1.0], abs=1e-9)
    assert occlusion.occlusion_agreement(images, np.ones_like(maps), classes, score_fn) == pytest.approx([0.0, 0.0])


def test_occlusion_is_asked_for_by_name_and_computed_once_per_batch():
    assert "occlusion" not in default_metric_names()  # 49 forward passes per image: asked for by name
    calls = []

    def score_fn(pixels, classes):
        calls.append(len(pixels))
        return np.asarray(pixels, np.float64).mean(axis=(1, 2, 3))

    pixels = np.random.default_rng(2).integers(0, 256, (3, 14, 14, 3)).astype(np.uint8)
    rng = np.random.default_rng(3)
    metric = get_metric("occlusion")
    for _ in range(3):  # three methods' maps of one batch: the occlusion answer is scored once
        batch = MetricBatch(pixels, rng.random((3, 14, 14)).astype(np.float32), None, np.zeros(3, np.int32),
                            [(14, 14)] * 3, [None] * 3, [0, 1, 2], identity)
        metric.fn(batch, score_fn, EvalSettings())
    assert sum(calls) == 3 * 50


# ---------------------------------------------------------------------------
# average drop / increase, torch-cam's protocol


def test_torchcam_confidence_masks_the_preprocessed_input_as_torchcams_script():
    rng = np.random.default_rng(6)
    w = rng.normal(0, 0.02, (SIZE * SIZE * 3, 3))
    mean, std = np.array([124.0, 116.0, 104.0]), np.array([58.0, 57.0, 57.0])

    def prep(p):  # ImageNet-style mean / std: pixel 0 is not input 0
        return (np.asarray(p, np.float64) - mean) / std

    def probs(inputs):  # torch-cam's _get_probs: softmax of the logits
        logits = inputs.reshape(len(inputs), -1) @ w
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    inp = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inp, keras.layers.Dense(3, use_bias=False)(keras.layers.Flatten()(inp)))
    model.layers[-1].set_weights([w.astype(np.float32)])
    score_fn = make_score_fn(model, lambda p: ((p - mean) / std).astype(np.float32))
    images = rng.integers(0, 256, (6, SIZE, SIZE, 3)).astype(np.uint8)
    maps = rng.random((6, SIZE, SIZE)).astype(np.float32)
    classes = probs(prep(images)).argmax(axis=1)

    x = prep(images)
    p, p_masked = probs(x)[np.arange(6), classes], probs(maps[..., None] * x)[np.arange(6), classes]
    drop = np.maximum(p - p_masked, 0) / (p + 1e-7)  # torch.relu(probs - masked_probs).div(probs + 1e-7)
    got = confidence.confidence_on_inputs(images, maps, classes, score_fn)
    # float32 model vs float64 reference: probabilities agree to ~1e-6
    np.testing.assert_allclose(got.drop, drop, atol=1e-5)
    np.testing.assert_array_equal(got.increase, p < p_masked)
    # masking the pixels instead (the `confidence` metric) is another figure on this input scale
    pixel_space = confidence.confidence(images, maps, classes, score_fn)
    assert np.abs(pixel_space.drop - drop).max() > 1e-2


# ---------------------------------------------------------------------------
# MaxBoxAcc


def two_level_map() -> np.ndarray:
    """1 on A = [4, 12) x [4, 12), 0.5 on the rest of B = [2, 16) x [2, 16), 0 elsewhere (20 x 20)."""
    cam = np.zeros((20, 20), np.float32)
    cam[2:16, 2:16] = 0.5
    cam[4:12, 4:12] = 1.0
    return cam


def test_box_accuracy_curve_and_maxboxacc_by_hand():
    # 8-bit: A = 255, ring = 127. int(tau * 255) < 127 for tau <= 0.49: pixels > it are all of B;
    # from tau = 0.50 (int(127.5) = 127, strict >) only A. So box B at 50 thresholds, A at 50.
    a, b = Box("1", 4, 4, 12, 12), Box("1", 2, 2, 16, 16)
    maps = np.stack([two_level_map()] * 4)
    truth = [[a], [b], [a], [Box("0", 4, 4, 12, 12)]]  # the last: a box of another class only
    hits = boxacc.box_hits(maps, [(20, 20)] * 4, truth, ["1"] * 4, upsample=identity)
    np.testing.assert_array_equal(hits[0], [0.0] * 50 + [1.0] * 50)
    np.testing.assert_array_equal(hits[1], [1.0] * 50 + [0.0] * 50)
    np.testing.assert_array_equal(hits[3], 0.0)
    # no threshold boxes both A and B: the best threshold holds 2 of the 3 class-1 images... of 4
    assert boxacc.max_box_acc(hits) == pytest.approx(100 * 2 / 4)
    assert boxacc.max_box_acc(hits[:2]) == pytest.approx(50.0)
    assert boxacc.threshold_box(np.zeros((5, 5)), 0.3) is None  # an all-zero map has no box


def test_the_centre_baseline_scores_what_its_geometry_implies():
    # the centre Gaussian exp(-d^2 / 2 s^2), s = 16 on 64 x 64: the pixels above tau (8-bit) form a
    # disc of radius s * sqrt(-2 ln(t / 255)), t = int(tau * 255); its box is a square of side ~2r.
    # Against a centred square of half-side R, IoU = (r / R)^2 or its inverse: a hit while
    # R / sqrt(2) <= r <= R sqrt(2). Against a corner quarter no centred square reaches IoU 0.5.
    size, sigma, half = 64, 16.0, 14
    centre = baselines.centre_maps(1, (size, size))
    lo, hi = size // 2 - half, size // 2 + half
    hits = boxacc.box_hits(centre, [(size, size)], [[Box("0", lo, lo, hi, hi)]], ["0"], upsample=identity)[0]
    radius = [sigma * math.sqrt(-2 * math.log(max(int(t * 255), 1) / 255)) for t in boxacc.THRESHOLDS]
    expected = np.array([half / math.sqrt(2) <= r <= half * math.sqrt(2) for r in radius], float)
    assert hits.max() == 1.0
    # pixel grids move each disc's edge by under a pixel: thresholds near the two ends may differ
    assert np.abs(hits - expected).sum() <= 4, (np.flatnonzero(hits), np.flatnonzero(expected))
    corner = boxacc.box_hits(centre, [(size, size)], [[Box("0", 0, 0, 32, 32)]], ["0"], upsample=identity)
    assert boxacc.max_box_acc(corner) == 0.0


def test_maxboxacc_interval_is_a_bootstrap_of_the_statistic():
    curves = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 0], [1, 1, 0]], float)
    interval = stats.bootstrap_statistic(curves, boxacc.max_box_acc, resamples=200, seed=4)
    assert interval.mean == pytest.approx(75.0) and interval.n == 4
    assert 0.0 <= interval.low <= interval.mean <= interval.high <= 100.0
    assert stats.bootstrap_statistic(curves, boxacc.max_box_acc, resamples=200, seed=4) == interval


# ---------------------------------------------------------------------------
# through the CLI


def test_evaluate_writes_occlusion_and_maxboxacc_with_the_centre_box_beside(tmp_path):
    model = tiny_model(seed=7)
    model.save(tmp_path / "m.keras")
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)).save(tmp_path / "img" / f"s{i}.png")
    rows = [f"{tmp_path / 'img' / f's{i}.png'},{c},6,6,22,22" for i in range(3) for c in range(3)]
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    result = invoke("evaluate", tmp_path / "img", "--model", tmp_path / "m.keras", "--preprocess", "scale",
                    "--out", tmp_path / "ev", "--metrics", "occlusion,maxboxacc", "--boxes-csv", tmp_path / "boxes.csv",
                    "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    for method in ("gradcam", "random", "centre"):
        assert set(doc["aggregate"][method]) == {"occlusion", "maxboxacc"}
        assert doc["aggregate"][method]["maxboxacc"]["n"] == 3
    records = [r for r in doc["images"] if r["status"] == "ok"]
    assert len(records) == 3
    for record in records:
        assert set(record["metrics"]["centre"]) == {"occlusion", "boxacc_curve"}
        assert len(record["metrics"]["centre"]["boxacc_curve"]) == 100
    # the centre box is a centred square and the truth the centred 16 px square: some threshold hits
    curves = np.array([r["metrics"]["centre"]["boxacc_curve"] for r in records])
    assert doc["aggregate"]["centre"]["maxboxacc"]["mean"] == pytest.approx(boxacc.max_box_acc(curves)) == 100.0
    assert doc["better"]["maxboxacc"] == "higher" and doc["better"]["occlusion"] == "higher"
    assert (tmp_path / "ev" / "curves.png").is_file()  # the box-accuracy curve over the thresholds
