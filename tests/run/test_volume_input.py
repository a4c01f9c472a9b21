"""What a 3-D model is fed (run/volumes.model_input): --intensity on the volume's values, trilinear
resize to the model's size, then --preprocess; in float32 throughout."""

from __future__ import annotations

import numpy as np
import pytest
from reference import trilinear_numpy

from gradcam_cli.io.depth import windowed
from gradcam_cli.io.volume import Volume
from gradcam_cli.run.volumes import VolumeModel, model_input
from gradcam_cli.settings import DepthSettings, ModelSettings, RunSettings


def fed(values, size=(4, 5, 6), channels=1, invert=False, **kw):
    depth = {k: kw.pop(k) for k in ("intensity", "window") if k in kw}
    settings = RunSettings(model=ModelSettings(model="m.keras", **kw), depth=DepthSettings(**depth))
    vm = VolumeModel(None, None, size, channels, None)
    volume = Volume(values, np.eye(4), invert=invert, value_range=(-1024.0, 3071.0) if invert else None)
    return model_input(volume, vm, settings, "v.nii")


@pytest.fixture
def values():
    return np.random.default_rng(0).normal(40, 300, (8, 10, 12)).astype(np.float32)


def test_raw_values_resized_trilinearly_then_preprocessed(values):
    expected = trilinear_numpy(values.astype(np.float64), (4, 5, 6))
    np.testing.assert_allclose(fed(values)[0, ..., 0], expected, rtol=1e-5, atol=1e-3)  # HU-sized values, float32
    np.testing.assert_allclose(fed(values, preprocessing="mean_std", mean=40.0, std=300.0)[0, ..., 0],
                               (expected - 40) / 300, atol=1e-5)
    assert fed(values).shape == (1, 4, 5, 6, 1) and fed(values).dtype == np.float32


def test_window_and_range_map_onto_0_255(values):
    window = fed(values, intensity="window", window=(40.0, 400.0), preprocessing="scale")[0, ..., 0]
    expected = trilinear_numpy(windowed(values, (40.0, 400.0)).astype(np.float64), (4, 5, 6)) / 255
    np.testing.assert_allclose(window, expected, atol=1e-5)
    ranged = fed(values, size=(8, 10, 12), intensity="range")[0, ..., 0]
    lo, hi = values.min(), values.max()
    np.testing.assert_allclose(ranged, (values - lo) * 255 / (hi - lo), atol=1e-3)


def test_a_free_dimension_keeps_the_volumes_size(values):
    assert fed(values, size=(None, 5, None)).shape == (1, 8, 5, 12, 1)


def test_a_monochrome1_series_is_inverted_on_the_models_scale(values):
    """As single MONOCHROME1 files (io/depth.py): raw ``lo + hi - v`` over the stored range (here
    -1024..3071), window and range ``255 - x``; before the resize (linear: the same either way) and
    before --preprocess. float32 sums of HU-sized values: 1e-3 absolute."""
    raw = fed(values, invert=True)
    np.testing.assert_allclose(raw, (-1024.0 + 3071.0) - fed(values), atol=1e-3)
    for kw in ({"intensity": "window", "window": (40.0, 400.0)}, {"intensity": "range"}):
        np.testing.assert_allclose(fed(values, invert=True, preprocessing="scale", **kw),
                                   (255.0 - fed(values, **kw)) / 255.0, atol=1e-5)
