"""Batch size: out-of-memory back-off loses no image; mixed precision agrees with float32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from gradcam_cli.engine.explainer import Explainer
from helpers import invoke

from gradcam_cli.cam import GradCAM

SAMPLES = ["chelsea", "coffee", "astronaut", "rocket"]



@pytest.fixture
def memory_for_three_images(monkeypatch):
    """The explainer raises TensorFlow's out-of-memory error for batches over 3 images."""
    real_call, sizes = Explainer.__call__, []

    def limited(self, batch, extra=None):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        return real_call(self, batch, extra)

    monkeypatch.setattr(Explainer, "__call__", limited)
    return sizes


def test_out_of_memory_halves_the_batch_and_loses_nothing(tmp_path, lite0_cam, memory_for_three_images):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        for name in SAMPLES:
            Image.open(f"sample_images/{name}.jpg").save(src / f"{name}{i}.jpg")
    lite0_cam.max_batch = None
    out = tmp_path / "o"
    result = invoke("explain", src, "--out", out, "--batch-size", 8, "-q", "--top", 2)
    lite0_cam.max_batch = None
    assert result.exit_code == 0, result.stderr
    assert memory_for_three_images[:3] == [8, 4, 2]  # 8 failed, 4 failed, 2 fits; then 2 at a time
    assert set(memory_for_three_images[3:]) == {2}
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["summary"] == {"images": 8, "done": 8, "failed": 0, "batch_size_after_out_of_memory": 2}
    for record in doc["images"]:
        image = np.asarray(Image.open(record["path"]))
        [expected] = lite0_cam.explain([image], top=2)
        assert [p["class_index"] for p in record["predictions"]] == [p.class_index for p in expected.predictions]


def test_out_of_memory_at_batch_one_is_one_line(tmp_path, monkeypatch, lite0_cam):
    def always(self, batch, extra=None):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(Explainer, "__call__", always)
    result = invoke("explain", "sample_images/coffee.jpg", "--out", tmp_path / "o", "-q")
    assert result.exit_code == 4
    assert result.stderr.strip() == (
        "Error: out of memory with a batch of 1 image on backbone 'efficientnet_lite0'; "
        "free accelerator memory or use a smaller input size"
    )


def test_batch_size_auto_and_bad_values(tmp_path, lite0_cam):
    assert invoke("explain", "sample_images/coffee.jpg", "--out", tmp_path / "o", "-q", "--batch-size", "auto").exit_code == 0
    doc = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert doc["options"]["batch_size"] == 16  # what 'auto' resolved to: this machine has no GPU
    bad = invoke("explain", "sample_images/coffee.jpg", "--out", tmp_path / "o", "--batch-size", "0")
    assert bad.exit_code == 2 and "must be a whole number from 1 to 4096, or 'auto'" in bad.stderr


def test_mixed_precision_maps_agree_with_float32(lite0_cam):
    mixed = GradCAM("efficientnet_lite0", precision="mixed")
    assert mixed.model.get_layer("top_activation").output.dtype == "float16"
    assert mixed.describe()["precision"] == "mixed"
    images = [np.asarray(Image.open(f"sample_images/{n}.jpg")) for n in SAMPLES]
    full, half = lite0_cam.explain(images, top=3), mixed.explain(images, top=3)
    for a, b in zip(full, half):
        assert [p.class_index for p in a.predictions] == [p.class_index for p in b.predictions]
        assert b.maps.dtype == np.float32
        np.testing.assert_allclose(b.maps, a.maps, atol=0.02)  # measured: max 0.0083, mean 0.001
        np.testing.assert_allclose([p.probability for p in b.predictions],
                                   [p.probability for p in a.predictions], atol=0.01)
    import keras

    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_mixed_precision_refuses_an_own_model_in_memory():
    import keras

    from gradcam_cli.errors import OptionError

    inp = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="target")(inp))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(OptionError, match="--precision mixed applies to registry backbones"):
        GradCAM(model=model, precision="mixed")
