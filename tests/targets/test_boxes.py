"""--target box: a keras-hub RetinaNet's detections, each explained through its class logit at the
anchor matched to it by IoU. On a small random RetinaNet the maps equal an independent GradientTape
reference of the same scalar within 1e-5, the records' boxes are the model's own decoded, suppressed
detections in original-image pixels, and boxes outside the image or no detection above the threshold
give an empty, labelled result."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from detector_builders import CLASSES, SIZE, retinanet

from gradcam_cli.cam_targets import TargetCAM
from gradcam_cli.errors import OptionError

THRESHOLD = 0.5
LAYER = "stack3_block0_out"  # the backbone's last feature map (4 x 4): every pyramid level reads it


def images(n: int = 2, seed: int = 0):
    """Images of another size than the model's (96 x 160): boxes are scaled back to them."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (96, 160, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def detector():
    return retinanet(seed=0)


def reference(model, batch, label_anchor_pairs, layer=LAYER):
    """Grad-CAM of the class logit at (anchor, label) per image, from a tape on the backbone's
    stack outputs (P3, P4 constant, P5 watched) through keras-hub's own pyramid and heads."""
    encoder = model.backbone.image_encoder
    levels = keras.Model(encoder.inputs, [encoder.get_layer(f"stack{i}_block0_out").output for i in (1, 2, 3)])
    p3, p4, p5 = levels(batch)
    maps = []
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(p5)
        pyramid = model.backbone.feature_pyramid({"P3": p3, "P4": p4, "P5": p5})
        logits = tf.concat([tf.reshape(model.classification_head(pyramid[k]), (batch.shape[0], -1, CLASSES))
                            for k in pyramid], axis=1)
        picked = [[logits[b, a, c] for a, c in pairs] for b, pairs in enumerate(label_anchor_pairs)]
    for b, row in enumerate(picked):
        image_maps = []
        for value in row:
            g = tape.gradient(value, p5)[b]
            cam = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(g, axis=(0, 1)) * p5[b], axis=-1)).numpy()
            image_maps.append(cam / cam.max() if cam.max() > 0 else cam)
        maps.append(image_maps)
    return logits.numpy(), maps


def own_detections(model, batch, threshold):
    """The model's own predictions (keras-hub's decode_predictions, its NMS at ``threshold``), as xyxy."""
    model.prediction_decoder.confidence_threshold = threshold
    raw = model(batch)
    found = model.decode_predictions(raw, batch)
    boxes = np.asarray(found["boxes"])[..., [1, 0, 3, 2]]  # yxyx -> xyxy
    anchors = keras.ops.concatenate(list(model.anchor_generator(batch).values()), axis=0)
    decoded = keras.utils.bounding_boxes.decode_deltas_to_boxes(
        anchors=anchors, boxes_delta=raw["bbox_regression"], encoded_format="center_xywh",
        anchor_format="yxyx", box_format="yxyx", image_shape=(SIZE, SIZE, 3))
    return boxes, np.asarray(found["confidence"]), np.asarray(found["labels"]), \
        np.asarray(found["num_detections"]), np.asarray(decoded)[..., [1, 0, 3, 2]], np.asarray(raw["cls_logits"])


def iou(box, boxes):
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    return w * h / (area(box) + area(boxes) - w * h)


def test_box_maps_equal_a_tape_reference_and_records_hold_the_models_own_boxes(detector):
    cam = TargetCAM(model=detector, target="box", preprocessing="scale", layer=LAYER, box_threshold=THRESHOLD)
    assert cam.layer.endswith(LAYER)
    pictures = images()
    results = cam.explain(pictures, top=4)
    batch = cam.prepare(pictures)
    boxes, scores, labels, count, decoded, logits = own_detections(detector, batch, THRESHOLD)
    assert count.min() >= 4  # every image has at least 4 detections to explain
    sx, sy = 160 / SIZE, 96 / SIZE
    pairs = []
    for b, result in enumerate(results):
        assert len(result.predictions) == 4
        row = []
        for n, (p, d) in enumerate(zip(result.predictions, result.details)):
            assert d["present"] and "empty" not in d
            expected = boxes[b, n] * [sx, sy, sx, sy]
            np.testing.assert_allclose(d["detection_box"], expected, atol=0.01)  # rounded to 0.01 px
            assert d["score"] == pytest.approx(float(scores[b, n]), abs=1e-6)
            assert p.class_index == int(labels[b, n]) and p.label == f"class_{labels[b, n]}" and p.rank == n + 1
            anchor = int(np.argmax(iou(boxes[b, n], decoded[b])))
            assert d["anchor_iou"] == pytest.approx(1.0, abs=1e-6)  # a detection is its anchor's decoded box
            assert p.probability == pytest.approx(float(logits[b, anchor, labels[b, n]]), abs=1e-4)
            row.append((anchor, int(labels[b, n])))
        pairs.append(row)
    ref_logits, ref_maps = reference(detector, batch, pairs)
    np.testing.assert_allclose(ref_logits, logits, atol=1e-4)  # the reference rebuilds the model's own logits
    for b, result in enumerate(results):
        for n in range(4):
            # float32 through the same convolutions: 1e-5 of a map in [0, 1]
            np.testing.assert_allclose(result.maps[n], ref_maps[b][n], atol=1e-5)
            assert result.maps[n].max() == pytest.approx(1.0)


def test_boxes_outside_the_image_give_empty_labelled_maps():
    model = retinanet(seed=0, shift=50.0)  # every decoded box lies 50 anchor sizes right of and below its anchor
    cam = TargetCAM(model=model, target="box", preprocessing="scale", box_threshold=THRESHOLD)
    [result] = cam.explain(images(1), top=2)
    assert len(result.predictions) == 2
    for p, d in zip(result.predictions, result.details):
        assert d["present"] is False and d["empty"] == "the box is outside the image: its map is empty"
        assert min(d["detection_box"][0], d["detection_box"][1]) > 96  # right of / below a 160 x 96 image
        assert 0 <= p.class_index < CLASSES
    assert not result.maps.any()


def test_no_detection_above_the_threshold_gives_one_empty_labelled_result():
    model = retinanet(seed=0, class_bias=-20.0)  # every score near sigmoid(-20): nothing passes 0.5
    cam = TargetCAM(model=model, target="box", preprocessing="scale", box_threshold=THRESHOLD)
    results = cam.explain(images(2), top=3, method=["gradcam", "layercam"])
    for result in results:
        [p] = result.predictions
        assert (p.label, p.class_index) == ("no detection", -1)
        assert result.details == [{"detection_box": None, "score": None, "present": False,
                                   "empty": "no detection scored at least 0.5: the map is empty"}]
        assert set(result.maps_by_method) == {"gradcam", "layercam"}
        assert not any(m.any() for m in result.maps_by_method.values())


def test_a_box_target_on_a_classifier_and_methods_that_do_not_apply_are_refused_in_one_line(detector):
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(inp)
    classifier = keras.Model(inp, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(h)), name="clf")
    with pytest.raises(OptionError, match=r"^--target box needs a keras-hub object detector \(RetinaNetObjectDetector\); "
                                          r"model 'clf' has output \(batch, 5\): a classifier's, use --target class$"):
        TargetCAM(model=classifier, target="box", preprocessing="scale")
    cam = TargetCAM(model=detector, target="box", preprocessing="scale")
    with pytest.raises(OptionError, match="method 'scorecam' does not apply to --target box"):
        cam.explain(images(1), method="scorecam")
    with pytest.raises(OptionError, match="leave out --class"):
        cam.explain(images(1), classes=[0])


def test_other_keras_hub_detectors_are_refused_naming_the_supported_one():
    from gradcam_cli.models.detector import detector_problem, is_detector

    dfine = type("DFineObjectDetector", (), {"name": "d_fine"})()  # its class name is what is read
    assert not is_detector(dfine)
    assert detector_problem(dfine) == ("model 'd_fine' is a keras-hub DFineObjectDetector; --target box reads "
                                       "RetinaNetObjectDetector (anchor-based heads) only")
    assert is_detector(retinanet(seed=1)) and detector_problem(retinanet(seed=1)) is None
