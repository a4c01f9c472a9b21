"""Full-depth grey images (io/depth.py, issue 25): a 16-bit PNG / TIFF reaches the model from its
16-bit values, never through 8 bits; the overlays' view is windowed. No model is built here: the
model input is what ``decode_item`` makes for a profile."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import eight_bit_copies, full_range_values
from PIL import Image

from gradcam_cli.config.profiles import Profile
from gradcam_cli.io.depth import Scan, model_values, prepare, view_rgb, view_window, windowed
from gradcam_cli.io.discover import InputRef
from gradcam_cli.run.step import Item, decode_item
from gradcam_cli.settings import DepthSettings

#: float32 rounding of values on the 0..255 scale, normalised to about -1..1: the chain (a float32
#: value times 255 / 65535, then the profile's formula in float32) rounds a few times at 6e-8
#: relative; 1e-6 is ten times that. One 8-bit level after 'tf' normalising is 1 / 127.5 = 0.0078.
ROUNDING = 1e-6


def profile(preprocessing: str = "tf", channels: int = 3, size: int = 32) -> Profile:
    return Profile(name="t", builder=None, input_size=(size, size), target_layer="auto", preprocessing=preprocessing,
                   channels=channels)


def tf_formula(values: np.ndarray) -> np.ndarray:
    """The reference: the 16-bit values mapped onto 0..255 in float64, then 'tf' (x / 127.5 - 1)."""
    return np.asarray(values, np.float64) * (255.0 / 65535.0) / 127.5 - 1.0


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_a_16_bit_image_reaches_the_model_at_full_depth(tmp_path, ext):
    values = full_range_values()
    path = tmp_path / f"scan.{ext}"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16")  # a 16-bit grey file, as a scanner writes it

    item = decode_item(InputRef(str(path), "scan"), profile("tf"))
    assert isinstance(item, Item) and item.model_input.dtype == np.float32
    expected = np.repeat(tf_formula(values)[..., None], 3, axis=2)
    assert np.abs(item.model_input - expected).max() <= ROUNDING
    for levels in eight_bit_copies(values):  # the power of this test: any 8-bit copy of the file fails it
        assert np.abs(levels / 127.5 - 1.0 - expected[..., 0]).max() > 100 * ROUNDING
    assert item.full_depth == {"format": "PNG" if ext == "png" else "TIFF", "bits": 16, "intensity": "range",
                               "window": item.full_depth["window"], "window_from": "percentiles",
                               "value_range": [0.0, 65535.0]}


def test_a_grey_model_gets_the_values_as_its_one_channel(tmp_path):
    values = full_range_values()
    Image.fromarray(values).save(tmp_path / "scan.png")
    item = decode_item(InputRef(str(tmp_path / "scan.png"), "scan"), profile("none", channels=1))
    assert item.model_input.shape == (32, 32, 1)
    reference = np.asarray(values, np.float64) * (255.0 / 65535.0)
    assert np.abs(item.model_input[..., 0] - reference).max() <= 255 * ROUNDING  # 'none': on the 0..255 scale
    assert item.pixels.dtype == np.float32 and np.array_equal(item.pixels[..., 0], item.model_input[..., 0])


def test_an_8_bit_png_keeps_the_8_bit_path(tmp_path):
    Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)).save(tmp_path / "photo.png")
    item = decode_item(InputRef(str(tmp_path / "photo.png"), "photo"), profile("tf"))
    assert item.full_depth is None and item.pixels.dtype == np.uint8


def scan(values, value_range=(0.0, 4095.0), invert=False, window=None) -> Scan:
    return Scan(values=np.asarray(values, np.float32), value_range=value_range, window=window, invert=invert)


def test_the_intensity_rules_and_monochrome1():
    values = np.array([[0.0, 1000.0], [2048.0, 4095.0]])
    window = (1000.0, 2000.0)  # 0 .. 2000
    ranged = values * 255.0 / 4095.0
    windowed_ref = np.clip((values - 0.0) / 2000.0 * 255.0, 0, 255)
    assert np.allclose(model_values(scan(values), "range", window), ranged, atol=1e-4)
    assert np.allclose(model_values(scan(values), "window", window), windowed_ref, atol=1e-4)
    assert np.array_equal(model_values(scan(values), "raw", window), values.astype(np.float32))
    # MONOCHROME1: low values bright; inverted on the model's scale
    assert np.allclose(model_values(scan(values, invert=True), "range", window), 255.0 - ranged, atol=1e-4)
    assert np.allclose(model_values(scan(values, invert=True), "window", window), 255.0 - windowed_ref, atol=1e-4)
    assert np.array_equal(model_values(scan(values, invert=True), "raw", window), (4095.0 - values).astype(np.float32))
    assert np.array_equal(view_rgb(scan(values, invert=True), window), 255 - view_rgb(scan(values), window))


def test_the_view_window_is_the_option_the_file_or_the_percentiles():
    rng = np.random.default_rng(0)
    values = rng.normal(1000.0, 300.0, (64, 64))
    lo, hi = np.percentile(values.astype(np.float32), [1, 99])
    (centre, width), source = view_window(scan(values), None)
    assert source == "percentiles" and np.isclose(centre, (lo + hi) / 2) and np.isclose(width, hi - lo)
    reference = np.rint(np.clip((values - lo) / (hi - lo) * 255.0, 0, 255))
    assert np.abs(view_rgb(scan(values), (centre, width))[..., 0] - reference).max() <= 1  # rounding at .5
    assert view_window(scan(values, window=(40.0, 400.0)), None) == ((40.0, 400.0), "file")
    assert view_window(scan(values, window=(40.0, 400.0)), (50.0, 100.0)) == ((50.0, 100.0), "option")
    assert view_window(scan(np.full((4, 4), 7.0)), None) == ((7.0, 1.0), "percentiles")  # flat: no division by 0
    assert np.array_equal(windowed(np.array([-160.0, 40.0, 240.0, 900.0]), (40.0, 400.0)), [0.0, 127.5, 255.0, 255.0])


def test_prepare_records_what_was_applied():
    values, view, fields = prepare(scan(np.array([[0.0, 4095.0]])), DepthSettings(intensity="window", window=(5, 10)))
    assert fields == {"intensity": "window", "window": [5.0, 10.0], "window_from": "option"}  # 0 .. 10
    assert np.array_equal(values, [[0.0, 255.0]]) and view.shape == (1, 2, 3) and view.dtype == np.uint8
