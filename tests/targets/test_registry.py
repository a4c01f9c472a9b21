"""The target registry: names and choices from one place, close matches on a miss, which methods
each target takes; and every method a target takes runs through it (with the smoothing options)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import invoke

from gradcam_cli.cam_targets import TargetCAM
from gradcam_cli.errors import OptionError
from gradcam_cli.methods import get_method, method_names
from gradcam_cli.settings import MethodOptions
from gradcam_cli.targets import TARGETS, check_methods, get_target, target_names


def test_names_descriptions_and_method_kinds_come_from_the_registry():
    assert target_names() == ["class", "segmentation", "similarity", "box"]
    assert [t.evaluate for t in TARGETS.values()] == [True, False, False, False]
    assert get_target("class").method_kinds is None  # every method
    for name in ("segmentation", "similarity", "box"):
        target = get_target(name)
        taken = [m for m in method_names() if get_method(m).kind in target.method_kinds]
        assert taken == ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "random", "centre"]
        for refused in ("scorecam", "guided"):
            with pytest.raises(OptionError, match=rf"^method '{refused}' does not apply to --target {name}: "):
                check_methods(target, [get_method(refused)])
    check_methods(get_target("class"), [get_method(m) for m in method_names()])
    with pytest.raises(OptionError, match=r"^unknown target 'similarty' \(did you mean 'similarity'\?\)"):
        get_target("similarty")
    help_text = invoke("explain", "--help").output
    assert "--target [class|segmentation|similarity|box]" in help_text
    assert "box: A detector's box: its label's class logit at the anchor matched to it by IoU" in " ".join(
        help_text.split())
    assert "segmentation: A segmenter's class c: its logits summed over a region" in " ".join(help_text.split())


def small_segmenter() -> keras.Model:
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="body")(inp)
    return keras.Model(inp, keras.layers.Conv2D(3, 1, activation="softmax", name="seg")(h), name="seg")


def small_embedder() -> keras.Model:
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="body")(inp)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inp, keras.layers.Dense(2, name="head")(h), name="emb")


@pytest.mark.parametrize("options", [MethodOptions(), MethodOptions(eigen_smooth=True), MethodOptions(aug_smooth=True)],
                         ids=["plain", "eigen-smooth", "aug-smooth"])
def test_every_method_a_target_takes_runs_through_it(options, tmp_path):
    keras.utils.set_random_seed(1)
    np.save(tmp_path / "ref.npy", np.random.default_rng(0).normal(size=4).astype(np.float32))
    images = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(2)]
    methods = [m for m in method_names() if get_method(m).kind in ("weights", "spatial")]
    cams = [TargetCAM(model=small_segmenter(), target="segmentation", preprocessing="scale"),
            TargetCAM(model=small_embedder(), target="similarity", reference=str(tmp_path / "ref.npy"),
                      preprocessing="scale")]
    for cam in cams:
        results = cam.explain(images, top=2, method=methods, options=options)
        for result in results:
            assert list(result.maps_by_method) == methods
            for maps in result.maps_by_method.values():
                assert maps.shape == (len(result.predictions), 16, 16) and maps.dtype == np.float32
                assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6
        assert cam.explainer(2, None, method=methods, options=options).trace_count() == 1  # one compiled call
