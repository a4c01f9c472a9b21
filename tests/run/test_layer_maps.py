"""evaluate's layer-sweep maps: fused methods from the one pass, the others (Score-CAM) from one
explainer per layer for the same class, each layer with its own upsampler; the column names."""

from __future__ import annotations

import keras
import numpy as np

from gradcam_cli.cam import GradCAM
from gradcam_cli.run.layer_maps import LayerMaps, candidate_columns
from gradcam_cli.settings import EvalSettings


def model() -> keras.Model:
    keras.utils.set_random_seed(9)
    inp = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="m1")(inp)
    x = keras.layers.MaxPooling2D(name="m1_pool")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="m2")(x)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inp, out, name="lm")


def test_columns_and_maps_of_fused_and_unfused_methods():
    settings = EvalSettings(methods=("gradcam", "scorecam"), layers=("m1", "m2"))
    assert candidate_columns(settings) == ["gradcam@m1", "scorecam@m1", "gradcam@m2", "scorecam@m2"]
    assert candidate_columns(EvalSettings(methods=("gradcam",))) == ["gradcam"]
    cam = GradCAM(model=model(), layer="m2")
    batch = np.random.default_rng(3).normal(0, 1, (4, 24, 24, 3)).astype(np.float32)
    classes, probs, columns = LayerMaps(cam, settings)(batch)
    np.testing.assert_array_equal(classes, probs.argmax(axis=1))
    assert list(columns) == candidate_columns(settings)
    for layer, side in (("m1", 24), ("m2", 12)):
        reference = GradCAM(model=cam.model, layer=layer)
        found = reference.explain_prepared(batch, top=1, method=["gradcam", "scorecam"])
        assert [e.predictions[0].class_index for e in found] == classes.tolist()
        for method in ("gradcam", "scorecam"):
            maps, upsampler = columns[f"{method}@{layer}"]
            assert maps.shape == (4, side, side)
            # the same maps (float32 ops in another order); Score-CAM through its own explainer
            np.testing.assert_allclose(maps, np.stack([e.maps_by_method[method][0] for e in found]), atol=1e-4)
            np.testing.assert_allclose(upsampler(maps[0], (24, 24)), reference.upsampler(maps[0], (24, 24)))
