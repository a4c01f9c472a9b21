"""3-D CAMs (engine/volume.py): each method equals its formula on one GradientTape within 1e-5, and
a Conv3D model trained here on blob volumes puts each method's peak in the blob."""

from __future__ import annotations

import numpy as np
import pytest
from builders import blob_volumes, conv3d_model, in_blob, trained_conv3d
from reference import scorecam_3d, trilinear_numpy, volume_method_map, volume_tape

from gradcam_cli.engine.volume import VolumeExplainer, trilinear
from gradcam_cli.methods.volumes import VOLUME_METHODS
from gradcam_cli.models.split import split_model

GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam")


@pytest.fixture(scope="module")
def untrained():
    return conv3d_model()


def test_the_auto_layer_of_a_3d_model_is_its_last_5d_layer(untrained):
    split = split_model(untrained, "auto")
    assert split.layer_name == "target" and split.feature_shape == (16, 16, 16, 8) and split.cut


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_each_3d_method_equals_its_formula_on_one_tape(untrained, method):
    """Maps are in [0, 1]: 1e-5 is float32 rounding of sums over 4,096 positions x 8 channels."""
    x, _, _ = blob_volumes(3, seed=5)
    out = VolumeExplainer(split_model(untrained, "target"), top=2, method=method)(x)
    assert out.method_maps.shape == (3, 2, 1, 16, 16, 16)
    for b in range(3):
        for j, c in enumerate(out.classes[b]):
            acts, grads = volume_tape(untrained, "target", x[b], int(c))
            expected = volume_method_map(method, acts, grads)
            assert expected.max() == 1.0  # a non-empty reference: the comparison means something
            np.testing.assert_allclose(out.method_maps[b, j, 0], expected, atol=1e-5, err_msg=f"{method} {b} {c}")


def test_scorecam_3d_equals_its_formula_and_chunks_do_not_change_it(untrained):
    from gradcam_cli.settings import MethodOptions

    x, _, _ = blob_volumes(2, seed=6)
    split = split_model(untrained, "target")
    whole = VolumeExplainer(split, classes=[1], method="scorecam")(x)
    chunked = VolumeExplainer(split, classes=[1], method="scorecam", options=MethodOptions(scorecam_batch=3))(x)
    np.testing.assert_allclose(chunked.method_maps, whole.method_maps, atol=1e-6)
    for b in range(2):
        np.testing.assert_allclose(whole.method_maps[b, 0, 0], scorecam_3d(untrained, "target", x[b], 1), atol=1e-5)
    mean = VolumeExplainer(split, classes=[1], method="scorecam", options=MethodOptions(scorecam_baseline="mean"))(x)
    for b in range(2):  # masks toward the volume's mean (--scorecam-baseline mean)
        np.testing.assert_allclose(mean.method_maps[b, 0, 0], scorecam_3d(untrained, "target", x[b], 1, toward="mean"),
                                   atol=1e-5)
    assert not np.allclose(mean.method_maps, whole.method_maps, atol=1e-3)


def test_several_methods_in_one_pass_equal_each_alone(untrained):
    x, _, _ = blob_volumes(2, seed=7)
    split = split_model(untrained, "target")
    both = VolumeExplainer(split, top=1, method=["layercam", "gradcam", "eigencam"])(x)
    for m, name in enumerate(["layercam", "gradcam", "eigencam"]):
        alone = VolumeExplainer(split, top=1, method=name)(x)
        np.testing.assert_allclose(both.method_maps[:, :, m], alone.method_maps[:, :, 0], atol=1e-6)


def test_batches_of_any_size_trace_once_and_equal_single_volumes(untrained):
    x, _, _ = blob_volumes(3, seed=9)
    explainer = VolumeExplainer(split_model(untrained, "target"), top=2, method=["gradcam++", "hirescam"])
    batch = explainer(x)
    for b in range(3):
        single = explainer(x[b:b + 1])
        np.testing.assert_allclose(single.method_maps[0], batch.method_maps[b], atol=1e-5)
        np.testing.assert_array_equal(single.classes[0], batch.classes[b])
    assert explainer.trace_count() == 1


def test_trilinear_is_the_separable_half_pixel_interpolation():
    rng = np.random.default_rng(0)
    a = rng.random((1, 3, 4, 5, 2)).astype(np.float32)
    got = trilinear(a, (7, 9, 11)).numpy()[0]
    np.testing.assert_allclose(got, trilinear_numpy(a[0].astype(np.float64), (7, 9, 11)), atol=1e-6)


def test_methods_not_defined_on_volumes_are_refused_in_one_line(untrained):
    with pytest.raises(ValueError, match=r"^method 'guided' is not defined on volumes \(3-D models\); use one of: "):
        VolumeExplainer(split_model(untrained, "target"), top=1, method="guided")


@pytest.fixture(scope="module")
def held_out():
    x, y, centres = blob_volumes(80, seed=2)
    return x[y == 1], centres[y == 1]


@pytest.mark.parametrize("method", VOLUME_METHODS)
def test_the_3d_map_peaks_in_the_blob(method, held_out):
    """>= 85% of held-out blob volumes: the map's peak voxel (the target layer is at full
    resolution) lies in the blob's ball."""
    x, centres = held_out
    model = trained_conv3d()
    out = VolumeExplainer(split_model(model, "target"), classes=[1], method=method)(x)
    hits = [in_blob(np.unravel_index(np.argmax(m), m.shape), c) for m, c in zip(out.method_maps[:, 0, 0], centres)]
    assert np.mean(hits) >= 0.85, f"{method}: {np.mean(hits):.2f} of {len(hits)}"


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_centre_on_sums_the_weights_times_the_centred_activations(untrained, method):
    """``--centre-activations on`` (a CNN's default is off): weights from A and g as defined, times A less each
    channel's mean over the volume's positions; 1e-5 as above."""
    from gradcam_cli.settings import MethodOptions

    x, _, _ = blob_volumes(2, seed=8)
    split = split_model(untrained, "target")
    explainer = VolumeExplainer(split, classes=[1], method=method, options=MethodOptions(centre_activations="on"))
    assert explainer.centred and not VolumeExplainer(split, classes=[1], method=method).centred
    out = explainer(x)
    for b in range(2):
        acts, grads = volume_tape(untrained, "target", x[b], 1)
        centred = acts - acts.mean((0, 1, 2))
        weights = grads.mean((0, 1, 2)) if method == "gradcam" else np.maximum(grads, 0)
        raw = np.maximum((centred * weights).sum(-1), 0)
        np.testing.assert_allclose(out.method_maps[b, 0, 0], raw / raw.max(), atol=1e-5, err_msg=f"{method} {b}")


def test_centre_on_reaches_scorecam_3d(untrained):
    """Score-CAM's weights as defined, times the centred activations (its masks ignore a shift)."""
    from gradcam_cli.settings import MethodOptions

    x, _, _ = blob_volumes(2, seed=9)
    out = VolumeExplainer(split_model(untrained, "target"), classes=[1], method="scorecam",
                          options=MethodOptions(centre_activations="on"))(x)
    for b in range(2):
        expected = scorecam_3d(untrained, "target", x[b], 1, centred=True)
        assert np.abs(expected - scorecam_3d(untrained, "target", x[b], 1)).max() > 0.05  # centring matters here
        np.testing.assert_allclose(out.method_maps[b, 0, 0], expected, atol=1e-5)
