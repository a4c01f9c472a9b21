"""Methods that weigh every position on its own: LayerCAM, HiResCAM.

Each takes activations A and gradients g = dy_c/dA, both float32 (M, h, w, K), and
returns the raw map (M, h, w); ReLU and normalisation follow in the engine.
"""

from __future__ import annotations

from gradcam_cli.methods.registry import register


@register("layercam", kind="spatial")
def layercam(activations, gradients):
    """LayerCAM (Jiang et al. 2021): sum_k relu(g) * A_k, per position."""
    import tensorflow as tf

    return tf.reduce_sum(tf.nn.relu(gradients) * activations, axis=-1)


@register("hirescam", kind="spatial")
def hirescam(activations, gradients):
    """HiResCAM (Draelos & Carin 2020): sum_k g * A_k, per position."""
    import tensorflow as tf

    return tf.reduce_sum(gradients * activations, axis=-1)
