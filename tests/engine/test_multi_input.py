"""Several inputs and several outputs: one map per image input (gradcam_cli/cam_multi.py), each equal
to a GradientTape reference of the same scalar; non-image inputs from a sidecar; dict outputs
chosen by name for every target kind."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradcam_cli.cam_multi import MultiInputCAM
from gradcam_cli.cam_targets import TargetCAM
from gradcam_cli.errors import InputError, OptionError
from gradcam_cli.io.sidecar import read_sidecar, sidecar_path


def two_image_model() -> keras.Model:
    """Left 32x32 and right 24x24 images, each through its own convolutions, and a 4-vector."""
    left, right = keras.Input((32, 32, 3), name="left"), keras.Input((24, 24, 3), name="right")
    meta = keras.Input((4,), name="meta")
    a = keras.layers.Conv2D(6, 3, activation="relu", name="left_conv")(left)
    a = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(5, 3, activation="relu", name="left_top")(a))
    b = keras.layers.Conv2D(7, 3, strides=2, activation="relu", name="right_conv")(right)
    b = keras.layers.GlobalAveragePooling2D()(b)
    h = keras.layers.Concatenate()([a, b, keras.layers.Dense(3, activation="relu")(meta)])
    return keras.Model([left, right, meta], keras.layers.Dense(5, activation="softmax", name="out")(h), name="pair")


def tape_reference(model, inputs, layer, c):
    """Grad-CAM of class c's logit at ``layer`` for one sample, by a plain tape."""
    logits_layer = model.get_layer("out")
    inner = keras.Model(model.inputs, [model.get_layer(layer).output, logits_layer.input])
    with tf.GradientTape() as tape:
        acts, features = inner([x[None] for x in inputs])
        logit = (tf.matmul(features, logits_layer.kernel) + logits_layer.bias)[0, c]
    grads = tape.gradient(logit, acts)
    cam = np.maximum(tf.reduce_sum(acts * tf.reduce_mean(grads, axis=(1, 2), keepdims=True), -1)[0].numpy(), 0)
    return cam / cam.max() if cam.max() > 0 else cam


def test_each_image_input_gets_its_own_map_equal_to_the_tape_reference():
    keras.utils.set_random_seed(8)
    model = two_image_model()
    cam = MultiInputCAM(model)
    assert cam.image_names == ["left", "right"] and cam.layers == {"left": "left_top", "right": "right_conv"}
    rng = np.random.default_rng(1)
    batch = {"left": rng.normal(size=(3, 32, 32, 3)), "right": rng.normal(size=(3, 24, 24, 3)),
             "meta": rng.normal(size=(3, 4))}
    results = cam.explain(batch, top=2, method=["gradcam", "layercam"])
    probs = model.predict([batch["left"], batch["right"], batch["meta"]], verbose=0)
    for b, result in enumerate(results):
        assert result.items == list(np.argsort(-probs[b])[:2])  # the top classes
        assert result.maps["left"].shape == (2, 28, 28) and result.maps["right"].shape == (2, 11, 11)
        sample = [batch["left"][b], batch["right"][b], batch["meta"][b]]
        for n, c in enumerate(result.items):
            for name, layer in cam.layers.items():
                np.testing.assert_allclose(result.maps[name][n], tape_reference(model, sample, layer, c), atol=1e-5)
    again = cam.explain([batch["left"], batch["right"], batch["meta"]], items=[4])  # a list in input order
    np.testing.assert_allclose(again[0].maps["right"][0],
                               tape_reference(model, [batch["left"][0], batch["right"][0], batch["meta"][0]],
                                              "right_conv", 4), atol=1e-5)
    named = MultiInputCAM(model, layers=["left_conv", "right_conv"])
    assert named.layers == {"left": "left_conv", "right": "right_conv"}
    with pytest.raises(OptionError, match=r"^model 'pair' takes inputs left, right, meta; missing meta$"):
        cam.explain({"left": batch["left"], "right": batch["right"]})
    with pytest.raises(OptionError, match=r"^model 'pair' has 2 image inputs, but 1 target layers were given"):
        MultiInputCAM(model, layers=["left_conv"])


def test_non_image_inputs_come_from_a_sidecar_beside_each_image(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"meta": [1, 2, 3, 4]}))
    (tmp_path / "b.csv").write_text("meta,0.5,0.25,0,1\n")
    assert sidecar_path(tmp_path / "a.png") == tmp_path / "a.json"
    np.testing.assert_array_equal(read_sidecar(sidecar_path(tmp_path / "b.png"), {"meta": (4,)})["meta"],
                                  [0.5, 0.25, 0, 1])
    with pytest.raises(InputError) as exc:
        read_sidecar(tmp_path / "a.json", {"meta": (5,)})
    assert str(exc.value) == f"sidecar {tmp_path / 'a.json'}: input 'meta' takes 5 values (5,), got 4"
    with pytest.raises(InputError, match=r"sidecar .*c.json does not exist; write the model's non-image inputs \(meta\)"):
        read_sidecar(sidecar_path(tmp_path / "c.png"), {"meta": (4,)})


def two_output_model() -> keras.Model:
    """One image in; a dict of a segmentation ("mask", (B, 16, 16, 3)) and a class head ("label")."""
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="body")(inp)
    seg = keras.layers.Conv2D(3, 1, activation="softmax", name="seg")(h)
    cls = keras.layers.Dense(4, activation="softmax", name="cls")(keras.layers.GlobalAveragePooling2D(name="gap")(h))
    return keras.Model(inp, {"mask": seg, "label": cls}, name="two")


def test_dict_outputs_are_chosen_by_name_for_every_target_kind():
    from gradcam_cli.cam import GradCAM

    keras.utils.set_random_seed(2)
    model = two_output_model()
    images = [np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)]
    seg = TargetCAM(model=model, target="segmentation", output="mask", preprocessing="scale", layer="body")
    assert seg.tap.out_name == "mask" and seg.split.num_classes == 3
    assert len(seg.explain(images, top=2)[0].predictions) == 2
    with pytest.raises(OptionError, match=r"^--target segmentation needs a model output of shape \(batch, height, "
                                          r"width, classes\); output 'label' of model 'two' has shape \(batch, 4\)"):
        TargetCAM(model=model, target="segmentation", output="label")
    with pytest.raises(OptionError, match=r"^model 'two' has no output 'nope'; its outputs are 0: '"):
        TargetCAM(model=model, target="segmentation", output="nope")
    sim = MultiInputCAM(model, target="similarity", output="label", references=np.ones((2, 6), np.float32))
    assert sim.tap.out_name == "gap" and sim.layers == {sim.image_names[0]: "body"}  # the label head's pooled features
    [result] = sim.explain([np.random.default_rng(3).normal(size=(1, 16, 16, 3))])
    assert result.items == [0, 1] and result.maps[sim.image_names[0]].shape == (2, 16, 16)
    assert GradCAM(model=model, output="label", preprocessing="scale").split.output_name == "label"
