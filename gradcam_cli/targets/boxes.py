"""``--target box``: a detector's box, explained through its class score (docs/targets.md).

pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` re-runs the detector and, for each box explained,
takes the detection of highest IoU with it; if that IoU is above 0.5 and the label is the box's, the
detection's score (plus the IoU) is the scalar. Here the detections are the model's own (decoded and
non-max suppressed, :class:`gradcam_cli.models.detector.DetectorTap`), and each one is matched, by
IoU, to the anchors' decoded boxes *before* suppression: the anchor of highest IoU (above 0.5: for
the model's own detection, its anchor, IoU 1) gives the scalar, the raw class logit of the box's
label at that anchor. The logit is differentiable w.r.t. the target layer; NMS and the match are not
differentiated (no IoU term: the map explains the class score, not the box's placement).

Each candidate item is a detection slot (up to the decoder's ``max_detections``, in score order);
``aux`` (B, K, 8) holds per slot x0, y0, x1, y1 (model input pixels), label, score, matched IoU and a
:data:`STATUS` code. Slots that are empty, out of the image or unmatched differentiate 0: an empty map.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradcam_cli.results import Explanation, Prediction
from gradcam_cli.targets.registry import register

#: the IoU above which an anchor's decoded box matches the box explained (pytorch-grad-cam's)
MATCH_IOU = 0.5
DEFAULT_BOX_THRESHOLD = 0.5
DEFAULT_BOXES_TOP = 5
OK, NONE, OUTSIDE, UNMATCHED = 0, 1, 2, 3
STATUS = {OK: "ok", NONE: "no detection", OUTSIDE: "outside the image", UNMATCHED: "no anchor matches it"}


def _pairwise_iou(boxes, anchors):
    """IoU (B, K, A) of xyxy ``boxes`` (B, K, 4) with ``anchors`` (B, A, 4)."""
    import tensorflow as tf

    b = boxes[:, :, None, :]
    a = anchors[:, None, :, :]
    w = tf.nn.relu(tf.minimum(b[..., 2], a[..., 2]) - tf.maximum(b[..., 0], a[..., 0]))
    h = tf.nn.relu(tf.minimum(b[..., 3], a[..., 3]) - tf.maximum(b[..., 1], a[..., 1]))
    inter = w * h
    area = lambda x: tf.nn.relu(x[..., 2] - x[..., 0]) * tf.nn.relu(x[..., 3] - x[..., 1])
    return tf.math.divide_no_nan(inter, area(b) + area(a) - inter)


@register("box", method_kinds=("weights", "spatial"),
          refusal="it scores or backpropagates class scores itself, not this target's scalar", output_ranks=None)
def box_score(out, context):
    """A detector's box: its label's class logit at the anchor matched to it by IoU (keras-hub RetinaNet)."""
    import tensorflow as tf

    found = context.detector.detections(out, context.box_threshold)
    boxes, labels = tf.cast(found["boxes"], tf.float32), found["labels"]
    iou = _pairwise_iou(boxes, tf.cast(found["anchor_boxes"], tf.float32))  # (B, K, A)
    iou = tf.where(tf.math.is_finite(iou), iou, tf.zeros_like(iou))  # boxes of overflowing deltas
    best, best_iou = tf.argmax(iou, axis=-1, output_type=tf.int32), tf.reduce_max(iou, axis=-1)
    logits = tf.cast(out["cls_logits"], tf.float32)  # (B, A, C), differentiable
    at_anchor = tf.gather(logits, best, axis=1, batch_dims=1)  # (B, K, C)
    value = tf.gather(at_anchor, tf.maximum(labels, 0), axis=2, batch_dims=2)  # (B, K)
    k = tf.shape(boxes)[1]
    slot = tf.range(k)[None]
    listed = slot < tf.cast(found["count"], tf.int32)[:, None]
    images = out["images"]
    h, w = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
    inside = ((tf.minimum(boxes[..., 2], w) > tf.maximum(boxes[..., 0], 0.0))
              & (tf.minimum(boxes[..., 3], h) > tf.maximum(boxes[..., 1], 0.0)))
    matched = best_iou > MATCH_IOU
    status = tf.where(~listed, NONE, tf.where(~inside, OUTSIDE, tf.where(~matched, UNMATCHED, OK)))
    values = tf.where(status == OK, value, tf.zeros_like(value))
    scores = tf.cast(found["scores"], tf.float32)
    rank = tf.where(listed, scores, -1.0 - tf.cast(slot, tf.float32) / tf.cast(k, tf.float32))
    aux = tf.concat([boxes, tf.cast(labels, tf.float32)[..., None], scores[..., None], best_iou[..., None],
                     tf.cast(status, tf.float32)[..., None]], axis=-1)
    return values, rank, aux


def _scaled(box: np.ndarray, sx: float, sy: float) -> list[float]:
    return [round(float(box[0]) * sx, 2), round(float(box[1]) * sy, 2), round(float(box[2]) * sx, 2),
            round(float(box[3]) * sy, 2)]


def box_explanation(values: np.ndarray, aux: np.ndarray, items: np.ndarray, maps: np.ndarray, methods: list,
                    label: Any, input_size: tuple, size: tuple, threshold: float) -> Explanation:
    """One image's :class:`Explanation` (NumPy only): one entry per listed detection among ``items``,
    in score order, or one empty entry when there is none. ``aux`` (K, 8), ``values`` (K,), ``maps``
    (N, M, h, w); ``label(i)`` a class's name; boxes mapped from the model input (``input_size``
    (h, w)) to the original image (``size`` (h, w)), which the input stretches."""
    sy, sx = size[0] / input_size[0], size[1] / input_size[1]
    predictions, details, kept = [], [], []
    for n, slot in enumerate(int(i) for i in items):
        x0, y0, x1, y1, cls, score, iou, status = (float(v) for v in aux[slot])
        if int(status) == NONE:
            continue
        cls = int(cls)
        predictions.append(Prediction(rank=len(predictions) + 1, class_index=cls, class_id=None, label=label(cls),
                                      probability=float(values[slot])))
        detail = {"detection_box": _scaled(aux[slot, :4], sx, sy), "score": round(score, 6),
                  "anchor_iou": round(iou, 6), "present": int(status) == OK}
        if int(status) != OK:
            detail["empty"] = f"the box is {STATUS[int(status)]}: its map is empty"
        details.append(detail)
        kept.append(n)
    if kept:
        chosen = maps[kept] * np.array([d["present"] for d in details], np.float32)[:, None, None, None]
    else:
        predictions = [Prediction(rank=1, class_index=-1, class_id=None, label="no detection", probability=0.0)]
        details = [{"detection_box": None, "score": None, "present": False,
                    "empty": f"no detection scored at least {threshold:g}: the map is empty"}]
        chosen = np.zeros((1, *maps.shape[1:]), np.float32)
    by_method = {name: chosen[:, i] for i, name in enumerate(methods)}
    return Explanation(predictions=predictions, maps=by_method[methods[0]], probabilities=np.zeros(0, np.float32),
                       maps_by_method=by_method, details=details)
