"""Score-CAM (Wang et al. 2020): channels weighed by what the model scores on the input they mask.

The method itself is small (a softmax over channels); making the masks (:func:`channel_masks`)
and choosing channels (:func:`top_variance_channels`) live here too; the engine runs the
masked forward passes in chunks (:mod:`gradcam_cli.engine.score`).
"""

from __future__ import annotations

from gradcam_cli.methods.registry import register

MASK_EPS = 1e-8


@register("scorecam", kind="score", needs_gradients=False)
def scorecam(activations, masked_scores):
    """Score-CAM (Wang et al. 2020): w = softmax over channels of the class score on each channel-masked input."""
    import tensorflow as tf

    return tf.nn.softmax(masked_scores, axis=-1)


def channel_masks(activations, size):
    """(B, h, w, c) activations -> (B, H, W, c) masks: each channel upsampled bilinearly to the
    input ``size`` (H, W) and min-max normalised to [0, 1] (eps 1e-8; a constant channel -> 0)."""
    import tensorflow as tf

    up = tf.image.resize(tf.cast(activations, tf.float32), size, method="bilinear")
    low = tf.reduce_min(up, axis=(1, 2), keepdims=True)
    high = tf.reduce_max(up, axis=(1, 2), keepdims=True)
    span = high - low
    return tf.where(span > MASK_EPS, (up - low) / (span + MASK_EPS), tf.zeros_like(up))


def top_variance_channels(activations, count: int):
    """(B, h, w, K) -> (B, count) int32: per image, the channels of highest spatial variance
    (Faster Score-CAM), highest first."""
    import tensorflow as tf

    variance = tf.math.reduce_variance(tf.cast(activations, tf.float32), axis=(1, 2))
    return tf.math.top_k(variance, k=count, sorted=True).indices
