"""Every shipped profile builds, exposes a 4-D target layer, and its fast path equals the tape."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import REPO
from reference import gradcam_reference

#: every shipped profile that builds offline with random weights (keras-hub presets download even
#: their architecture: tests/models/test_hub.py checks those)
SHIPPED = sorted(p.stem for p in (REPO / "configs" / "backbones").glob("*.toml") if not p.stem.startswith("hub_"))
REQUIRED = {"vgg16", "vgg19", "xception", "resnet50", "resnet50v2", "inception_v3", "mobilenet_v2",
            "densenet121", "efficientnet_b0", "efficientnet_lite0", "convnext_tiny", "efficientnetv2_b0"}


def test_required_backbones_are_shipped(registry):
    assert REQUIRED <= set(registry)
    assert registry["vgg16"].target_layer == "block5_conv3" and registry["vgg16"].input_size == (224, 224)
    assert registry["xception"].target_layer == "block14_sepconv2_act"
    assert registry["xception"].input_size == (299, 299)
    assert registry["resnet50"].target_layer == "conv5_block3_out"
    assert registry["efficientnet_lite0"].target_layer == "top_activation"


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_builds_and_fast_path_equals_reference(name, registry):
    from gradcam_cli.models.build import build_model
    from gradcam_cli.models.split import split_model
    from gradcam_cli.engine.explainer import Explainer
    from gradcam_cli.io.preprocess import normalise

    profile = registry[name]
    model = build_model(profile, weights="none")
    split = split_model(model, profile.target_layer)
    target = next(op for op in model.operations if op.name == split.layer_name)  # a layer, or ConvNeXt's ops.add
    assert len(target.output.shape) == 4
    assert split.cut, f"{name}: the head should be separable at {profile.target_layer}"
    assert split.activation == "softmax" and split.num_classes == 1000

    h, w = profile.input_size
    rng = np.random.default_rng(0)
    x = normalise(rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8), profile)
    # VGG's head (pool -> flatten -> fc1) has the cheaper gradient exact in its channel sums
    assert (split.channel_head is not None) == (name in ("vgg16", "vgg19"))
    auto = Explainer(split, top=2)
    assert auto.strategy == ("jacobian" if name in ("vgg16", "vgg19") else "tile")  # big Dense head or not
    result = auto(x)
    assert result.maps.shape == (2, 2, *split.feature_shape[:2])
    other = Explainer(split, top=2, strategy="tile" if auto.strategy == "jacobian" else "jacobian")(x)
    np.testing.assert_array_equal(other.classes, result.classes)
    for b in range(2):
        for j in range(2):
            ref = gradcam_reference(model, split.layer_name, x[b], int(result.classes[b, j]))
            assert ref.max() > 0, f"{name}: the reference map is empty; the comparison would be vacuous"
            np.testing.assert_allclose(result.maps[b, j], ref, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(other.maps[b, j], ref, atol=1e-5, err_msg=f"{name}, other strategy")
