"""keras-hub object detectors: the raw head outputs a box target differentiates, and the model's own detections.

A :class:`DetectorTap` is a :class:`gradcam_cli.models.tap.Tap` of a keras-hub
``RetinaNetObjectDetector`` (the detector keras-hub 0.32 ships with anchors and a functional
graph; D-FINE's transformer decoder is not supported): its :meth:`~DetectorTap.after` gives the
per-anchor class logits (B, A, C) and box deltas (B, A, 4) *before* decoding and non-max
suppression, so a box's class logit is differentiable with respect to the target layer, and
:meth:`~DetectorTap.detections` decodes them as the model's ``predict`` does (its anchors, its
"center_xywh" deltas) and runs keras-hub's ``NonMaxSuppression`` with the model's IoU threshold
and ``max_detections`` (the confidence threshold is the box target's), on boxes in "xyxy" model
input pixels: each detection's box is exactly the decoded box of the anchor it came from.

``auto`` takes the last 4-D layer (one output, larger than 1 x 1) that every pyramid level's class
logits depend on: the backbone's last feature map (all levels read it through the feature pyramid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradcam_cli.errors import OptionError
from gradcam_cli.models.graph import execute, flatten
from gradcam_cli.models.targets import _spatial, resolve_target
from gradcam_cli.models.tap import Tap, _cut, _sources

#: keras-hub detector classes this module reads (their ``cls_logits`` / ``bbox_regression`` outputs)
DETECTORS = ("RetinaNetObjectDetector",)
CLASS_OUTPUT, BOX_OUTPUT = "cls_logits", "bbox_regression"


def is_detector(model: Any) -> bool:
    """Whether ``model`` is a keras-hub detector this module reads (its class or a subclass)."""
    return any(cls.__name__ in DETECTORS for cls in type(model).__mro__)


def detector_problem(model: Any) -> str | None:
    """Why ``model`` cannot take ``--target box`` (None when it can)."""
    if is_detector(model):
        return None
    name = type(model).__name__
    if "ObjectDetector" in name:
        return (f"model '{model.name}' is a keras-hub {name}; --target box reads "
                f"{', '.join(DETECTORS)} (anchor-based heads) only")
    shapes = [tuple(t.shape) for t in getattr(model, "outputs", []) or []]
    shown = ", ".join("(" + ", ".join("batch" if d is None and i == 0 else str(d) for i, d in enumerate(s)) + ")"
                      for s in shapes)
    return (f"--target box needs a keras-hub object detector ({', '.join(DETECTORS)}); model '{model.name}' "
            f"has output {shown or 'none'}: a classifier's, use --target class")


@dataclass
class DetectorTap(Tap):
    """A detector tapped at its target layer; ``after`` returns the raw head outputs and the images."""

    box_key: Any = None  # the box deltas' tensor (``bbox_regression``), computed after the cut too

    def after(self, values: dict, acts) -> dict:
        fed = {**values, **dict(zip(self.layer_keys, acts))}
        got = execute(self.after_steps, fed)
        return {CLASS_OUTPUT: got[self.out_key], BOX_OUTPUT: got[self.box_key],
                "images": values[self.graph.input_keys[0]]}

    def anchors(self, images) -> Any:
        """The model's anchors (A, 4) for ``images``' size, in "xyxy" model input pixels."""
        import keras

        generator = self.model.anchor_generator
        boxes = keras.ops.concatenate(list(generator(images).values()), axis=0)
        h, w = keras.ops.shape(images)[1], keras.ops.shape(images)[2]
        return keras.utils.bounding_boxes.convert_format(boxes, source=generator.bounding_box_format,
                                                         target="xyxy", height=h, width=w)

    def detections(self, raw: dict, threshold: float) -> dict:
        """The model's detections (no gradient): ``boxes`` (B, K, 4) xyxy, ``scores`` (B, K) (the
        decoder's confidence), ``labels`` (B, K) int32 (-1 past ``count``), ``count`` (B,) and every
        anchor's decoded box ``anchor_boxes`` (B, A, 4), all in model input pixels."""
        import keras
        import tensorflow as tf
        from keras_hub.layers import NonMaxSuppression

        images = raw["images"]
        deltas = tf.stop_gradient(raw[BOX_OUTPUT])
        logits = tf.stop_gradient(raw[CLASS_OUTPUT])
        shape = tuple(int(d) for d in images.shape[1:])
        anchors = self.anchors(images)
        decoded = keras.utils.bounding_boxes.decode_deltas_to_boxes(
            anchors=anchors, boxes_delta=deltas, encoded_format="center_xywh", anchor_format="xyxy",
            box_format="xyxy", image_shape=shape)
        own = self.model.prediction_decoder
        nms = NonMaxSuppression(bounding_box_format="xyxy", from_logits=getattr(own, "from_logits", True),
                                iou_threshold=getattr(own, "iou_threshold", 0.5), confidence_threshold=threshold,
                                max_detections=getattr(own, "max_detections", 100))

        def one(pair):  # keras-hub's NMS wants a static batch: one image at a time
            got = nms(pair[0][None], pair[1][None])
            return (tf.cast(got["boxes"][0], tf.float32), tf.cast(got["confidence"][0], tf.float32),
                    tf.cast(got["labels"][0], tf.int32), tf.cast(got["num_detections"][0], tf.int32))

        spec = (tf.TensorSpec((nms.max_detections, 4), tf.float32), tf.TensorSpec((nms.max_detections,), tf.float32),
                tf.TensorSpec((nms.max_detections,), tf.int32), tf.TensorSpec((), tf.int32))
        boxes, scores, labels, count = tf.map_fn(one, (decoded, logits), fn_output_signature=spec)
        return {"boxes": boxes, "scores": scores, "labels": labels, "count": count, "anchor_boxes": decoded}

    @property
    def max_detections(self) -> int:
        return int(getattr(self.model.prediction_decoder, "max_detections", 100))


def _levels(graph, key) -> list:
    """The per-level tensors concatenated into ``key`` (itself when it is not a concatenation)."""
    from keras import layers

    step = graph.producer.get(key)
    if step is not None and isinstance(step.op, layers.Concatenate):
        return list(step.inputs)
    return [key]


def _auto_layer(graph, cls_key) -> tuple[str, Any]:
    """The last 4-D one-output step (> 1 x 1, fed by the image alone) every level's logits depend on."""
    sources = _sources(graph)
    source = graph.input_keys[0]
    common = None
    for level in _levels(graph, cls_key):
        within = graph.ancestors([level])
        common = within if common is None else common & within
    found = [s for s in graph.steps if id(s) in (common or set()) and len(s.outputs) == 1
             and type(s.op).__name__ != "InputLayer" and _spatial(tuple(graph.tensors[s.outputs[0]].shape))
             and sources.get(s.outputs[0]) == {source}]
    if not found:
        raise OptionError(f"detector '{graph.model.name}' has no 4-D layer that every pyramid level reads; "
                          "pass --layer (`gradcam layers` lists the 4-D ones)")
    return found[-1].path, found[-1].outputs[0]


def tap_detector(model: Any, layer: str | None = "auto") -> DetectorTap:
    """Tap a keras-hub detector at ``layer`` (a path, or ``auto``); OptionError for any other model."""
    problem = detector_problem(model)
    if problem:
        raise OptionError(problem)
    graph = flatten(model)
    index = {name: i for i, name in enumerate(graph.output_names)}
    if CLASS_OUTPUT not in index or BOX_OUTPUT not in index:
        raise OptionError(f"detector '{model.name}' has outputs {', '.join(graph.output_names)}; --target box "
                          f"reads '{CLASS_OUTPUT}' and '{BOX_OUTPUT}'")
    cls_key, box_key = graph.output_keys[index[CLASS_OUTPUT]], graph.output_keys[index[BOX_OUTPUT]]
    if layer in (None, "auto"):
        path, key = _auto_layer(graph, cls_key)
    else:
        path, key = resolve_target(graph, layer)[:2]
    before, after = _cut(graph, [key], cls_key, box_key)
    if cls_key != key and not any(cls_key in step.outputs for step in after):
        raise OptionError(f"the class logits of detector '{model.name}' do not depend on layer '{path}'; "
                          "pass --layer with a backbone layer (`gradcam layers` lists them)")
    return DetectorTap(model, graph, [0], [path], [key], [graph.shape(key)], cls_key, CLASS_OUTPUT,
                       graph.shape(cls_key), None, None, before, after, box_key=box_key)
