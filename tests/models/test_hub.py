"""keras-hub image classifiers (the [hub] extra): loading from .keras and from a local preset
directory, the image converter as the preprocessing, the logits head, ViT / DeiT rebuilt block by
block with the same weights, Grad-CAM on a keras-hub CNN equal to a GradientTape reference, the
shipped hub profiles, and one-line errors (no keras-hub, a backbone-only preset, offline presets)."""

from __future__ import annotations

import pathlib
import re
import sys

import numpy as np
import pytest

import keras_hub  # the [hub] extra (also in [test]): missing, these tests fail rather than skip
import keras
import tensorflow as tf
from hub_builders import BUILDERS, CLASSES, SIZE

from gradcam_cli.cam import GradCAM
from gradcam_cli.config.profiles import own_model_profile
from gradcam_cli.io.preprocess import normalise, resize
from gradcam_cli.errors import ModelError, OptionError, WeightsError
from gradcam_cli.models import hub
from gradcam_cli.models.graph import flatten
from gradcam_cli.models.load import load_user_model
from gradcam_cli.models.split import split_model
from gradcam_cli.models.targets import candidate_layers

#: float32 tolerance for values of magnitude <= ~3 computed by differently ordered float32
#: arithmetic (x * scale + offset against (x - mean) / std; the same matmuls in another graph):
#: a few ulps of 3 is ~1e-6, so 1e-5 leaves room and still fails on any real difference
F32 = 1e-5

def _base(path: str) -> str:
    """``path`` with Keras's auto-numbering suffix dropped from the nested backbone's name
    (``res_net_backbone_1/...`` when another test in the same worker built one first: it depends on
    what else the process built); layer names keep theirs (MiT's ``output_level_1`` is its own)."""
    return re.sub(r"_\d+(?=/)", "", path)


@pytest.fixture(autouse=True)
def _empty_kagglehub_cache(tmp_path, monkeypatch):
    """kagglehub's cache in a temp dir: presets are absent, and a failed download leaves nothing behind."""
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))


def _pixels(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family saved as .keras and with save_to_preset: name -> (model, .keras path, preset dir)."""
    root = tmp_path_factory.mktemp("hub")
    out = {}
    for name in ("vit", "deit", "resnet", "efficientnet"):
        model = BUILDERS[name]()
        model.save(root / f"{name}.keras")
        model.save_to_preset(str(root / f"{name}_preset"))
        out[name] = (model, root / f"{name}.keras", root / f"{name}_preset")
    return out


# -- the functional view -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vit", "deit"])
def test_rebuilt_transformer_equals_the_original_and_exposes_every_block_layer(name, saved):
    model, _, _ = saved[name]
    view = hub.hub_view(model)
    assert view.rebuilt and view.logits and view.family == name
    x = np.random.default_rng(1).normal(size=(3, SIZE, SIZE, 3)).astype(np.float32)
    logits = keras.ops.convert_to_numpy(model(x))
    rebuilt_logits = keras.Model(view.model.inputs, view.model.layers[-1].input)  # the Softmax's input
    assert float(np.abs(logits).max()) > 0.1  # not vacuous
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rebuilt_logits(x)), logits, atol=F32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(view.model(x)),
                               keras.ops.convert_to_numpy(keras.ops.softmax(logits)), atol=F32)
    assert isinstance(view.model.layers[-1], keras.layers.Softmax)  # the cut removes it: scores are the logits
    paths = {step.path for step in flatten(view.model).steps}
    inner = {"ln_1", "mha", "attention_residual", "ln_2", "mlp", "output_layer" if name == "deit" else "mlp_residual"}
    for block in (1, 2):
        assert {f"transformer_block_{block}/{layer}" for layer in inner} <= paths
    # the token layout a reshape to (h, w) needs: 4 x 4 patches of 8 px, the class (+ distillation) token first
    tokens = view.model.get_layer("transformer_block_2").output.shape[1]
    assert view.tokens == {"grid": [4, 4], "prefix_tokens": 2 if name == "deit" else 1}
    assert tokens == 16 + view.tokens["prefix_tokens"] and view.describe()["tokens"] == view.tokens
    # the same weights, not copies: a change to the original shows in the view
    dense = model.output_dense
    dense.bias.assign(dense.bias + 1.0)
    try:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(rebuilt_logits(x)), logits + 1.0, atol=F32)
    finally:
        dense.bias.assign(dense.bias - 1.0)


def test_rebuilt_vit_with_mean_pooling_and_pre_logits_equals_the_original():
    model = BUILDERS["vit"](seed=3, pooling="gap", intermediate_dim=8)  # the mean of all tokens, a tanh Dense
    x = np.random.default_rng(2).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    view = hub.hub_view(model)
    rebuilt_logits = keras.Model(view.model.inputs, view.model.layers[-1].input)
    assert [layer.name for layer in view.model.layers[-4:]] == ["pool_gap", "pre_logits", "predictions", "softmax"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rebuilt_logits(x)), keras.ops.convert_to_numpy(model(x)),
                               atol=F32)


@pytest.mark.parametrize("name", ["resnet", "efficientnet", "densenet", "mit", "vgg", "xception"])
def test_cnn_backbones_are_functional_and_their_last_map_is_the_auto_layer(name, saved):
    model = saved[name][0] if name in saved else BUILDERS[name]()
    view = hub.hub_view(model)
    assert not view.rebuilt and view.logits
    split = split_model(view.model, "auto")
    expected = {"resnet": "res_net_backbone/stack1_block0_out", "efficientnet": "efficient_net_backbone/top_activation",
                "densenet": "dense_net_backbone/relu", "mit": "mi_t_backbone/output_level_1",
                "vgg": "head/fc2",  # keras-hub's VGG head: fc1, fc2 are convolutions before the pooling
                "xception": "xception_backbone/block2_sepconv2_act"}[name]
    assert _base(split.layer_name) == expected and split.cut
    assert split.head_type == "softmax" and split.num_classes == CLASSES
    x = np.random.default_rng(3).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(split.full(x)[1]), keras.ops.convert_to_numpy(model(x)),
                               atol=F32)  # the scores are the model's logits


def test_swin_stages_are_nodes_of_its_backbone_graph():
    """Swin needs no rebuild: its stages are layers of the backbone's functional graph (tokens
    (B, H*W, C) between them), reachable by a nested path."""
    model = BUILDERS["swin"]()
    view = hub.hub_view(model)
    kinds = {step.path: type(step.op).__name__ for step in flatten(view.model).steps}
    stages = [path for path, kind in kinds.items() if kind == "SwinTransformerStage"]
    assert len(stages) == 2 and all(_base(path).startswith("swin_transformer_backbone/") for path in stages)


# -- the image converter prepares the input --------------------------------------------------


@pytest.mark.parametrize("name", ["vit", "deit", "resnet", "efficientnet"])
def test_converter_preprocessing_equals_the_models_own_preprocessor(name, saved):
    model, path, _ = saved[name]
    view = hub.hub_view(load_user_model(path))
    profile = hub.converter_profile(own_model_profile(path), view.converter, view.model.name)
    assert profile.preprocessing == "mean_std" and profile.input_size == (SIZE, SIZE)
    images = _pixels(4, seed=5)
    ours = normalise(images, profile)
    theirs = keras.ops.convert_to_numpy(model.preprocessor(images.astype(np.float32)))
    np.testing.assert_allclose(ours, theirs, atol=F32, rtol=0)
    assert float(np.abs(theirs - images).mean()) > 1.0  # not vacuous: the values left the 0..255 scale
    # another size: resized by us (area-averaging, the whole image), then the converter's affine map
    big = _pixels(1, size=2 * SIZE + 6, seed=6)[0]
    ours = normalise(resize(big, profile.input_size)[None], profile)
    converter = model.preprocessor.image_converter
    theirs = keras.ops.convert_to_numpy(converter(resize(big, (SIZE, SIZE))[None].astype(np.float32)))
    np.testing.assert_allclose(ours, theirs, atol=F32, rtol=0)
    if name in ("resnet", "efficientnet"):  # the library front end prepares the same input
        cam = GradCAM(model=str(path))
        assert cam.hub.converter_used and cam.describe()["preprocessing"]["source"].startswith("the model's image")
        np.testing.assert_array_equal(cam.prepare(list(images) + [big]),
                                      np.concatenate([normalise(images, profile), ours]))


def test_explicit_preprocess_flag_wins_over_the_converter(saved):
    _, path, _ = saved["resnet"]
    cam = GradCAM(model=str(path), preprocessing="scale")
    assert not cam.hub.converter_used and cam.profile.preprocessing == "scale"
    assert cam.describe()["preprocessing"]["source"].startswith("--preprocess")


def test_converter_preprocessing_on_a_model_without_one_is_one_line(saved, tmp_path):
    from gradcam_cli.config.profiles import profile_from_mapping

    model = BUILDERS["resnet"]()
    model.preprocessor = None
    profile = profile_from_mapping({"name": "x", "model": "unused.keras", "target_layer": "auto",
                                    "preprocessing": "converter"}, tmp_path / "x.toml")
    with pytest.raises(OptionError) as err:
        GradCAM(model=model, profile=profile)
    assert "has no image converter" in str(err.value) and "\n" not in str(err.value)
    plain = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(OptionError) as err:
        GradCAM(model=plain, preprocessing="converter")
    assert "is no keras-hub image classifier" in str(err.value) and "\n" not in str(err.value)


# -- Grad-CAM on a keras-hub CNN equals the tape; logits and probabilities ------------------------


def _tape_gradcam(model, images: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM by GradientTape on the original keras-hub objects: backbone -> pooler -> dense."""
    with tf.GradientTape() as tape:
        feats = model.backbone(images)
        tape.watch(feats)
        logits = model.output_dense(model.pooler(feats))
        score = logits[0, class_index]
    grads = tape.gradient(score, feats)[0].numpy()
    cam = np.maximum((feats[0].numpy() * grads.mean(axis=(0, 1))).sum(-1), 0)
    return cam / cam.max() if cam.max() > 0 else cam


@pytest.mark.parametrize("source", ["keras", "preset"])
def test_hub_resnet_gradcam_equals_the_tape_and_probabilities_are_the_softmax(source, saved):
    model, path, preset = saved["resnet"]
    cam = GradCAM(model=str(path if source == "keras" else preset))
    assert cam.describe()["keras_hub"]["output"].startswith("logits")
    assert cam.describe()["score"] == "class logit, before softmax"
    images = _pixels(3, seed=7)
    results = cam.explain(list(images), top=2)
    x = cam.prepare(list(images))
    logits = keras.ops.convert_to_numpy(model(x))
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    for b, result in enumerate(results):
        np.testing.assert_allclose(result.probabilities, probabilities[b], atol=1e-6)
        for j, prediction in enumerate(result.predictions):
            assert prediction.class_index == int(np.argsort(-logits[b])[j])
            reference = _tape_gradcam(model, x[b: b + 1], prediction.class_index)
            assert reference.max() > 0
            np.testing.assert_allclose(result.maps[j], reference, atol=F32)


def test_preset_directory_and_keras_file_give_the_same_predictions(saved):
    _, path, preset = saved["efficientnet"]
    images = list(_pixels(2, seed=8))
    a = GradCAM(model=str(path)).explain(images, top=3)
    b = GradCAM(model=str(preset)).explain(images, top=3)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.probabilities, y.probabilities, atol=1e-6)
        np.testing.assert_allclose(x.maps, y.maps, atol=F32)


@pytest.mark.parametrize("name", ["vit", "deit"])
def test_hub_transformer_loads_and_predicts_as_the_original(name, saved):
    """Loading, converter and prediction work now; the map itself needs token layers (below)."""
    model, path, preset = saved[name]
    images = _pixels(2, seed=9)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(model.preprocessor(images.astype(np.float32)))))
    for source in (path, preset):
        view = hub.hub_view(load_user_model(source))
        profile = hub.converter_profile(own_model_profile(source), view.converter, view.model.name)
        assert profile.preprocessing == "mean_std" and profile.input_size == (SIZE, SIZE)
        x = normalise(images, profile)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(view.model(x)), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["vit", "deit"])
def test_hub_transformer_explains_with_the_automatic_layer(name, saved):
    _, path, _ = saved[name]
    cam = GradCAM(model=str(path))
    assert cam.layer.startswith("transformer_block_2/")
    [result] = cam.explain(list(_pixels(1, seed=10)), top=1)
    assert result.maps.shape[1:] == (4, 4)  # the 4 x 4 patch grid, class (and distillation) token dropped


def test_hub_swin_explains_with_its_pooled_final_norm():
    """keras-hub's Swin has no keras.layers.MultiHeadAttention (its stages attend in windows of their
    own) and no 4-D layer: the automatic layer is the backbone's final LayerNorm, whose (B, 16, C)
    tokens the head averages, read as the 4 x 4 grid of the last stage (32 px / patch 4 / merge 2)."""
    cam = GradCAM(model=BUILDERS["swin"]())
    assert _base(cam.layer) == "swin_transformer_backbone/norm"
    listed = [(_base(info.name), info.shape) for info in candidate_layers(cam.model)]  # what `gradcam layers` shows
    assert listed[-3:] == [(f"swin_transformer_backbone/{name}", (16, 32)) for name in ("stage_0", "stage_1", "norm")]
    [result] = cam.explain(list(_pixels(1, seed=11)), top=1)
    assert result.maps.shape[1:] == (4, 4)


# -- errors, each one line -------------------------------------------------------------------


def test_backbone_only_preset_is_refused_with_one_line(tmp_path):
    BUILDERS["resnet"]().backbone.save_to_preset(str(tmp_path / "bb"))
    with pytest.raises(ModelError) as err:
        load_user_model(tmp_path / "bb")
    message = str(err.value)
    assert "\n" not in message and "backbone alone" in message and "save_to_preset" in message


def test_without_keras_hub_a_hub_model_says_the_extra(saved, monkeypatch):
    _, path, preset = saved["resnet"]
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub raises ImportError
    for source in (path, preset):
        with pytest.raises(ModelError) as err:
            load_user_model(source)
        assert "\n" not in str(err.value) and "pip install 'gradcam-cli[hub]'" in str(err.value)


def test_keras_file_hub_class_reads_the_archive_only(saved, tmp_path, monkeypatch):
    assert hub.keras_file_hub_class(saved["deit"][1]) == "DeiTImageClassifier"
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    assert hub.keras_file_hub_class(tmp_path / "plain.keras") is None
    # a keras-hub backbone inside a model of your own: its layers need keras-hub too
    backbone = BUILDERS["resnet"]().backbone
    inputs = keras.Input((SIZE, SIZE, 3))
    own = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(backbone(inputs))))
    own.save(tmp_path / "own.keras")
    assert hub.keras_file_hub_class(tmp_path / "own.keras") == "layers"
    assert load_user_model(tmp_path / "own.keras").layers[1].name == backbone.name  # loads with keras-hub
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    with pytest.raises(ModelError) as err:
        load_user_model(tmp_path / "own.keras")
    assert str(err.value) == (f"model {tmp_path / 'own.keras'} (with keras-hub layers) needs keras-hub, which is not "
                              "installed: pip install 'gradcam-cli[hub]'")


# -- shipped profiles --------------------------------------------------------------------------


def _hub_profiles(registry):
    return {name: p for name, p in registry.items() if p.preset is not None}


def test_hub_profiles_name_real_presets_and_use_the_converter(registry):
    profiles = _hub_profiles(registry)
    families = {name.split("_")[1] for name in profiles}
    assert {"vit", "deit", "swin", "resnet", "efficientnet"} <= families
    presets = keras_hub.models.ImageClassifier.presets
    for name, profile in profiles.items():
        assert name == "hub_" + profile.preset
        assert profile.preset in presets, name
        assert profile.preprocessing == "converter" and profile.target_layer == "auto"
        assert not profile.weights_offline()  # nothing cached in the tests' empty cache
        assert profile.weights_source() == f"keras-hub preset {profile.preset} (Kaggle download)"


def test_a_preset_counts_as_offline_once_kagglehub_holds_its_config(registry, tmp_path):
    import os

    profile = registry["hub_vit_base_patch16_224_imagenet"]
    version = pathlib.Path(os.environ["KAGGLEHUB_CACHE"]) / "models/keras/vit/keras/vit_base_patch16_224_imagenet/4"
    version.mkdir(parents=True)
    assert not profile.weights_offline()  # a failed download leaves empty folders
    (version / "config.json").write_text("{}")
    assert profile.weights_offline()


def test_hub_profile_offline_is_one_weights_error(registry):
    from gradcam_cli.models.build import build_model

    for name, profile in _hub_profiles(registry).items():
        for weights in ("imagenet", "none"):
            with pytest.raises(WeightsError) as err:
                build_model(profile, weights)
            message = str(err.value)
            assert "\n" not in message and f"'{profile.preset}'" in message and "could not be downloaded" in message


@pytest.mark.parametrize("name", ["vit", "deit"])
def test_hub_transformer_attention_methods(name, saved):
    """Rollout and gradient-weighted rollout reach keras-hub's MultiHeadAttention layers through the rebuilt
    encoder: rollout equals Abnar & Zuidema's rule in NumPy from each ``mha`` layer called eagerly on its
    ``ln_1`` output (the class token's row over the 4 x 4 patches, DeiT's distillation token dropped too);
    gradrollout gives each class its own map, the same from the .keras file and the preset directory."""
    _, path, preset = saved[name]
    cam = GradCAM(model=str(path))
    view = cam.model
    prefix = 2 if name == "deit" else 1
    assert cam.split.attention_layers == 2 and cam.split.attention_tokens.prefix == prefix
    images = list(_pixels(2, seed=12))
    found = cam.explain(images, top=2, method=["rollout", "gradrollout"])
    x = cam.prepare(images)
    for b, result in enumerate(found):
        rolled, tokens = None, view.get_layer(f"{name}_patching_and_embedding")(x[b:b + 1])
        for i in (1, 2):
            block = view.get_layer(f"transformer_block_{i}")
            q = block.get_layer("ln_1")(tokens)
            scores = keras.ops.convert_to_numpy(block.get_layer("mha")(q, q, return_attention_scores=True,
                                                                       training=False)[1])[0]
            tokens = block(tokens, training=False)
            mixed = 0.5 * scores.astype(np.float64).mean(axis=0) + 0.5 * np.eye(scores.shape[-1])
            mixed /= mixed.sum(axis=-1, keepdims=True)
            rolled = mixed if rolled is None else mixed @ rolled
        expected = np.maximum(rolled[0, prefix:].reshape(4, 4), 0)
        rollout, weighted = result.maps_by_method["rollout"], result.maps_by_method["gradrollout"]
        np.testing.assert_allclose(rollout[0], expected / expected.max(), atol=1e-5)
        np.testing.assert_allclose(rollout[1], rollout[0], atol=1e-6)  # class-agnostic
        assert np.abs(weighted[0] - weighted[1]).max() > 1e-3  # per class
    from_preset = GradCAM(model=str(preset)).explain(images, top=2, method=["rollout", "gradrollout"])
    for a, b in zip(found, from_preset):
        np.testing.assert_allclose(a.maps_by_method["gradrollout"], b.maps_by_method["gradrollout"], atol=1e-5)
