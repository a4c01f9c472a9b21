"""keras-hub classifiers through `gradcam explain --model`, offline: small random configurations
saved as .keras and with save_to_preset write overlays (CNNs and the ViT / DeiT / Swin
token-layer families); hub profiles offline and a missing keras-hub are one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import keras_hub  # noqa: F401  the [hub] extra (also in [test]): missing, the tests fail rather than skip
import keras
from helpers import invoke
from hub_builders import BUILDERS, CLASSES, SIZE
from PIL import Image

FAMILIES = ["resnet", "efficientnet", "vit", "deit", "swin"]


@pytest.fixture(autouse=True)
def _empty_kagglehub_cache(tmp_path, monkeypatch):
    """kagglehub's cache in a temp dir: presets are absent, and a failed download leaves nothing behind."""
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three PNGs, one at the model's size and two larger, non-square ones."""
    folder = tmp_path_factory.mktemp("hub_images")
    rng = np.random.default_rng(4)
    for i, (h, w) in enumerate([(SIZE, SIZE), (48, 80), (90, 60)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


_SAVED: dict = {}


def saved(name: str, tmp_path_factory):
    """(model, .keras path, preset directory) of a family, built once per session."""
    if name not in _SAVED:
        root = tmp_path_factory.mktemp(f"hub_{name}")
        model = BUILDERS[name]()
        model.save(root / "model.keras")
        model.save_to_preset(str(root / "preset"))
        _SAVED[name] = (model, root / "model.keras", root / "preset")
    return _SAVED[name]


@pytest.mark.parametrize("source", ["keras", "preset"])
@pytest.mark.parametrize("name", FAMILIES)
def test_hub_classifier_explains_offline_and_writes_overlays(name, source, images, tmp_path, tmp_path_factory):
    model, keras_file, preset = saved(name, tmp_path_factory)
    out = tmp_path / "out"
    result = invoke("explain", images, "--model", keras_file if source == "keras" else preset, "--top", 2,
                    "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["keras_hub"]["class"] == type(model).__name__
    assert doc["keras_hub"]["output"].startswith("logits") and doc["head"] == "softmax"
    assert doc["preprocessing"]["mode"] == "mean_std"
    converter = type(model.preprocessor.image_converter).__name__
    assert doc["preprocessing"]["source"] == f"the model's image converter ({converter})"
    assert doc["input_size"] == [SIZE, SIZE]
    assert len(doc["images"]) == 3
    for record in doc["images"]:
        with Image.open(images / record["path"].rsplit("/", 1)[-1]) as original:
            size = original.size
        assert len(record["predictions"]) == 2
        for prediction in record["predictions"]:
            assert 0 <= prediction["class_index"] < CLASSES
            with Image.open(out / prediction["overlay"]) as overlay:
                assert overlay.size == size  # drawn at the original resolution
    # the probabilities are the softmax of the model's own logits on the converter's input
    first = np.asarray(Image.open(images / "img0.png").convert("RGB"), np.float32)[None]
    logits = keras.ops.convert_to_numpy(model(model.preprocessor(first)))[0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    record = next(r for r in doc["images"] if r["path"].endswith("img0.png"))
    for prediction in record["predictions"]:
        assert prediction["probability"] == pytest.approx(float(probabilities[prediction["class_index"]]), abs=1e-5)


def test_hub_profile_offline_is_one_line_exit_4(images, tmp_path):
    result = invoke("explain", images / "img0.png", "-b", "hub_vit_base_patch16_224_imagenet", "--out", tmp_path / "o",
                    "-q")
    assert result.exit_code == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("Error: the keras-hub preset 'vit_base_patch16_224_imagenet' of backbone "
                               "'hub_vit_base_patch16_224_imagenet' is not on this machine and could not be downloaded")
    assert not (tmp_path / "o" / "predictions.json").exists()


def test_without_keras_hub_the_cli_says_the_extra(images, tmp_path, tmp_path_factory, monkeypatch):
    _, keras_file, preset = saved("resnet", tmp_path_factory)
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub raises ImportError
    for model in (keras_file, preset):
        result = invoke("explain", images / "img0.png", "--model", model, "--out", tmp_path / "o", "-q")
        assert result.exit_code == 4
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].endswith("needs keras-hub, which is not installed: pip install 'gradcam-cli[hub]'")
    result = invoke("explain", images / "img0.png", "-b", "hub_resnet_50_imagenet", "--out", tmp_path / "o", "-q")
    assert result.exit_code == 4 and result.stderr.strip().endswith("pip install 'gradcam-cli[hub]'")


def test_backbones_lists_the_hub_presets_and_the_new_applications():
    rows = {row["name"]: row for row in json.loads(invoke("backbones", "--json").stdout)}
    assert {"convnext_tiny", "efficientnetv2_b0", "hub_vit_base_patch16_224_imagenet",
            "hub_deit_base_distilled_patch16_224_imagenet", "hub_swin_tiny_patch4_window7_224"} <= set(rows)
    assert rows["hub_vit_base_patch16_224_imagenet"]["preprocessing"] == "converter"
