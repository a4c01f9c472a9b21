"""Receptive-field geometry of target layers, and the upsampling that uses it.

Hand-computed geometries of small stacks (every number derived in the comments), the
shipped 'same' backbones (stretched, byte-identical to cv2.resize), an empirical
receptive field (one lit input pixel at a time through positive weights), and the
issue's acceptance test: a 'valid'-padding CNN trained here, whose Grad-CAM peak must
land on the object once cells sit at their receptive-field centres.
"""

from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from gradcam_cli.models.build import build_model
from gradcam_cli.errors import ModelError, OptionError
from gradcam_cli.models.geometry import (
    RECEPTIVE_FIELD,
    STRETCH,
    Geometry,
    cell_to_image,
    geometry_from_json,
    stretch_geometry,
    upsample,
)
from gradcam_cli.models.layer_walk import layer_geometry

L = keras.layers


def stack(size, *layers, channels=3):
    """A functional model: input (H, W, channels) through ``layers`` in a chain."""
    inp = keras.Input((*size, channels))
    x = inp
    for layer in layers:
        x = layer(x)
    return keras.Model(inp, x)


def assert_geometry(g, kind, stride, offset, map_size, rf_stride=None, rf_offset=None):
    assert g.kind == kind, g.note
    assert g.map_size == map_size
    np.testing.assert_allclose(g.stride, stride, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.offset, offset, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.rf_stride, rf_stride or stride, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.rf_offset, rf_offset or offset, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# hand-computed stacks. Continuous coordinates: input pixel k spans [k, k+1), centre k + 0.5.
# A conv / pool with kernel span e = d(k-1)+1 and left padding p puts output cell o at input
# cell s*o + (e-1)/2 - p; TensorFlow 'same' pads p = max((ceil(n/s)-1)*s + e - n, 0) // 2.

CASES = {
    # y: 32 -> 30 -> 15 -> 11 -> 4; x: 40 -> 38 -> 19 -> 15 -> 6
    # centre: 0.5 +1 (conv3) +0.5 (pool, scale 2) +2*2 (conv3 d2) +2*2 (conv5 s2, scale 4) = 10
    "valid": ((32, 40), [L.Conv2D(2, 3), L.MaxPooling2D(), L.Conv2D(2, 3, dilation_rate=2),
                         L.Conv2D(2, 5, strides=2, name="t")],
              (RECEPTIVE_FIELD, (4, 4), (10, 10), (4, 6))),
    # y: 16 -> 16 -> 8 -> 4 (pad 0 before: +1*2); x: 14 -> 14 -> 7 -> 4 (pad 1 before: +0)
    # rf centre y 0.5 +0.5 +2 = 3, x 0.5 +0.5 +0 = 1; 'same' sizes -> stretch 16/4, 14/4
    "same_stride2_even_odd": ((16, 14), [L.Conv2D(2, 3, padding="same"), L.MaxPooling2D(),
                                         L.Conv2D(2, 3, strides=2, padding="same", name="t")],
                              (STRETCH, (4, 3.5), (2, 1.75), (4, 4), (4, 4), (3, 1))),
    # 9 -> avg 3/2 same (pad 1: +0) -> 5 -> max 2/1 same (pad 0: +0.5*2) -> 5; rf 0.5 +0 +1 = 1.5
    "pool_same": ((9, 9), [L.AveragePooling2D(3, 2, padding="same"), L.MaxPooling2D(2, 1, padding="same", name="t")],
                  (STRETCH, (1.8, 1.8), (0.9, 0.9), (5, 5), (2, 2), (1.5, 1.5))),
    # y: 20+3 = 23 -> 11, x: 23 -> 11, but 'same' would give 10: receptive field
    # y 0.5 -1 +1 = 0.5; x 0.5 -3 +1 = -1.5
    "zero_padding": ((20, 20), [L.ZeroPadding2D(((1, 2), (3, 0))), L.Conv2D(2, 3, strides=2, name="t")],
                     (RECEPTIVE_FIELD, (2, 2), (0.5, -1.5), (11, 11))),
    # the MobileNet / Lite0 pattern: explicit TF-'same' padding + 'valid' strided conv
    # y: 16 + (0,1) -> 8 = ceil(16/2): 0.5 +1 = 1.5; x: 15 + (1,1) -> 8 = ceil(15/2): 0.5 -1 +1 = 0.5
    "explicit_same": ((16, 15), [L.ZeroPadding2D(((0, 1), (1, 1))), L.Conv2D(2, 3, strides=2, name="t")],
                      (STRETCH, (2, 1.875), (1, 0.9375), (8, 8), (2, 2), (1.5, 0.5))),
    # 16 -> conv3 -> 14 (1.5) -> padded back to 16 after: the size is 'same' again, the cells are not
    "valid_then_padded": ((16, 16), [L.Conv2D(2, 3), L.ZeroPadding2D(((0, 2), (0, 2)), name="t")],
                          (RECEPTIVE_FIELD, (1, 1), (1.5, 1.5), (16, 16))),
    # y: 12 -2 -1 = 9 -> 7: 0.5 +2 +1 = 3.5; x: 12 -0 -3 = 9 -> 7: 0.5 +0 +1 = 1.5
    "cropping": ((12, 12), [L.Cropping2D(((2, 1), (0, 3))), L.Conv2D(2, 3, name="t")],
                 (RECEPTIVE_FIELD, (1, 1), (3.5, 1.5), (7, 7))),
    # 21 -> dw5 s2 -> 9 (0.5 +2 = 2.5, scale 2) -> sep3 d2 -> 5 (2.5 +2*2 = 6.5)
    "depthwise_separable": ((21, 21), [L.DepthwiseConv2D(5, strides=2),
                                       L.SeparableConv2D(2, 3, dilation_rate=2, name="t")],
                            (RECEPTIVE_FIELD, (2, 2), (6.5, 6.5), (5, 5))),
    # 8 -> conv3 s2 -> 3 (1.5, scale 2) -> transposed 3/2 valid -> 7: cell o reads input (o - 1)/2:
    # 1.5 + 2*(-0.5) = 0.5, scale 1; 'same' would give 8: receptive field
    "transposed_valid": ((8, 8), [L.Conv2D(2, 3, strides=2), L.Conv2DTranspose(2, 3, strides=2, name="t")],
                         (RECEPTIVE_FIELD, (1, 1), (0.5, 0.5), (7, 7))),
    # 8 -> conv3 s2 same (pad 0: 1.5) -> 4 -> transposed 4/2 same -> 8, pad (3*2+4-8)//2 = 1:
    # o reads input (o + 1 - 1.5)/2: 1.5 + 2*(-0.25) = 1.0, scale 1; sizes 'same' -> stretch
    "transposed_same": ((8, 8), [L.Conv2D(2, 3, strides=2, padding="same"),
                                 L.Conv2DTranspose(2, 4, strides=2, padding="same", name="t")],
                        (STRETCH, (1, 1), (0.5, 0.5), (8, 8), (1, 1), (1, 1))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hand_computed_stacks(case):
    size, layers, expected = CASES[case]
    assert_geometry(layer_geometry(stack(size, *layers), "t"), *expected)


def test_nested_model_paths():
    # outer 24 -> conv3 -> 22 (1.5); inner: conv3 s2 -> 10 (2.5, scale 2), pool -> 5 (3.5, scale 4)
    inner = keras.Sequential([keras.Input((22, 22, 2)), L.Conv2D(2, 3, strides=2, name="inner_conv"),
                              L.MaxPooling2D(name="inner_pool")], name="inner")
    model = stack((24, 24), L.Conv2D(2, 3, name="stem"), inner, L.Conv2D(2, 1, name="after"))
    assert_geometry(layer_geometry(model, "inner/inner_conv"), RECEPTIVE_FIELD, (2, 2), (2.5, 2.5), (10, 10))
    assert_geometry(layer_geometry(model, "inner_conv"), RECEPTIVE_FIELD, (2, 2), (2.5, 2.5), (10, 10))
    assert_geometry(layer_geometry(model, "inner"), RECEPTIVE_FIELD, (4, 4), (3.5, 3.5), (5, 5))
    assert_geometry(layer_geometry(model, "after"), RECEPTIVE_FIELD, (4, 4), (3.5, 3.5), (5, 5))


def test_branches_that_agree_merge():
    # a: conv3, conv3 -> 12 at 2.5; b: conv5 -> 12 at 2.5; add, concatenate; a squeeze-excitation
    # branch (pooled: no positions) multiplies in
    inp = keras.Input((16, 16, 3))
    a = L.Conv2D(4, 3)(L.Conv2D(4, 3)(inp))
    b = L.Conv2D(4, 5)(inp)
    x = L.Concatenate()([L.Add()([a, b]), keras.ops.relu(b * 0.5)])  # keras.ops on KerasTensors too
    se = L.Reshape((1, 1, 8))(L.Dense(8, activation="sigmoid")(L.GlobalAveragePooling2D()(x)))
    out = L.Activation("relu", name="t")(L.BatchNormalization()(L.Multiply()([x, se])))
    assert_geometry(layer_geometry(keras.Model(inp, out), "t"), RECEPTIVE_FIELD, (1, 1), (2.5, 2.5), (12, 12))


def test_branches_that_disagree_fall_back_to_the_stretch():
    # a: conv3 -> 14 at 1.5; b: crop 2 from the bottom / right -> 14 at 0.5: added, misaligned
    inp = keras.Input((16, 16, 3))
    x = L.Add(name="merge")([L.Conv2D(3, 3)(inp), L.Cropping2D(((0, 2), (0, 2)))(inp)])
    g = layer_geometry(keras.Model(inp, L.Conv2D(2, 1, name="t")(x)), "t")
    assert g.kind == STRETCH and g.map_size == (14, 14) and g.rf_offset is None
    assert g.stride == (16 / 14, 16 / 14) and "'merge'" in g.note and "different places" in g.note


@pytest.mark.parametrize(
    "make, map_size",
    [(lambda: L.UpSampling2D(2, name="odd"), (26, 26)), (lambda: L.Resizing(10, 12, name="odd"), (8, 10))],
)
def test_unknown_spatial_layers_fall_back_to_the_stretch(make, map_size):
    layer = make()  # 16 -> conv3 -> 14 -> layer -> conv3 -> map_size
    g = layer_geometry(stack((16, 16), L.Conv2D(2, 3), layer, L.Conv2D(2, 3, name="t")), "t")
    assert g.kind == STRETCH and "'odd'" in g.note and type(layer).__name__ in g.note
    assert g.map_size == map_size and g.stride == (16 / map_size[0], 16 / map_size[1])


def test_dynamic_input_size_and_errors():
    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, L.Conv2D(2, 3, strides=2, name="t")(L.Conv2D(2, 3)(inp)))
    with pytest.raises(OptionError, match="input_size"):
        layer_geometry(model, "t")
    # y: 32 -> 30 -> 14, x: 40 -> 38 -> 18; 0.5 +1 +1 = 2.5, scale 2
    assert_geometry(layer_geometry(model, "t", (32, 40)), RECEPTIVE_FIELD, (2, 2), (2.5, 2.5), (14, 18))
    with pytest.raises(OptionError, match="no layer 'nosuch'"):
        layer_geometry(model, "nosuch")
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    with pytest.raises(ModelError, match="2 inputs"):
        layer_geometry(keras.Model([a, b], L.Conv2D(2, 3, name="t")(L.Add()([a, b]))), "t")


def test_json_header_fields():
    g = layer_geometry(stack((32, 40), L.Conv2D(2, 3, strides=2, name="t")), "t")
    data = json.loads(json.dumps(g.to_json()))
    assert data == {
        "kind": "receptive_field", "stride": [2.0, 2.0], "offset": [1.5, 1.5], "input_size": [32, 40],
        "map_size": [15, 19], "receptive_field": {"stride": [2.0, 2.0], "offset": [1.5, 1.5]},
        "note": g.note, "convention": data["convention"],
    }
    assert "pixel k spans [k, k + 1)" in data["convention"]
    # `gradcam pictures` reads it back from a run's header: the same geometry, so the same upsampling
    assert geometry_from_json(data) == g
    same = layer_geometry(stack((32, 40), L.Conv2D(2, 3, padding="same", name="t")), "t")
    assert same.kind == STRETCH and geometry_from_json(json.loads(json.dumps(same.to_json()))) == same


# ---------------------------------------------------------------------------
# the shipped backbones

BACKBONES = {
    # 4 valid 2x2 pools on 'same' convs: 0.5 + 0.5 * (1 + 2 + 4 + 8) = 8 = half of the 16 px stride
    "vgg16": ((224, 224), (14, 14), (16, 16), (8, 8), STRETCH),
    # ZeroPadding 3 + conv7/2 (-3 +3 = 0), ZeroPadding 1 + pool3/2 (0), 1x1/2 'valid' convs (0): 0.5
    "resnet50": ((224, 224), (7, 7), (32, 32), (0.5, 0.5), STRETCH),
    # five stride-2 3x3 / 5x5 layers, TF-'same' on even sizes pad 0 / 1 before: +1 each at scales
    # 1, 2, 4, 8, 16: 0.5 + 31 = 31.5
    "mobilenet_v2": ((224, 224), (7, 7), (32, 32), (31.5, 31.5), STRETCH),
    "efficientnet_lite0": ((224, 224), (7, 7), (32, 32), (31.5, 31.5), STRETCH),
    # 'valid' stem: conv3/2 (+1 -> 1.5), conv3 (+2 -> 3.5), pool3/2 (+2 -> 5.5), conv3 (+4 -> 9.5),
    # pool3/2 (+4 -> 13.5), mixed3's three 3x3/2 branches agree (+8 -> 21.5), mixed8's (+16 -> 37.5)
    "inception_v3": ((299, 299), (8, 8), (32, 32), (37.5, 37.5), RECEPTIVE_FIELD),
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_shipped_backbones(registry, name):
    input_size, map_size, rf_stride, rf_offset, kind = BACKBONES[name]
    profile = registry[name]
    g = layer_geometry(build_model(profile, "none"), profile.target_layer)
    keras.backend.clear_session()
    stride = (input_size[0] / map_size[0], input_size[1] / map_size[1]) if kind == STRETCH else rf_stride
    offset = (stride[0] / 2, stride[1] / 2) if kind == STRETCH else rf_offset
    assert_geometry(g, kind, stride, offset, map_size, rf_stride, rf_offset)
    if kind == STRETCH:  # overlays of 'same' backbones do not change: exactly today's cv2.resize
        rng = np.random.default_rng(0)
        for cam in (rng.random(map_size, dtype=np.float32), rng.integers(0, 256, map_size, dtype=np.uint8)):
            for image_size in ((333, 517), (224, 224), (5, 3)):
                expected = cv2.resize(cam, image_size[::-1], interpolation=cv2.INTER_LINEAR)
                out = upsample(cam, g, image_size)
                assert out.dtype == cam.dtype and out.tobytes() == expected.tobytes()


# ---------------------------------------------------------------------------
# upsampling and point look-ups


def bilinear_reference(cam, g, image_size):
    """Plain NumPy: pixel centre -> model input -> cell coordinates, clamped, bilinear."""
    (height, width), (in_h, in_w) = image_size, g.input_size
    axes = []
    for n, n_in, s, o, cells in ((height, in_h, g.stride[0], g.offset[0], cam.shape[0]),
                                 (width, in_w, g.stride[1], g.offset[1], cam.shape[1])):
        c = np.clip(((np.arange(n) + 0.5) * n_in / n - o) / s, 0, cells - 1)
        lo = np.minimum(np.floor(c).astype(int), cells - 1)
        hi = np.minimum(lo + 1, cells - 1)
        axes.append((lo, hi, c - lo))
    (y0, y1, fy), (x0, x1, fx) = axes
    cam = cam.astype(np.float64)
    top = cam[y0][:, x0] * (1 - fx) + cam[y0][:, x1] * fx
    bottom = cam[y1][:, x0] * (1 - fx) + cam[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def test_receptive_field_upsample_matches_a_numpy_reference():
    g = Geometry((16, 12), (23, 19.5), (150, 130), (7, 9), RECEPTIVE_FIELD)
    rng = np.random.default_rng(1)
    cam = rng.random((7, 9), dtype=np.float32)
    step = max(np.abs(np.diff(cam, axis=0)).max(), np.abs(np.diff(cam, axis=1)).max())
    for image_size in ((150, 130), (301, 97), (1000, 40)):
        ref = bilinear_reference(cam, g, image_size)
        out = upsample(cam, g, image_size)
        assert out.dtype == np.float32 and out.shape == image_size
        # OpenCV places samples on a 1/32-cell grid: at most 1/32 of a step per axis
        np.testing.assert_allclose(out, ref, rtol=0, atol=step / 16 + 1e-6)
        levels = (cam * 255).round().astype(np.uint8)
        out8 = upsample(levels, g, image_size)
        assert out8.dtype == np.uint8
        assert np.abs(out8 - bilinear_reference(levels, g, image_size)).max() <= 1 + 255 * step / 16
    # pixels beyond the outer cells' centres replicate them: the 'valid' border is flat
    out = upsample(cam, g, (150, 130))
    assert (out[:22, :19] == cam[0, 0]).all() and (out[120:, 116:] == cam[-1, -1]).all()


def test_cell_to_image_is_where_upsample_puts_each_cell():
    rng = np.random.default_rng(2)
    cam = rng.random((5, 6), dtype=np.float32)
    # cell centres 10.5 + 4i, 6.5 + 4j: input pixel centres; 3x the input keeps them on pixel centres
    g = Geometry((4, 4), (10.5, 6.5), (40, 30), (5, 6), RECEPTIVE_FIELD)
    i, j = np.mgrid[0:5, 0:6]
    x, y = cell_to_image(i, j, g, (120, 90))
    np.testing.assert_array_equal(x, (6.5 + 4 * j) * 3)
    np.testing.assert_array_equal(y, (10.5 + 4 * i) * 3)
    np.testing.assert_allclose(upsample(cam, g, (120, 90))[y.astype(int), x.astype(int)], cam, rtol=0, atol=1e-6)
    levels = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    np.testing.assert_array_equal(upsample(levels, g, (120, 90))[y.astype(int), x.astype(int)], levels)
    # the stretch: cell centres at (i + 0.5) * H / h, where cv2.resize reproduces the cell (4 -> 12)
    s = stretch_geometry((224, 224), (4, 4))
    i, j = np.mgrid[0:4, 0:4]
    x, y = cell_to_image(i, j, s, (12, 12))
    np.testing.assert_array_equal(x, 1.5 + 3 * j)
    levels = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(upsample(levels, s, (12, 12))[y.astype(int), x.astype(int)], levels)


def test_upsample_rejects_what_it_cannot_use():
    g = stretch_geometry((224, 224), (7, 7))
    for bad in (np.zeros((7, 7), np.float64), np.zeros((1, 7, 7), np.float32)):
        with pytest.raises(ValueError, match="2-D float32 or uint8"):
            upsample(bad, g, (10, 10))
    with pytest.raises(ValueError, match="computed for 7x7"):
        upsample(np.zeros((8, 7), np.float32), g, (10, 10))
    with pytest.raises(ValueError, match="image_size"):
        upsample(np.zeros((7, 7), np.float32), g, (0, 10))
    unknown = Geometry(None, None, (224, 224), None, STRETCH, "dynamic")
    assert upsample(np.ones((3, 5), np.float32), unknown, (6, 10)).shape == (6, 10)
    with pytest.raises(ValueError, match="for_map"):
        cell_to_image(0, 0, unknown, (6, 10))
    assert unknown.for_map(3, 5) == stretch_geometry((224, 224), (3, 5), "dynamic")


# ---------------------------------------------------------------------------
# an empirical receptive field: light one input pixel at a time (zero elsewhere); with positive
# weights and no bias, exactly the cells that read that pixel light up (max pools included)


def positive(layer_class, *args, **kwargs):
    init = keras.initializers.RandomUniform(0.5, 1.0, seed=0)
    if layer_class in (L.DepthwiseConv2D,):
        kwargs["depthwise_initializer"] = init
    elif layer_class is L.SeparableConv2D:
        kwargs.update(depthwise_initializer=init, pointwise_initializer=init)
    elif layer_class not in (L.MaxPooling2D, L.AveragePooling2D, L.ZeroPadding2D):
        kwargs["kernel_initializer"] = init
    return layer_class(*args, **kwargs)


EMPIRICAL = {  # input size, layers, tolerance in input pixels
    "valid": ((33, 29), [positive(L.Conv2D, 2, 3), positive(L.MaxPooling2D), positive(L.Conv2D, 2, 3, dilation_rate=2),
                         positive(L.DepthwiseConv2D, 3, strides=2)], 0),
    "same": ((72, 67), [positive(L.ZeroPadding2D, ((0, 1), (1, 1))), positive(L.Conv2D, 2, 3, strides=2),
                        positive(L.Conv2D, 2, 3, strides=2, padding="same"),
                        positive(L.AveragePooling2D, 3, 2, padding="same"),
                        positive(L.SeparableConv2D, 2, 3, padding="same")], 0),
    "transposed": ((24, 21), [positive(L.Conv2D, 2, 3, strides=2), positive(L.Conv2DTranspose, 2, 3, strides=2),
                              positive(L.Conv2D, 2, 3)], 0),
    "transposed_same": ((24, 21), [positive(L.Conv2D, 2, 3, strides=2, padding="same"),
                                   positive(L.Conv2DTranspose, 2, 3, strides=2, padding="same"),
                                   positive(L.Conv2D, 2, 3)], 0),
    # an even transposed kernel: its cells alternate a quarter input cell (here 2 px / 4) around the fit
    "transposed_even": ((24, 21), [positive(L.Conv2D, 2, 3, strides=2),
                                   positive(L.Conv2DTranspose, 2, 4, strides=2, padding="same"),
                                   positive(L.Conv2D, 2, 3)],
                        0.5),
}


@pytest.mark.parametrize("case", list(EMPIRICAL))
def test_centres_match_an_empirical_receptive_field(case):
    size, layers, tolerance = EMPIRICAL[case]
    model = stack(size, *[layer for layer in layers], channels=1)
    g = layer_geometry(model, model.layers[-1].name)
    (height, width), (h, w) = size, g.map_size
    rf_stride, rf_offset = g.rf_stride, g.rf_offset
    lit = np.eye(height * width, dtype=np.float32).reshape(height * width, height, width, 1)
    reads = (model.predict(lit, batch_size=256, verbose=0).max(axis=-1) > 0).reshape(height, width, h, w)
    checked = 0
    for i in range(1, h - 1):  # edge cells: a transposed conv's outer cells read fewer input cells
        for j in range(1, w - 1):
            ys, xs = np.nonzero(reads[:, :, i, j])
            if ys.min() == 0 or xs.min() == 0 or ys.max() == height - 1 or xs.max() == width - 1:
                continue  # the receptive field is clipped by the image
            assert abs((ys.min() + ys.max() + 1) / 2 - (rf_offset[0] + i * rf_stride[0])) <= tolerance, (case, i, j)
            assert abs((xs.min() + xs.max() + 1) / 2 - (rf_offset[1] + j * rf_stride[1])) <= tolerance, (case, i, j)
            checked += 1
    assert checked >= 4, f"only {checked} interior cells: the check would be vacuous"
    if case.startswith("transposed"):
        return  # its cells read alternately 1 and 2 input cells: the cells reading a pixel are lopsided
    # and the other way round: the cells a pixel changes are centred on it, within half a stride
    for py in range(height):
        for px in range(width):
            ii, jj = np.nonzero(reads[py, px])
            if len(ii) == 0 or ii.min() == 0 or jj.min() == 0 or ii.max() == h - 1 or jj.max() == w - 1:
                continue
            mid = ((ii.min() + ii.max()) / 2, (jj.min() + jj.max()) / 2)
            assert abs(rf_offset[0] + mid[0] * rf_stride[0] - (py + 0.5)) <= rf_stride[0] / 2, (case, py)
            assert abs(rf_offset[1] + mid[1] * rf_stride[1] - (px + 0.5)) <= rf_stride[1] / 2, (case, px)


# ---------------------------------------------------------------------------
# the acceptance test: a 'valid'-padding CNN (Deep Learning with Python's cats-vs-dogs
# convnet, smaller) trained here on objects at random positions

SIZE, OBJ = 128, 20
COLOURS = np.array([[0.1, 0.1, 0.95], [0.95, 0.1, 0.1]], np.float32)  # class 0 blue, class 1 red


def scenes(n: int, seed: int):
    """Uniform grey noise with one OBJ x OBJ square, blue (0) or red (1). Returns (x, y, corners)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.6, (n, SIZE, SIZE, 3)).astype(np.float32)
    y = rng.integers(0, 2, n)
    corners = rng.integers(0, SIZE - OBJ + 1, (n, 2))
    for k, (y0, x0) in enumerate(corners):
        x[k, y0 : y0 + OBJ, x0 : x0 + OBJ] = COLOURS[y[k]]
    return x, y, corners


def valid_convnet() -> keras.Model:
    """Four 'valid' conv3 + ReLU (+ 2x2 max pool) stages: 128 -> 126 -> 63 -> 61 -> 30 -> 28 -> 14 -> 12."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    x = inp
    for k, filters in enumerate((8, 16, 32, 32)):
        x = L.Conv2D(filters, 3, activation="relu", name="target" if k == 3 else None)(x)
        if k < 3:
            x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, L.Dense(2, activation="softmax", name="predictions")(x))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    return model


def gradcam(model: keras.Model, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Reference Grad-CAM: w = spatial mean of d(logit)/dA, map = relu(sum_k w_k A_k), per image."""
    dense = model.get_layer("predictions")
    sub = keras.Model(model.inputs[0], [model.get_layer("target").output, dense.input])
    with tf.GradientTape() as tape:
        acts, features = sub(x, training=False)
        tape.watch(acts)
        logits = tf.matmul(features, dense.kernel) + dense.bias
        score = tf.reduce_sum(tf.gather(logits, classes, batch_dims=1))  # images are independent
    grads = tape.gradient(score, acts).numpy()
    return np.maximum((acts.numpy() * grads.mean(axis=(1, 2), keepdims=True)).sum(axis=-1), 0.0), logits.numpy()


def peak_hits(cams, corners, geometry) -> float:
    """Share of maps whose peak lies on the object. The peak is the best cell's centre in image
    pixels (cell_to_image), where the upsampled map reaches its maximum: border cells replicate
    to the image edge, so the maximum of a border cell is a plateau from its centre outwards."""
    hits = 0
    for cam, (y0, x0) in zip(cams, corners):
        cam = (cam / max(float(cam.max()), 1e-12)).astype(np.float32)
        i, j = np.unravel_index(np.argmax(cam), cam.shape)
        x, y = cell_to_image(i, j, geometry, (SIZE, SIZE))
        up = upsample(cam, geometry, (SIZE, SIZE))
        py, px = min(int(y), SIZE - 1), min(int(x), SIZE - 1)
        step = max(np.abs(np.diff(cam, axis=0)).max(), np.abs(np.diff(cam, axis=1)).max())
        assert up[py, px] >= up.max() - step / 4  # half a pixel from the top: an eighth of a cell
        hits += bool(y0 <= py < y0 + OBJ and x0 <= px < x0 + OBJ)
    return hits / len(corners)


def test_valid_padding_cnn_peaks_land_on_the_object():
    model = valid_convnet()
    x, y, _ = scenes(800, seed=1)
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    x_test, y_test, corners = scenes(200, seed=2)
    cams, logits = gradcam(model, x_test, y_test)
    assert (logits.argmax(axis=1) == y_test).mean() >= 0.95  # the model learned the task

    g = layer_geometry(model, "target")
    # 0.5 +1 (conv) +0.5 (pool) -> 2, scale 2; +2 +1 -> 5, scale 4; +4 +2 -> 11, scale 8; +8 -> 19
    assert_geometry(g, RECEPTIVE_FIELD, (8, 8), (19, 19), (12, 12))
    placed = peak_hits(cams, corners, g)
    stretched = peak_hits(cams, corners, stretch_geometry(g.input_size, g.map_size))
    figures = f"peak on the object: {placed:.0%} with receptive-field placement, {stretched:.0%} stretched"
    assert placed >= 0.85, figures
    assert placed - stretched >= 0.2, figures  # the placement is what makes the difference


def test_cli_overlays_and_boxes_of_a_valid_padding_model_use_the_placement(tmp_path):
    """End to end: the header records the geometry, and the overlay written is the map placed at its
    receptive-field centres (not stretched), within JPEG error."""
    import json

    import cv2
    from helpers import invoke
    from PIL import Image

    from gradcam_cli.models.geometry import upsample

    inp = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 7, activation="relu")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 5, activation="relu", name="target")(x)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "valid.keras")
    yy, xx = np.mgrid[0:90, 0:120]  # smooth, so that JPEG's chroma subsampling barely changes it
    smooth = np.stack([xx * 2, yy * 2, 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 7.0)], -1)
    Image.fromarray(smooth.clip(0, 255).astype(np.uint8)).save(tmp_path / "img.png")
    result = invoke("explain", tmp_path / "img.png", "--model", tmp_path / "valid.keras", "--out", tmp_path / "o",
                    "--top", 1, "--save-raw", "--quality", 100, "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert doc["geometry"]["kind"] == "receptive_field" and doc["geometry"]["map_size"] == [25, 25]
    entry = doc["images"][0]["predictions"][0]
    raw = np.load(tmp_path / "o" / entry["raw"])
    image = np.asarray(Image.open(tmp_path / "img.png").convert("RGB"))
    from gradcam_cli.models.geometry import Geometry

    geometry = Geometry(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in doc["geometry"].items()
                           if k in ("kind", "stride", "offset", "input_size", "map_size")})
    levels = upsample(cv2.convertScaleAbs(raw, alpha=255.0), geometry, (90, 120))
    placed = cv2.addWeighted(image[..., ::-1], 0.6, cv2.applyColorMap(levels, cv2.COLORMAP_JET), 0.4, 0.0)
    stretched_levels = cv2.resize(cv2.convertScaleAbs(raw, alpha=255.0), (120, 90), interpolation=cv2.INTER_LINEAR)
    stretched = cv2.addWeighted(image[..., ::-1], 0.6, cv2.applyColorMap(stretched_levels, cv2.COLORMAP_JET), 0.4, 0.0)
    written = cv2.imread(str(tmp_path / "o" / entry["overlay"]))
    assert np.abs(written.astype(int) - placed).mean() < 2.0
    assert np.abs(written.astype(int) - stretched).mean() > np.abs(written.astype(int) - placed).mean() + 1.0
    from gradcam_cli.render.boxes import map_box

    boxed = invoke("explain", tmp_path / "img.png", "--model", tmp_path / "valid.keras", "--out", tmp_path / "b",
                   "--top", 1, "--boxes", "-q")
    assert boxed.exit_code == 0, boxed.output
    box = json.loads((tmp_path / "b" / "predictions.json").read_text())["images"][0]["predictions"][0]["box"]
    assert box == map_box(raw, (90, 120), upsample=lambda c, size: upsample(c, geometry, size))
