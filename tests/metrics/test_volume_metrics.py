"""Deletion and insertion in 3-D (metrics/volumes.py): the batched curves equal a plain per-step
reference on a small Conv3D model, the blur baseline is 2-D's kernel along three axes, the 3-D
reference maps are what they say.

The reference is written independently of gradcam_cli.metrics: the voxel order from Python's
stable ``sorted`` over (-map, C-order index), each perturbed volume built voxel by voxel, one eager
model call per volume and step, the trapezoid rule as a loop.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest
from scipy import ndimage

from gradcam_cli.metrics.volumes import (
    blur_volume,
    check_volume_metrics,
    volume_baseline,
    volume_baseline_map,
    volume_curves,
)
from gradcam_cli.metrics.scoring import make_score_fn

SIDE = (6, 5, 4)


def small_conv3d() -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((*SIDE, 2))
    x = keras.layers.Conv3D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.GlobalAveragePooling3D()(x)
    out = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inp, keras.layers.Activation("softmax")(out), name="small3d")


def naive_curve(model, volume, cam, c, base, steps, insert):
    """Scores per step and the AUC, one volume at a time (see the module docstring)."""
    voxels = [(i, j, k) for i in range(SIDE[0]) for j in range(SIDE[1]) for k in range(SIDE[2])]
    order = [v for _, v in sorted(((-float(cam[v]), n), v) for n, v in enumerate(voxels))]
    total = len(voxels)
    scores, fractions = [], []
    for step in range(steps + 1):
        count = (2 * step * total + steps) // (2 * steps)  # round half up
        x = base.copy() if insert else volume.copy()
        for v in order[:count]:
            x[v] = volume[v] if insert else base[v]
        scores.append(float(np.asarray(model(x[None], training=False))[0, c]))
        fractions.append(count / total)
    area = sum((scores[n] + scores[n + 1]) / 2 * (fractions[n + 1] - fractions[n]) for n in range(steps))
    return np.array(scores), area


@pytest.mark.parametrize("baseline", ["black", "mean", "blur"])
def test_volume_curves_equal_the_per_step_reference(baseline):
    """Three volumes, maps with ties (quantised to 4 levels), 7 steps (uneven voxel counts), both
    curves: equal to the reference within 2e-6 (probabilities in float32, the batched forward pass
    against one volume at a time: their sums differ in the last bits)."""
    model = small_conv3d()
    rng = np.random.default_rng(11)
    volumes = rng.normal(50, 20, (3, *SIDE, 2)).astype(np.float32)
    maps = (np.floor(rng.random((3, *SIDE)) * 4) / 3).astype(np.float32)
    classes = np.array([0, 2, 1])
    score_fn = make_score_fn(model, activation="linear", chunk=5)  # chunks cut across volumes
    bases = volume_baseline(volumes, baseline)
    for insert in (False, True):
        curves = volume_curves(volumes, maps, classes, score_fn, insert=insert, baseline=baseline, steps=7)
        for b in range(3):
            scores, area = naive_curve(model, volumes[b], maps[b], classes[b], bases[b], 7, insert)
            np.testing.assert_allclose(curves.scores[b], scores, atol=2e-6)
            assert abs(curves.auc[b] - area) <= 2e-6
        assert curves.fractions[0] == 0 and curves.fractions[-1] == 1


def test_the_blur_baseline_is_2d_blurs_kernel_along_three_axes():
    """One slice deep (D = 1): each plane is cv2.GaussianBlur(11 x 11, sigma 5, BORDER_REFLECT_101)
    of it (float32 sums: 1e-4 on values ~100). Deeper: scipy's correlate1d with the same taps along
    each axis in 'mirror' mode (reflect-101), float64 against float32 output: 1e-4."""
    rng = np.random.default_rng(2)
    plane = rng.normal(100, 30, (9, 13, 1, 2)).astype(np.float32)
    out = blur_volume(plane)
    for ch in range(2):
        np.testing.assert_allclose(out[:, :, 0, ch], cv2.GaussianBlur(plane[:, :, 0, ch], (11, 11), 5.0, sigmaY=5.0),
                                   atol=1e-4)
    deep = rng.normal(100, 30, (7, 9, 12, 1)).astype(np.float32)
    taps = cv2.getGaussianKernel(11, 5.0, cv2.CV_64F).ravel()
    expected = deep.astype(np.float64)
    for axis in range(3):
        expected = ndimage.correlate1d(expected, taps, axis=axis, mode="mirror")
    np.testing.assert_allclose(blur_volume(deep), expected, atol=1e-4)


def test_the_reference_maps_and_the_mean_baseline():
    centre = volume_baseline_map("centre", (5, 7, 9))
    assert centre.shape == (5, 7, 9) and centre[2, 3, 4] == 1.0
    sigma = 0.25 * 5
    assert abs(centre[0, 3, 4] - np.exp(-4 / (2 * sigma * sigma))) < 1e-7  # 2 voxels off the centre along i
    first = volume_baseline_map("random", (3, 4, 5), seed=7, index=2)
    assert np.array_equal(first, np.random.default_rng((7, 2)).random((3, 4, 5), dtype=np.float32))
    assert not np.array_equal(first, volume_baseline_map("random", (3, 4, 5), seed=7, index=3))
    v = np.random.default_rng(0).random((2, 3, 4, 5, 2)).astype(np.float32)
    np.testing.assert_allclose(volume_baseline(v, "mean")[1, 2, 3, 4], v[1].mean(axis=(0, 1, 2)), rtol=1e-6)


def test_metrics_of_2d_images_are_refused_by_name():
    check_volume_metrics(["deletion", "insertion"])
    with pytest.raises(ValueError, match=r"^metric 'road' is not defined on volumes \(3-D models\): it rests on 2-D "
                                         r"images; use --metrics deletion,insertion$"):
        check_volume_metrics(["deletion", "road"])
