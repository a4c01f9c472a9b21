"""Looking inside models: activation grids and filter patterns (gradcam_cli.inspect).

References are independent of gradcam_cli's graph executor: Keras sub-models
(``keras.Model(inputs, layer.output)``), hand-written formulas for the
standardisation, the grid placement and the preprocessing, and models whose
kernels are set by hand (identity, zero, edge and colour detectors).
"""

from __future__ import annotations

import json
import math
import warnings

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import book_loop, book_step, feature_extractor

from helpers import REPO

from gradcam_cli.models.load import load_user_model
from gradcam_cli.errors import OptionError
from gradcam_cli.inspect.activations import ActivationProbe, default_layers, write_activation_grids
from gradcam_cli.inspect.filters import FilterAscent, noise, write_filter_outputs
from gradcam_cli.io.preprocess import preprocess_tensor
from gradcam_cli.render.channels import (
    BACKGROUND,
    channel_grid,
    channel_layout,
    label_size,
    standardise,
    tile_label,
)
from gradcam_cli.render.text import strip_height

SAMPLES = REPO / "sample_images"

LITE0_FIRST8 = [
    "stem_conv",
    "block1a_dwconv",
    "block1a_project_conv",
    "block2a_expand_conv",
    "block2a_dwconv",
    "block2a_project_conv",
    "block2b_expand_conv",
    "block2b_dwconv",
]


# ---------------------------------------------------------------------------
# models with known weights


def identity_model() -> keras.Model:
    """(6, 8, 2) -> 'mix' 1x1 conv: [in0, in1, 0 (dead), in0 + 2 in1] -> 'pool' -> 'gap' -> 'dense'."""
    inp = keras.Input((6, 8, 2))
    x = keras.layers.Conv2D(4, 1, use_bias=False, name="mix")(inp)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(3, activation="softmax", name="dense")(x)
    model = keras.Model(inp, out, name="known")
    kernel = np.zeros((1, 1, 2, 4), np.float32)
    kernel[0, 0, 0, 0] = kernel[0, 0, 1, 1] = 1.0
    kernel[0, 0, :, 3] = [1.0, 2.0]
    model.get_layer("mix").set_weights([kernel])
    return model


def small_cnn(seed: int = 0, size: int | None = None) -> keras.Model:
    """Random conv net: c1 -> relu -> c2 (linear) -> relu -> pool -> gap -> dense softmax."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(4, activation="softmax", name="dense")(x)
    return keras.Model(inp, out, name="small")


def detector_model() -> keras.Model:
    """'det' 3x3 conv + ReLU: 0 vertical edges (Sobel x), 1 horizontal edges, 2 red - green, 3 blue - red."""
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    kernel = np.zeros((3, 3, 3, 4), np.float32)
    for c in range(3):
        kernel[:, :, c, 0], kernel[:, :, c, 1] = sobel, sobel.T
    kernel[1, 1, :, 2] = [1.0, -1.0, 0.0]
    kernel[1, 1, :, 3] = [-1.0, 0.0, 1.0]
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False, activation="relu", name="det")(inp)
    model = keras.Model(inp, x, name="detectors")
    model.get_layer("det").set_weights([kernel])
    return model


def tf_mode(x):
    return x / 127.5 - 1.0


def viridis_rgb(levels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)


def reference_levels(channel: np.ndarray) -> np.ndarray:
    x = channel.astype(np.float64)
    if x.std() == 0:
        return np.full(x.shape, 128, np.uint8)
    return np.clip(np.rint((x - x.mean()) / x.std() * 64 + 128), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# activations


def test_probe_values_and_grid_tiles_at_their_places():
    model = identity_model()
    x = np.random.default_rng(0).normal(size=(2, 6, 8, 2)).astype(np.float32)
    probe = ActivationProbe(model, ["mix", "pool"])
    out = probe(x)
    assert probe.layers == ["mix", "pool"] and probe.shapes == {"mix": (6, 8, 4), "pool": (3, 4, 4)}
    mix = out["mix"]
    np.testing.assert_allclose(mix[..., 0], x[..., 0], atol=1e-6)
    np.testing.assert_allclose(mix[..., 1], x[..., 1], atol=1e-6)
    assert np.all(mix[..., 2] == 0)
    np.testing.assert_allclose(mix[..., 3], x[..., 0] + 2 * x[..., 1], atol=1e-5)
    np.testing.assert_array_equal(out["pool"], keras.Model(model.input, model.get_layer("pool").output)(x))

    grid = channel_grid(mix[1], per_row=3, min_tile=16, gap=2, title="mix")
    layout = channel_layout(6, 8, 4, per_row=3, min_tile=16, gap=2, title="mix")
    scale = math.ceil(16 / 6)
    assert (layout.tile_h, layout.tile_w, layout.rows, layout.cols) == (6 * scale, 8 * scale, 2, 3)
    assert layout.title_height > 0 and layout.label_height == strip_height(layout.label_size) > 0
    top, row_h = layout.title_height, layout.label_height + 18  # each row: its labels' strip, then its tiles
    assert grid.shape == (top + 2 * row_h + 2, max(3 * 24 + 2 * 2, layout.width), 3)
    for i in range(4):
        row, col = divmod(i, 3)
        y, x0 = top + row * (row_h + 2) + layout.label_height, col * (24 + 2)
        assert layout.origin(i) == (y, x0)
        expected = viridis_rgb(reference_levels(mix[1][..., i])).repeat(scale, 0).repeat(scale, 1)
        np.testing.assert_array_equal(grid[y : y + 18, x0 : x0 + 24], expected)
        # its number, in the strip right above it: the label drawn afresh, and no other number
        label = grid[y - layout.label_height : y, x0 : x0 + 24]
        np.testing.assert_array_equal(label, tile_label(str(i), 24, layout.label_size))
        assert all(np.any(label != tile_label(str(j), 24, layout.label_size)) for j in range(10) if j != i)
    dead = grid[top + layout.label_height : top + row_h, 2 * 26 : 2 * 26 + 24]
    assert np.all(dead == viridis_rgb(np.full((1, 1), 128, np.uint8))[0, 0])
    assert np.all(grid[top :, 24:26] == BACKGROUND)  # the gap between columns 0 and 1
    assert np.all(grid[top + row_h : top + row_h + 2] == BACKGROUND)  # between rows
    assert (grid[: layout.title_height] < 128).any()  # the title's text
    # without labels: the same tiles, the rows closer
    bare = channel_grid(mix[1], per_row=3, min_tile=16, gap=2, title="mix", labels=False)
    assert bare.shape[0] == grid.shape[0] - 2 * layout.label_height
    for i in range(4):
        row, col = divmod(i, 3)
        y, x0 = layout.origin(i)
        by = top + row * (18 + 2)
        np.testing.assert_array_equal(bare[by : by + 18, x0 : x0 + 24], grid[y : y + 18, x0 : x0 + 24])


def test_standardise_dead_and_tiny_channels_are_grey_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (0.0, 3.7, 1e6):
            assert np.all(standardise(np.full((5, 7), value, np.float32)) == 128)
        ramp = np.arange(12, dtype=np.float32).reshape(3, 4)
        np.testing.assert_array_equal(standardise(ramp), reference_levels(ramp))
        grid = channel_grid(np.zeros((4, 4, 3), np.float32), title="")
    y, x = channel_layout(4, 4, 3).origin(0)  # under its label's strip
    assert np.all(grid[y : y + 32, x : x + 32] == viridis_rgb(np.full((1, 1), 128, np.uint8))[0, 0])


def test_default_layers_are_the_first_conv_and_pool_layers_nested_included():
    inner_in = keras.Input((16, 16, 8))
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inner_in)
    y = keras.layers.BatchNormalization(name="bn_in")(y)
    y = keras.layers.SeparableConv2D(8, 3, padding="same", name="sep")(y)
    inner = keras.Model(inner_in, y, name="inner")
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a_conv")(inp)
    x = keras.layers.BatchNormalization(name="a_bn")(x)
    x = keras.layers.ReLU(name="a_relu")(x)
    x = keras.layers.MaxPooling2D(name="a_pool")(x)
    x = inner(x)
    x = keras.layers.Add(name="add")([x, x])
    x = keras.layers.AveragePooling2D(2, name="b_pool")(x)
    x = keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", name="up")(x)
    x = keras.layers.Conv2D(4, 1, name="c_conv")(x)
    x = keras.layers.Conv2D(4, 1, name="d_conv")(x)
    x = keras.layers.GlobalMaxPooling2D(name="gmax")(x)
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(x), name="outer")
    first8 = ["a_conv", "a_pool", "inner/dw", "inner/sep", "b_pool", "up", "c_conv", "d_conv"]
    assert default_layers(model) == first8
    assert default_layers(model, first=3) == first8[:3]
    assert default_layers(model, first=20) == first8


def test_nested_model_by_path_equals_the_inner_sub_model():
    inner_in = keras.Input((12, 12, 3))
    y = keras.layers.Conv2D(5, 3, name="c1")(inner_in)
    y = keras.layers.Conv2D(6, 3, name="c2")(y)
    inner = keras.Model(inner_in, y, name="inner")
    inp = keras.Input((12, 12, 3))
    scaled = keras.layers.Rescaling(1 / 255.0, name="scale")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(inner(scaled))
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(x), name="outer")
    x = np.random.default_rng(1).uniform(0, 255, (3, 12, 12, 3)).astype(np.float32)
    probe = ActivationProbe(model, ["inner/c2", "outer/inner/c1", "c1"])  # the last two are the same layer
    assert probe.layers == ["inner/c2", "inner/c1"]
    out = probe(x)
    for name in ("c1", "c2"):
        reference = keras.Model(inner.input, inner.get_layer(name).output)(x / 255.0)
        np.testing.assert_allclose(out[f"inner/{name}"], reference, rtol=1e-5, atol=1e-5)
    # a batch of 1 against one of 3: equal to the last digits (the GEMM blocking depends on the batch)
    np.testing.assert_allclose(probe(x[:1])["inner/c2"], out["inner/c2"][:1], rtol=1e-5, atol=1e-6)
    assert probe.trace_count == 1  # batches of 3 and 1 share one trace
    _, final, initial = FilterAscent(model, "inner/c2", steps=3).run([0, 5])
    assert np.all(final > initial)


def test_unknown_and_non_spatial_layers_are_refused():
    model = small_cnn()
    with pytest.raises(OptionError, match=r"no layer 'c3' \(did you mean 'c2', 'c1'\?\); pass one of its 4-D layers \(`gradcam layers` lists"):
        ActivationProbe(model, ["c3"])
    with pytest.raises(OptionError, match=r"'gap' .*\(None, 8\), not 4-D .*no spatial and channel axes; pass a 4-D"):
        ActivationProbe(model, ["gap"])
    with pytest.raises(OptionError, match="no spatial and channel axes"):
        FilterAscent(model, "dense", size=8)
    with pytest.raises(OptionError, match="did you mean 'pool'"):
        FilterAscent(model, "poll", size=8)


# ---------------------------------------------------------------------------
# filters


def test_one_batched_step_equals_the_per_filter_tape_step():
    model = small_cnn(seed=3, size=16)

    def shifted(x):  # images stored minus 128, so that (moved - image) keeps float32 precision
        return tf_mode(x + 128.0)

    ascent = FilterAscent(model, "c2", shifted, steps=1, step_size=1.0)
    assert ascent.size == (16, 16)  # the model's fixed input size wins over size=64
    filters = [0, 3, 5, 1, 3]
    images = noise(filters, (16, 16, 3), seed=7) - 128.0
    moved, loss = ascent.step(tf.constant(images), tf.constant(filters, tf.int32))
    extractor = feature_extractor(model, "c2", shifted)  # keras.Model(inputs, c2.output), as the book
    for b, f in enumerate(filters):
        one, one_loss = book_step(extractor, tf.constant(images[b : b + 1]), tf.constant(f), 1.0)
        np.testing.assert_allclose(moved.numpy()[b] - images[b], one.numpy()[0] - images[b], atol=1e-5)
        np.testing.assert_allclose(loss.numpy()[b], one_loss.numpy(), rtol=1e-5, atol=1e-6)


def test_ascent_raises_every_filter_and_matches_the_book_loop():
    model = small_cnn(seed=4)
    ascent = FilterAscent(model, "c2", tf_mode, size=20, steps=12)
    patterns, final, initial = ascent.run(range(8), seed=1)
    assert patterns.shape == (8, 20, 20, 3) and patterns.dtype == np.uint8
    assert np.all(final > initial), (initial, final)
    book = book_loop(model, "c2", range(8), 20, 12, 1.0, tf_mode, seed=1)
    assert np.abs(book.astype(int) - patterns).max() <= 1 and (book != patterns).mean() < 0.01


def test_constructed_detectors_yield_their_orientation_and_colour():
    ascent = FilterAscent(detector_model(), "det", size=32, steps=40)
    patterns, final, initial = ascent.run(range(4))
    assert np.all(final > initial)
    p = patterns.astype(np.float64)
    across = np.abs(np.diff(p, axis=2)).mean(axis=(1, 2, 3))  # changes along x: vertical edges
    down = np.abs(np.diff(p, axis=1)).mean(axis=(1, 2, 3))  # changes along y: horizontal edges
    assert across[0] > 1.5 * down[0], (across, down)
    assert down[1] > 1.5 * across[1], (across, down)
    red, green, blue = p[2].mean(axis=(0, 1))
    assert red > blue + 5 > green + 10
    red, green, blue = p[3].mean(axis=(0, 1))
    assert blue > green + 5 > red + 10


def test_bfloat16_ascent_finds_the_same_patterns_and_leaves_the_model_unchanged():
    """The layers compute in bfloat16 inside the traced step only: the detectors' patterns keep
    their orientation and colour, every filter rises, the float32 patterns are nearly the same
    (a different rounding moves a few pixels), and the model's policies and weights are untouched."""
    from builders import assert_unchanged, snapshot

    model = detector_model()
    before = snapshot(model)
    exact = FilterAscent(model, "det", size=32, steps=40).run(range(4))[0].astype(np.float64)
    fast = FilterAscent(model, "det", size=32, steps=40, precision="bfloat16")
    ops = {op.type for op in fast.step.get_concrete_function().graph.get_operations()
           if op.type == "Conv2D" and op.get_attr("T") == tf.bfloat16}
    assert ops == {"Conv2D"}, "the convolution does not run in bfloat16"
    patterns, final, initial = fast.run(range(4))
    assert np.all(final > initial)
    p = patterns.astype(np.float64)
    across, down = np.abs(np.diff(p, axis=2)).mean(axis=(1, 2, 3)), np.abs(np.diff(p, axis=1)).mean(axis=(1, 2, 3))
    assert across[0] > 1.5 * down[0] and down[1] > 1.5 * across[1], (across, down)
    assert p[2].mean(axis=(0, 1))[0] > p[2].mean(axis=(0, 1))[2] + 5 and p[3].mean(axis=(0, 1))[2] > p[3].mean(
        axis=(0, 1))[0] + 10
    for a, b in zip(exact, p):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8
    assert_unchanged(model, before)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        FilterAscent(model, "det", size=8, steps=1, precision="float16")


def assert_same_levels(a: np.ndarray, b: np.ndarray) -> None:
    """uint8 pictures from float work done in other batch shapes: at most one level apart, and
    almost every pixel the same."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert a.shape == b.shape and diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_chunks_share_one_trace_and_equal_the_unchunked_run_seeds_reproduce():
    ascent = FilterAscent(small_cnn(seed=5), "c1", tf_mode, size=12, steps=4)
    whole = ascent.run(range(8), batch_size=64, seed=3)
    chunked = ascent.run(range(8), batch_size=3, seed=3)  # chunks of 3, 3, 2
    assert ascent.traces == {"step": 1, "loss": 1}
    # chunks of 3 against one of 8: the float steps agree to their last digits (the GEMM blocking depends
    # on the batch), so a pattern's uint8 level can move by one where it sits on a rounding edge
    assert_same_levels(chunked[0], whole[0])
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-5)
    again = ascent.run([6, 7], seed=3)  # a filter starts from the same noise whatever else is asked
    assert_same_levels(again[0], whole[0][6:])
    other = ascent.run(range(8), seed=4)
    assert (other[0] != whole[0]).mean() > 0.5


def test_filter_out_of_range_names_the_channel_count():
    ascent = FilterAscent(small_cnn(), "c2", size=8, steps=1)
    with pytest.raises(OptionError, match=r"filter 8 is out of range: layer 'c2' has 8 channels \(0-7\)"):
        ascent.run([0, 8])
    with pytest.raises(OptionError, match="filter -1 is out of range"):
        ascent.run([-1])


def test_unit_mode_raises_the_logit_before_softmax():
    model = small_cnn(seed=6, size=16)
    ascent = FilterAscent(model, None, tf_mode, steps=10)
    assert ascent.units and ascent.channels == 4 and ascent.layer == "dense"
    start = noise([2], (16, 16, 3), seed=0)
    features = keras.Model(model.input, model.get_layer("gap").output)(tf_mode(start)).numpy()
    kernel, bias = model.get_layer("dense").get_weights()
    _, final, initial = ascent.run([2], seed=0)
    np.testing.assert_allclose(initial, (features @ kernel + bias)[:, 2], rtol=1e-5, atol=1e-6)
    assert final[0] > initial[0]


# ---------------------------------------------------------------------------
# the real offline default and a saved own model


def _chelsea() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(SAMPLES / "chelsea.jpg")), cv2.COLOR_BGR2RGB)


def test_lite0_activations_of_its_first_8_layers(lite0_cam, tmp_path):
    layers = default_layers(lite0_cam.model)
    assert layers == LITE0_FIRST8
    probe = ActivationProbe(lite0_cam.model, layers)
    batch = lite0_cam.prepare([_chelsea()])
    out = probe(batch)
    reference = keras.Model(lite0_cam.model.input, [lite0_cam.model.get_layer(n).output for n in layers])(batch)
    for name, ref in zip(layers, reference):
        np.testing.assert_allclose(out[name], ref, rtol=1e-4, atol=1e-4)
    index = write_activation_grids(probe, [("chelsea", _chelsea())], lite0_cam.prepare, tmp_path, save_raw=True)
    assert json.loads((tmp_path / "activations.json").read_text()) == index
    assert [(r["path"], r["shape"]) for r in index["layers"][:2]] == [("stem_conv", [112, 112, 32]),
                                                                     ("block1a_dwconv", [112, 112, 32])]
    files = index["images"][0]["files"]
    assert list(files) == layers
    written = cv2.cvtColor(cv2.imread(str(tmp_path / files["block2b_dwconv"])), cv2.COLOR_BGR2RGB)
    title = "block2b_dwconv  56 x 56 x 144"
    np.testing.assert_array_equal(written, channel_grid(out["block2b_dwconv"][0], title=title))
    assert written.shape[1] == 16 * 56 + 15 * 2  # 144 channels, 16 per row, 56 px tiles
    raw = np.load(tmp_path / index["images"][0]["raw"]["stem_conv"])
    np.testing.assert_array_equal(raw, out["stem_conv"][0])


def test_lite0_filters_of_an_early_layer(lite0_cam, tmp_path):
    profile = lite0_cam.profile
    ascent = FilterAscent(lite0_cam.model, "stem_conv", lambda x: preprocess_tensor(x, profile), steps=5)
    assert ascent.size == (224, 224) and ascent.channels == 32
    index = write_filter_outputs(ascent, [0, 5, 9], tmp_path, seed=2)
    assert [r["filter"] for r in index["filters"]] == [0, 5, 9]
    assert all(r["final_mean_activation"] > r["initial_mean_activation"] for r in index["filters"])
    grid = cv2.imread(str(tmp_path / "grid.png"))[..., ::-1]
    size = label_size(["0", "5", "9"], 224)
    strip = strip_height(size)  # each pattern under a strip with its filter's number
    assert grid.shape == (strip + 224, 3 * 224 + 2 * 5, 3)
    for k, f in enumerate([0, 5, 9]):
        x = k * (224 + 5)
        np.testing.assert_array_equal(grid[:strip, x : x + 224], tile_label(str(f), 224, size))
        np.testing.assert_array_equal(grid[strip:, x : x + 224], cv2.imread(str(tmp_path / f"filter_{f:04d}.png"))[..., ::-1])
    assert cv2.imread(str(tmp_path / "filter_0009.png")).shape == (224, 224, 3)
    assert json.loads((tmp_path / "filters.json").read_text()) == index


def test_saved_own_keras_model(tmp_path):
    model = small_cnn(seed=8, size=24)
    model.save(tmp_path / "own.keras")
    loaded = load_user_model(tmp_path / "own.keras")
    assert default_layers(loaded) == ["c1", "c2", "pool"]
    x = np.random.default_rng(0).uniform(0, 255, (2, 24, 24, 3)).astype(np.float32)
    got, want = ActivationProbe(loaded, ["c2", "pool"])(x), ActivationProbe(model, ["c2", "pool"])(x)
    for name in ("c2", "pool"):
        np.testing.assert_array_equal(got[name], want[name])
    images = [("a", x[0].astype(np.uint8)), ("b", x[1].astype(np.uint8))]
    index = write_activation_grids(ActivationProbe(loaded, ["c1"]), images, lambda ims: np.stack(ims).astype(np.float32),
                                   tmp_path / "act", batch_size=1)
    assert [r["image"] for r in index["images"]] == ["a", "b"] and (tmp_path / "act" / "b" / "c1.png").is_file()
    ascent = FilterAscent(loaded, "c2", steps=3)
    patterns, final, initial = ascent.run([1, 4])
    assert np.all(final > initial)
    np.testing.assert_array_equal(patterns, FilterAscent(model, "c2", steps=3).run([1, 4])[0])
