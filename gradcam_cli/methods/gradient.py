"""Methods whose channel weights come from the gradients."""

from __future__ import annotations

from gradcam_cli.methods.registry import register


@register("gradcam", kind="weights", sums_only=True)
def gradcam(activations, gradients):
    """Grad-CAM (Selvaraju et al. 2017): the spatial mean of the gradient, per channel."""
    import tensorflow as tf

    return tf.reduce_mean(gradients, axis=(1, 2))
