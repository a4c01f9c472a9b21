"""Eigen-CAM (Muhammad & Yeasin 2020): the first principal component of the activations.

No gradients, one map per image whatever the class. The SVD's sign is arbitrary (and a
flipped sign would ReLU the map away), so it is fixed: the projection must correlate
positively with the channel-mean activation.
"""

from __future__ import annotations

from gradcam_cli.methods.registry import register


def first_component(activations):
    """(M, h, w, K) -> (M, h, w): the activations, centred per channel over positions, projected
    on their first right singular vector, with the sign fixed as described above."""
    import tensorflow as tf

    acts = tf.cast(activations, tf.float64)  # float64: the leading vector is stable to ~1e-12
    shape = tf.shape(acts)
    flat = tf.reshape(acts, [shape[0], shape[1] * shape[2], shape[3]])  # (M, P, K)
    centred = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
    _, _, v = tf.linalg.svd(centred, full_matrices=False)  # v: (M, K, min(P, K))
    projection = tf.einsum("mpk,mk->mp", centred, v[:, :, 0])
    mean = tf.reduce_mean(flat, axis=2)  # the channel-mean activation per position
    agreement = tf.reduce_sum(projection * (mean - tf.reduce_mean(mean, axis=1, keepdims=True)), axis=1)
    sign = tf.where(agreement < 0, tf.constant(-1.0, tf.float64), tf.constant(1.0, tf.float64))
    projection = projection * sign[:, None]
    return tf.cast(tf.reshape(projection, shape[:3]), tf.float32)


@register("eigencam", kind="spatial", needs_gradients=False, class_agnostic=True)
def eigencam(activations, gradients):
    """Eigen-CAM (Muhammad & Yeasin 2020): the activations' first principal component, sign fixed."""
    return first_component(activations)
