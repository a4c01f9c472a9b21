"""The registered targets: the scalars each explained item's gradient comes from.

Every function takes the tapped tensor ``out`` (the model output, its final softmax / sigmoid
removed, or an embedding) and a :class:`Context`, and returns ``(values, rank, aux)``:
``values`` and ``rank`` (B, C): ``values[b, c]`` is differentiated for item c of image b,
``rank`` orders the items for top-N; ``aux`` (B, ...) is handed back with the maps (a
segmenter's predicted label map; (B, 0) for the others). Items are classes (``class``, ``segmentation``) or references (``similarity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradcam_cli.targets.registry import register

#: the methods that read the target only through its gradient (or not at all): Score-CAM scores
#: classes on masked inputs and Guided Grad-CAM backpropagates class scores to the input, both
#: through the classifier's own scores
GRADIENT_KINDS = ("weights", "spatial")
REFUSAL = "it scores or backpropagates class scores itself, not this target's scalar"


@dataclass(frozen=True)
class Context:
    """What a target reads besides the tapped tensor: ``mask`` (B, H, W) float 0/1 at the output's
    resolution, or None (segmentation: each class's predicted region); ``references`` (R, D)
    unit-length reference embeddings (similarity); ``detector``, ``box_threshold`` (box,
    :mod:`gradcam_cli.targets.boxes`)."""

    mask: Any = None
    references: Any = None
    #: ``box``: the :class:`gradcam_cli.models.detector.DetectorTap` and the detections' score threshold
    detector: Any = None
    box_threshold: float = 0.5


@register("class", output_ranks=(2,), evaluate=True)
def class_score(out, context: Context):
    """A classifier's class score (logit before softmax / sigmoid): today's default."""
    import tensorflow as tf

    scores = tf.cast(out, tf.float32)
    if scores.shape.rank == 1:
        scores = scores[:, None]
    return scores, scores, tf.zeros([tf.shape(scores)[0], 0])


@register("segmentation", method_kinds=GRADIENT_KINDS, refusal=REFUSAL, output_ranks=(4,))
def segmentation(out, context: Context):
    """A segmenter's class c: its logits summed over a region (its predicted mask, or --mask)."""
    import tensorflow as tf

    logits = tf.cast(out, tf.float32)  # (B, H, W, C)
    predicted = tf.one_hot(tf.argmax(logits, axis=-1), tf.shape(logits)[-1], dtype=tf.float32)
    if context.mask is None:
        region = predicted
        rank = tf.reduce_sum(predicted, axis=(1, 2))
    else:
        inside = tf.cast(context.mask, tf.float32)[..., None]  # (B, H, W, 1)
        region = tf.broadcast_to(inside, tf.shape(logits))
        rank = tf.reduce_sum(predicted * inside, axis=(1, 2))  # each class's predicted pixels in the region
    values = tf.reduce_sum(logits * tf.stop_gradient(region), axis=(1, 2))
    return values, rank, tf.argmax(logits, axis=-1, output_type=tf.int32)


@register("similarity", method_kinds=GRADIENT_KINDS, refusal=REFUSAL, output_ranks=None)
def similarity(out, context: Context):
    """Cosine similarity of the image's embedding with each reference's."""
    import tensorflow as tf

    emb = tf.cast(out, tf.float32)
    if emb.shape.rank == 4:  # a feature map: its spatial mean
        emb = tf.reduce_mean(emb, axis=(1, 2))
    emb = tf.reshape(emb, [tf.shape(emb)[0], -1])
    unit = emb / tf.maximum(tf.norm(emb, axis=-1, keepdims=True), 1e-12)
    values = tf.matmul(unit, tf.cast(context.references, tf.float32), transpose_b=True)  # (B, R)
    return values, values, tf.zeros([tf.shape(values)[0], 0])
