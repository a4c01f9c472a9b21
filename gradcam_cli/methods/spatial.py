"""Methods that weigh every position on its own: LayerCAM, HiResCAM.

Each takes activations A and gradients g = dy_c/dA, both float32 (M, h, w, K), and
returns the raw map (M, h, w), the channel sum of its weighted activations (M, h, w, K);
ReLU and normalisation follow in the engine.
"""

from __future__ import annotations

from gradcam_cli.methods.registry import register


def layercam_weighted(activations, gradients):
    """relu(g) * A, per position and channel."""
    import tensorflow as tf

    return tf.nn.relu(gradients) * activations


def hirescam_weighted(activations, gradients):
    """g * A, per position and channel."""
    return gradients * activations


@register("layercam", kind="spatial", weighted=layercam_weighted)
def layercam(activations, gradients):
    """LayerCAM (Jiang et al. 2021): sum_k relu(g) * A_k, per position."""
    import tensorflow as tf

    return tf.reduce_sum(layercam_weighted(activations, gradients), axis=-1)


@register("hirescam", kind="spatial", weighted=hirescam_weighted)
def hirescam(activations, gradients):
    """HiResCAM (Draelos & Carin 2020): sum_k g * A_k, per position."""
    import tensorflow as tf

    return tf.reduce_sum(hirescam_weighted(activations, gradients), axis=-1)
