"""A layer sweep: the block outputs found from the graph (keras.applications built with weights=None,
a sequential CNN), and one compiled pass giving every layer's maps equal to one explainer per layer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradcam_cli.cam import GradCAM
from gradcam_cli.engine.layer_sweep import SweepExplainer, fusable
from gradcam_cli.errors import OptionError
from gradcam_cli.models.sweep import parse_layers, resolve_layers, sweep_layers
from gradcam_cli.settings import MethodOptions


def named_cnn() -> keras.Model:
    """Three 4-D layers at 16, 8 and 4 cells, then pooling and a softmax (explicit names)."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", strides=2, name="c1")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="c2_bn")(x)
    x = keras.layers.ReLU(name="c2_relu")(x)
    x = keras.layers.MaxPooling2D(name="p2")(x)
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="c3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(4, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="named_cnn")


def test_sweep_of_a_plain_cnn_folds_pointwise_tails():
    # every layer is a cut; c2's normalisation and ReLU are its tail: c2_relu stands for it
    assert sweep_layers(named_cnn(), 10) == ["c1", "c2_relu", "p2", "c3"]
    assert sweep_layers(named_cnn(), 2) == ["p2", "c3"]


def test_sweep_of_a_sequential_cnn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.Conv2D(4, 3, name="s1"),
                              keras.layers.Activation("relu", name="s1_relu"), keras.layers.Conv2D(4, 3, name="s2"),
                              keras.layers.Flatten(name="flat"), keras.layers.Dense(2, name="out")], name="seq")
    assert sweep_layers(model, 4) == ["s1_relu", "s2"]


@pytest.mark.parametrize("name, size, expected", [
    # residual blocks: each block's output after its addition and ReLU
    ("ResNet50", 64, ["conv4_block6_out", "conv5_block1_out", "conv5_block2_out", "conv5_block3_out"]),
    # inverted residuals: the additions; a block without one ends at its projection; Conv_1's tail out_relu
    ("MobileNetV2", 96, ["block_14_add", "block_15_add", "block_16_project_BN", "out_relu"]),
])
def test_sweep_of_keras_applications(name, size, expected):
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=3)
    assert sweep_layers(model, 4) == expected


def test_sweep_inside_a_nested_backbone():
    from builders import mobilenet_wrapped

    model, base = mobilenet_wrapped("functional")
    found = sweep_layers(model, 3)
    assert [p.rsplit("/", 1)[-1] for p in found] == ["block_15_add", "block_16_project_BN", "out_relu"]
    assert all(p.split("/")[0] == base.name for p in found)  # paths through the nested model, as --layer takes


def test_parse_and_resolve_layers_refuse_bad_input():
    assert parse_layers("sweep") == 4 and parse_layers("sweep:2") == 2
    assert parse_layers(" c1, c3 ") == ("c1", "c3")
    for bad in ("sweep:0", "sweep:x", "c1,,c3", "c1,c1"):
        with pytest.raises(ValueError, match="--layers"):
            parse_layers(bad)
    model = named_cnn()
    assert resolve_layers(model, ("c1", "named_cnn/c3")) == ["c1", "c3"]
    with pytest.raises(OptionError, match=r"no layer 'c9'.*pass --layers with one of its 4-D layers"):
        resolve_layers(model, ("c1", "c9"))
    with pytest.raises(OptionError, match=r"layer 'gap'.*not 4-D.*nor 3-D tokens.*pass --layers with a 4-D or token layer"):
        resolve_layers(model, ("gap",))
    with pytest.raises(OptionError, match="at least one layer"):
        sweep_layers(model, 0)


METHODS = ("gradcam", "gradcam++", "layercam", "eigencam")


def test_one_pass_equals_one_explainer_per_layer():
    model = named_cnn()
    layers = ["c1", "c2_relu", "c3"]
    sweep = SweepExplainer(model, layers, METHODS)
    rng = np.random.default_rng(0)
    for size in (3, 5):  # two batch sizes: traced once
        batch = rng.normal(0, 1, (size, 32, 32, 3)).astype(np.float32)
        scores, probs, classes, maps = sweep(batch)
        np.testing.assert_allclose(probs, model.predict(batch, verbose=0), atol=1e-5)  # float32 round-off
        np.testing.assert_array_equal(classes, probs.argmax(axis=1))
        for layer in layers:
            cam = GradCAM(model=model, layer=layer)
            found = cam.explain_prepared(batch, top=1, method=list(METHODS))
            for method in METHODS:
                reference = np.stack([e.maps_by_method[method][0] for e in found])
                # maps in [0, 1]; the same float32 ops in another order
                np.testing.assert_allclose(maps[(method, layer)], reference, atol=1e-4, err_msg=f"{method}@{layer}")
    assert sweep.trace_count() == 1


def test_parallel_branches_run_under_one_tape():
    # b and c both read a: neither lies after the other, so the whole model runs under the tape
    keras.utils.set_random_seed(6)
    inp = keras.Input((20, 20, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="a")(inp)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="b")(a)
    c = keras.layers.Conv2D(6, 1, activation="relu", name="c")(a)
    x = keras.layers.Add(name="join")([b, c])
    out = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inp, out, name="branchy")
    sweep = SweepExplainer(model, ["b", "c", "join"], ("gradcam", "layercam"))
    assert sweep.first is None
    assert SweepExplainer(model, ["a", "join"], ("gradcam",)).first is not None  # join lies after a
    batch = np.random.default_rng(2).normal(0, 1, (3, 20, 20, 3)).astype(np.float32)
    _, _, _, maps = sweep(batch)
    for layer in ("b", "c", "join"):
        found = GradCAM(model=model, layer=layer).explain_prepared(batch, top=1, method=["gradcam", "layercam"])
        for method in ("gradcam", "layercam"):
            reference = np.stack([e.maps_by_method[method][0] for e in found])
            np.testing.assert_allclose(maps[(method, layer)], reference, atol=1e-4, err_msg=f"{method}@{layer}")


def test_a_given_class_is_explained_and_unfused_methods_are_refused():
    model = named_cnn()
    batch = np.random.default_rng(1).normal(0, 1, (2, 32, 32, 3)).astype(np.float32)
    _, _, classes, _ = SweepExplainer(model, ["c3"], ("gradcam",), classes=[2, 0])(batch)
    assert classes.tolist() == [2, 2]
    assert not fusable("scorecam") and not fusable("guided") and fusable("hirescam")
    assert not fusable("gradcam", MethodOptions(aug_smooth=True))
    with pytest.raises(ValueError, match="scorecam"):
        SweepExplainer(model, ["c3"], ("gradcam", "scorecam"))


def test_a_transformers_sweep_is_centred_as_its_explainers_are():
    """The Swin-like model's 4-D stages with MultiHeadAttention in its windows (a transformer:
    ``--centre-activations auto`` centres its maps): the sweep's maps equal one (centred) explainer per layer,
    and ``--centre-activations off`` reaches the sweep too."""
    from transformer_builders import small_swin

    model = small_swin(size=32, seed=4, window=4, relative=False)
    layers = ["stage2_block0_norm1", "norm"]
    batch = np.random.default_rng(1).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    seen = {}
    for centre in ("auto", "off"):
        options = MethodOptions(centre_activations=centre)
        sweep = SweepExplainer(model, layers, METHODS, options=options)
        assert sweep.centred == [centre == "auto"] * 2  # both layers lie after attention
        _, _, _, maps = seen[centre] = sweep(batch)
        for layer in layers:
            found = GradCAM(model=model, layer=layer).explain_prepared(batch, top=1, method=list(METHODS),
                                                                       options=options)
            for method in METHODS:
                reference = np.stack([e.maps_by_method[method][0] for e in found])
                np.testing.assert_allclose(maps[(method, layer)], reference, atol=1e-4, err_msg=f"{method}@{layer}")
    assert np.abs(seen["auto"][3][("gradcam", "norm")] - seen["off"][3][("gradcam", "norm")]).max() > 0.1


def test_token_layers_are_swept_as_their_grids():
    """A ViT's token layers (a class token dropped, the rest as its 4 x 4 grid): the sweep's maps equal one
    explainer per layer (both centred, the transformer default), traced once."""
    from transformer_builders import small_vit

    model = small_vit(size=32, depth=2, prefix=1, pool="mean", seed=3)
    layers = ["block0_norm1", "block1_add2", "norm"]
    sweep = SweepExplainer(model, layers, METHODS)
    assert [layout.grid for layout in sweep.layouts] == [(4, 4)] * 3 and sweep.centred == [True] * 3
    assert [layout.prefix for layout in sweep.layouts] == [1] * 3  # the class token dropped
    assert sweep.first == sweep.keys[0]  # the part before the first token layer runs outside the tape
    assert sweep_layers(model) == ["block1_norm1", "block1_norm2", "norm"]  # `sweep`: auto's candidates
    assert sweep_layers(model, 2) == ["block1_norm2", "norm"]
    rng = np.random.default_rng(2)
    for size in (3, 1):
        batch = rng.uniform(0, 1, (size, 32, 32, 3)).astype(np.float32)
        _, _, _, maps = sweep(batch)
        for layer in layers:
            found = GradCAM(model=model, layer=layer).explain_prepared(batch, top=1, method=list(METHODS))
            for method in METHODS:
                reference = np.stack([e.maps_by_method[method][0] for e in found])
                assert reference.shape == (size, 4, 4) and reference.max() > 0  # not a vacuous comparison
                np.testing.assert_allclose(maps[(method, layer)], reference, atol=1e-4, err_msg=f"{method}@{layer}")
    assert sweep.trace_count() == 1


def test_token_sweeps_refuse_in_one_line_naming_layers():
    """A grid that does not fit names --layers (not --layer); `sweep` on a token model without
    MultiHeadAttention (as keras-hub's Swin) has no block list: one line asking for the names."""
    from transformer_builders import small_vit

    with pytest.raises(OptionError, match=r"10 tokens are not .*4x4 grid; .*or another --layers$"):
        SweepExplainer(small_vit(size=24, depth=1, prefix=1, seed=1), ["block0_norm1"], ("gradcam",),
                       tokens=((4, 4), None))
    keras.utils.set_random_seed(2)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Reshape((16, 48), name="tokens")(inp)  # no 4-D layer: auto is the pooled token norm
    x = keras.layers.LayerNormalization(name="token_norm")(keras.layers.Dense(8, name="mix")(x))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x))
    with pytest.raises(OptionError, match=r"automatic layer 'token_norm': name the layers, --layers A,B,C"):
        sweep_layers(keras.Model(inp, out, name="tokens_without_mha"))
