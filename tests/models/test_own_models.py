"""Explaining the user's own Keras models: loading, nested models, ``auto`` layer, every head type.

The reference is the plain per-image, per-score GradientTape, built independently
of gradcam_cli: activations and the final Dense layer's *input* come from a Keras
sub-model (or from calling the layers by hand for nested models), the logit is
``input @ kernel + bias``; binary class 0 is ``-logit``.
"""

from __future__ import annotations

import pathlib
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from builders import (
    CUSTOM_SOURCE,
    custom_model,
    EXPECTED,
    mobilenet_wrapped,
    two_headed,
    scenes,
    peak_on,
    dense_logits,
    assert_maps_match,
    CamSlice,
    snapshot,
    assert_unchanged,
    trained,
    last_dense,
)
from helpers import one_line

from gradcam_cli.models.graph import LayerInfo
from gradcam_cli.models.load import load_user_model
from gradcam_cli.models.split import split_model
from gradcam_cli.models.targets import auto_layer, candidate_layers, target_layer
from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.errors import ModelError





@pytest.mark.parametrize("kind", ["softmax", "multilabel", "binary", "regression"])
def test_each_head_type_saved_loaded_localises_and_matches_tape(kind, tmp_path):
    model = trained(kind)
    model.save(tmp_path / "model.keras")
    model.save(tmp_path / "model.h5")
    x_test, y_test, boxes = scenes(kind, 200, seed=2)
    expected_probs = model.predict(x_test, verbose=0)

    results = {}
    for suffix in (".keras", ".h5"):
        loaded = load_user_model(tmp_path / f"model{suffix}")
        assert auto_layer(loaded) == "target"
        split = split_model(loaded, "auto")
        assert split.layer_name == "target" and split.cut and split.feature_shape == (12, 12, 32)
        assert (split.head_type, split.activation, split.num_classes) == EXPECTED[kind]
        if kind == "multilabel" or kind == "regression":
            explainer = Explainer(split, classes=list(range(split.num_classes)))
        else:
            explainer = Explainer(split, top=1)
        result = explainer(x_test)
        # probabilities: the model's own outputs (binary: [1 - p, p])
        probs = np.concatenate([1 - expected_probs, expected_probs], axis=1) if kind == "binary" else expected_probs
        np.testing.assert_allclose(result.probs, probs, atol=1e-5)
        f = dense_logits(loaded, "target", last_dense(loaded))
        assert_maps_match(f, split.head_type, x_test[:3], CamSlice(result, 3))
        results[suffix] = result
    np.testing.assert_allclose(results[".h5"].maps, results[".keras"].maps, atol=1e-6)

    result = results[".keras"]
    hits = total = 0
    if kind == "softmax" or kind == "binary":
        assert (result.classes[:, 0] == y_test).mean() >= 0.95, "the model did not learn the task"
        for b, cam in enumerate(result.maps[:, 0]):
            hits += peak_on(cam, boxes[b][int(y_test[b])])
            total += 1
    elif kind == "multilabel":
        assert ((result.probs > 0.5) == (y_test > 0.5)).mean() >= 0.95, "the model did not learn the task"
        for b in range(len(boxes)):
            for c, box in boxes[b].items():
                hits += peak_on(result.maps[b, c], box)
                total += 1
    else:
        assert np.corrcoef(result.scores[:, 0], y_test)[0, 1] >= 0.9, "the model did not learn the task"
        for b, cam in enumerate(result.maps[:, 0]):
            hits += peak_on(cam, boxes[b][0])
            total += 1
    assert hits / total >= 0.9, f"{kind}: the peak is on the object for only {hits}/{total} maps"


def test_binary_exposes_two_classes_minus_logit_and_plus_logit():
    model = trained("binary")
    split = split_model(model, "target")
    assert split.num_classes == 2 and split.num_outputs == 1 and split.head_type == "binary"
    assert "class 0 score = -logit" in split.score_description
    x, labels, _ = scenes("binary", 6, seed=5)
    result = Explainer(split, classes=[0, 1])(x)
    p = model.predict(x, verbose=0)[:, 0]
    np.testing.assert_allclose(result.probs[:, 1], p, atol=1e-6)
    np.testing.assert_allclose(result.probs[:, 0], 1 - p, atol=1e-6)
    np.testing.assert_allclose(result.scores[:, 0], -result.scores[:, 1], atol=1e-6)
    f = dense_logits(model, "target", model.get_layer("is_red"))
    assert_maps_match(f, "binary", x, result)
    # class 0 (blue) is explained by the -logit: on a blue image, the map is not class 1's map
    blue = int(np.flatnonzero(labels == 0)[0])
    assert not np.allclose(result.maps[blue, 0], result.maps[blue, 1], atol=1e-3)


# ---------------------------------------------------------------------------
# nested models




def nested_reference(base: keras.Model, layer: str, dense: keras.layers.Dense):
    """The un-nested computation: the backbone's own graph, then pooling and the Dense by hand."""
    sub = keras.Model(base.inputs[0], [base.get_layer(layer).output, base.outputs[0]])

    def f(x):
        acts, features = sub(x, training=False)
        return acts, tf.matmul(tf.reduce_mean(features, axis=(1, 2)), dense.kernel) + dense.bias

    return f


@pytest.mark.parametrize("style", ["sequential", "functional"])
def test_backbone_nested_in_a_model(style):
    model, base = mobilenet_wrapped(style)
    before = snapshot(model)
    dense = model.layers[-1]
    path = f"{base.name}/out_relu"

    layers = candidate_layers(model)
    assert all(isinstance(info, LayerInfo) and len(info.shape) == 3 for info in layers)
    assert all(info.shape[0] * info.shape[1] > 1 for info in layers)
    assert layers[-1] == LayerInfo(path, (3, 3, 1280), "ReLU") and layers[-1].path == path
    assert layers[0].name == f"{base.name}/Conv1" and all(i.name.startswith(base.name + "/") for i in layers)
    assert auto_layer(model) == path

    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    split = split_model(model, "auto")
    assert split.layer_name == path and split.cut and split.feature_shape == (3, 3, 1280)
    assert split.head_type == "softmax" and split.num_classes == 4
    result = Explainer(split, top=2)(x)
    np.testing.assert_allclose(result.probs, model(x, training=False).numpy(), atol=1e-5)
    assert_maps_match(nested_reference(base, "out_relu", dense), "softmax", x, result)

    # the same layer by bare name or with the outer model's name, and the nested model itself
    # (the same tensor): the same activations
    acts = split.trunk(x).numpy()
    for name in ("out_relu", f"{model.name}/{path}", base.name):
        other = split_model(model, name)
        assert other.layer_name == (base.name if name == base.name else path)
        np.testing.assert_allclose(other.trunk(x).numpy(), acts, atol=1e-6)

    if style == "sequential":
        # the equivalent flat model (same weights, no nesting) gives the same maps
        keras.utils.set_random_seed(4)
        flat_base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(flat_base.output)
        flat = keras.Model(flat_base.input, keras.layers.Dense(4, activation="softmax")(pooled))
        flat.set_weights(model.get_weights())
        flat_split = split_model(flat, "auto")
        assert flat_split.layer_name == "out_relu"
        flat_result = Explainer(flat_split, top=2)(x)
        np.testing.assert_array_equal(flat_result.classes, result.classes)
        np.testing.assert_allclose(flat_result.maps, result.maps, atol=1e-5)
    else:
        # a target in the middle of the backbone: the backbone's later layers run in the head
        mid = split_model(model, f"{base.name}/block_13_expand_relu")
        assert mid.cut and mid.feature_shape == (6, 6, 576)
        mid_acts, full_scores = mid.full(x)
        np.testing.assert_allclose(mid.head(mid.trunk(x)).numpy(), full_scores.numpy(), atol=1e-5)
        np.testing.assert_allclose(mid_acts.numpy(), mid.trunk(x).numpy(), atol=1e-6)
        cut = Explainer(mid, classes=[3])(x)
        assert_maps_match(nested_reference(base, "block_13_expand_relu", dense), "softmax", x, cut)
    assert_unchanged(model, before)


def deeply_nested(skip: bool):
    """Sequential[ functional 'mid'[ Sequential 'inner'[c1, c2], (skip Add), mid_conv ], GAP, Dense ]."""
    keras.utils.set_random_seed(5)
    inner = keras.Sequential(
        [keras.Input((20, 20, 6)), keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1"),
         keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c2")],
        name="inner",
    )
    inp = keras.Input((20, 20, 3))
    a = keras.layers.Conv2D(6, 1, activation="relu", name="stem")(inp)
    b = inner(a)
    if skip:
        b = keras.layers.Add(name="skip")([a, b])
    out = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="mid_conv")(b)
    mid = keras.Model(inp, out, name="mid")
    model = keras.Sequential(
        [keras.Input((20, 20, 3)), mid, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5, activation="softmax")],
        name="outer",
    )
    return model, mid, inner


@pytest.mark.parametrize("skip", [False, True])
def test_deep_nesting_paths_and_skip_across_the_cut(skip, tmp_path):
    model, mid, inner = deeply_nested(skip)
    before = snapshot(model)
    dense = model.layers[-1]
    paths = [info.name for info in candidate_layers(model)]
    assert paths[:3] == ["mid/stem", "mid/inner/c1", "mid/inner/c2"] and paths[-1] == "mid/mid_conv"
    assert ("mid/skip" in paths) is skip
    assert auto_layer(model) == "mid/mid_conv"
    assert target_layer(model, "mid/inner/c2") is inner.get_layer("c2")

    def f(x):  # the layers called by hand: the un-nested computation
        a = mid.get_layer("stem")(x)
        acts = inner.get_layer("c2")(inner.get_layer("c1")(a))
        b = mid.get_layer("skip")([a, acts]) if skip else acts
        pooled = tf.reduce_mean(mid.get_layer("mid_conv")(b), axis=(1, 2))
        return acts, tf.matmul(pooled, dense.kernel) + dense.bias

    x = np.random.default_rng(2).uniform(-1, 1, (3, 20, 20, 3)).astype(np.float32)
    for name in ("mid/inner/c2", "c2", "outer/mid/inner/c2"):
        split = split_model(model, name)
        assert split.layer_name == "mid/inner/c2"
        assert split.cut is (not skip)  # a skip connection across the target forces the full path
        result = Explainer(split, top=3)(x)
        np.testing.assert_allclose(result.probs, model.predict(x, verbose=0), atol=1e-6)
        assert_maps_match(f, "softmax", x, result)
    assert_unchanged(model, before)

    # nested models survive saving and loading, in both formats
    for suffix in (".keras", ".h5"):
        model.save(tmp_path / f"nested{suffix}")
        loaded = load_user_model(tmp_path / f"nested{suffix}")
        assert auto_layer(loaded) == "mid/mid_conv"
        again = Explainer(split_model(loaded, "mid/inner/c2"), top=3)(x)
        np.testing.assert_allclose(again.maps, result.maps, atol=1e-6)


def test_layer_name_errors():
    model, _, _ = deeply_nested(False)
    with pytest.raises(ModelError, match=r"has no layer 'c3' \(did you mean .*'c2'.*--layer"):
        split_model(model, "c3")
    with pytest.raises(ModelError, match=r"layer 'global_average_pooling2d\w*' of model 'outer' has output shape \(None, 8\), not 4-D"):
        split_model(model, model.layers[1].name)
    # the same bare name in two nested models: ambiguous, both paths listed
    keras.utils.set_random_seed(6)

    def block(name):
        return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 3, padding="same", name="conv")], name=name)

    inp = keras.Input((8, 8, 3))
    y = block("second")(block("first")(inp))
    twin = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(y)))
    with pytest.raises(ModelError, match=r"'conv' is ambiguous.*'first/conv', 'second/conv'.*full path"):
        split_model(twin, "conv")
    assert split_model(twin, "second/conv").layer_name == "second/conv"


# ---------------------------------------------------------------------------
# multi-output, multi-input, not a graph




@pytest.mark.parametrize("as_dict", [False, True])
def test_multi_output_selection(as_dict):
    model = two_headed(as_dict)
    with pytest.raises(ModelError, match=r"has 2 outputs \(0: 'kind', 1: 'size'\); pass --output"):
        split_model(model, "target")
    with pytest.raises(ModelError, match=r"no output 'colour'.*0: 'kind', 1: 'size'.*--output"):
        split_model(model, "target", output="colour")
    with pytest.raises(ModelError, match=r"no output 5"):
        split_model(model, "target", output=5)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    predicted = model.predict(x, verbose=0)
    predicted = [predicted["kind"], predicted["size"]] if as_dict else predicted
    for output, index in (("kind", 0), (0, 0), ("size", 1), (1, 1), ("1", 1), (-1, 1)):
        split = split_model(model, "auto", output=output)
        assert split.output_index == index and split.output_name == ("kind", "size")[index]
        assert split.layer_name == "target"
        assert (split.head_type, split.num_classes) == (("softmax", 3), ("linear", 2))[index]
        result = Explainer(split, classes=[0, 1])(x)
        np.testing.assert_allclose(result.probs, predicted[index], atol=1e-6)
        f = dense_logits(model, "target", model.get_layer(("kind", "size")[index]))
        assert_maps_match(f, split.head_type, x, result)


def test_single_input_graph_models_only():
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(keras.layers.Add()([a, b]))
    two_inputs = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ModelError, match="has 2 inputs; only single-input"):
        split_model(two_inputs, "conv")

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    with pytest.raises(ModelError, match="not a functional or Sequential"):
        split_model(Subclassed(), "auto")
    no_input = keras.Sequential([keras.layers.Conv2D(2, 3)])
    with pytest.raises(ModelError, match="no input shape"):
        split_model(no_input, "auto")
    flat = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    with pytest.raises(ModelError, match="no layer with a 4-D output"):
        auto_layer(flat)


# ---------------------------------------------------------------------------
# loading


def test_loading_errors_are_one_line_and_name_the_path(tmp_path):
    saved = tmp_path / "exported"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ModelError) as exc:
        load_user_model(saved)
    message = one_line(exc)
    assert str(saved) in message and "SavedModel" in message and "Keras 3" in message
    assert "tf.keras.models.load_model" in message and ".save('model.keras')" in message

    with pytest.raises(ModelError) as exc:
        load_user_model(tmp_path)
    assert str(tmp_path) in one_line(exc) and "not a TensorFlow SavedModel" in str(exc.value)

    missing = tmp_path / "nope.keras"
    with pytest.raises(ModelError) as exc:
        load_user_model(missing)
    assert str(missing) in one_line(exc) and "does not exist" in str(exc.value)

    for name in ("broken.keras", "broken.h5"):
        corrupt = tmp_path / name
        corrupt.write_bytes(b"this is not a model" * 10)
        with pytest.raises(ModelError) as exc:
            load_user_model(corrupt)
        assert str(corrupt) in one_line(exc) and "corrupt" in str(exc.value)

    other = tmp_path / "model.pt"
    other.write_bytes(b"\x00")
    with pytest.raises(ModelError, match=r"unsupported file type '\.pt'") as exc:
        load_user_model(other)
    assert str(other) in one_line(exc)

    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(2)])
    weights = tmp_path / "only.weights.h5"
    model.save_weights(weights)
    with pytest.raises(ModelError, match="weights only") as exc:
        load_user_model(weights)
    assert str(weights) in one_line(exc)

    inp = keras.Input((4, 4, 3))
    lam = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Conv2D(2, 3)(inp)))
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"lambda{suffix}"
        lam.save(path)
        with pytest.raises(ModelError, match="Lambda layer .* safe mode") as exc:
            load_user_model(path)
        assert str(path) in one_line(exc)
        assert isinstance(load_user_model(path, safe_mode=False), keras.Model)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_custom_objects(tmp_path, suffix):
    model = custom_model()
    path = tmp_path / f"custom{suffix}"
    model.save(path)
    with pytest.raises(ModelError) as exc:
        load_user_model(path)
    message = one_line(exc)
    assert str(path) in message and "'ChannelScale'" in message and "pass --custom-objects FILE.py that defines it" in message

    objects = tmp_path / "my_layers.py"
    objects.write_text(textwrap.dedent(CUSTOM_SOURCE))
    loaded = load_user_model(path, custom_objects=str(objects))
    assert type(loaded.get_layer("scaled")).__name__ == "ChannelScale"
    x = np.random.default_rng(4).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    ours = Explainer(split_model(loaded, "auto"), top=2)(x)
    np.testing.assert_allclose(ours.probs, model.predict(x, verbose=0), atol=1e-6)
    assert_maps_match(dense_logits(model, "target", model.get_layer("predictions")), "softmax", x, ours)

    # an explicit CUSTOM_OBJECTS dict is used as it is
    table = tmp_path / "table.py"
    table.write_text(textwrap.dedent(CUSTOM_SOURCE) + "\nCUSTOM_OBJECTS = {'Other': helper}\n")
    with pytest.raises(ModelError, match="'ChannelScale'.*table.py does not define it"):
        load_user_model(path, custom_objects=table)
    table.write_text(textwrap.dedent(CUSTOM_SOURCE) + "\nCUSTOM_OBJECTS = {'ChannelScale': ChannelScale}\n")
    assert load_user_model(path, custom_objects=table).count_params() == model.count_params()


def test_custom_objects_file_errors(tmp_path):
    model_path = tmp_path / "m.keras"
    custom_model().save(model_path)
    missing = tmp_path / "absent.py"
    with pytest.raises(ModelError) as exc:
        load_user_model(model_path, custom_objects=missing)
    assert str(missing) in one_line(exc) and "does not exist" in str(exc.value)
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    with pytest.raises(ModelError) as exc:
        load_user_model(model_path, custom_objects=broken)
    assert str(broken) in one_line(exc) and "SyntaxError" in str(exc.value)
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(ModelError, match="defines no Keras layer"):
        load_user_model(model_path, custom_objects=empty)


def test_user_model_is_not_mutated(tmp_path):
    model = trained("softmax")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_user_model(path)
    before = snapshot(loaded)
    layer_count = len(loaded.layers)
    Explainer(split_model(loaded, "auto"), top=2)(scenes("softmax", 2, seed=9)[0])
    assert len(loaded.layers) == layer_count
    assert loaded.get_layer("predictions").activation.__name__ == "softmax"
    assert_unchanged(loaded, before)
    assert pathlib.Path(path).stat().st_size > 0


def test_library_feeds_a_grey_model_the_luma_of_any_image():
    """Issue 22.2: GradCAM.prepare / explain give a 1-channel model one channel, the BT.601 luma
    (OpenCV's RGB2GRAY: a grey image is its own luma, so grey and RGB-of-grey inputs agree)."""
    import cv2

    from builders import grey_cnn
    from gradcam_cli.cam import GradCAM

    cam = GradCAM(model=grey_cnn(), preprocessing="scale")
    assert cam.profile.channels == 1 and cam.profile.input_size == (64, 64)
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    batch = cam.prepare([rgb, grey, np.repeat(grey[..., None], 3, axis=2)])
    assert batch.shape == (3, 64, 64, 1) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0, ..., 0], grey / np.float32(255))
    assert (batch[0] == batch[1]).all() and (batch[1] == batch[2]).all()
    a, b = cam.explain([rgb, grey], top=2)
    assert a.maps.shape == (2, 64, 64) and a.predictions == b.predictions
