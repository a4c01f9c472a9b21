"""Methods whose channel weights come from the gradients: Grad-CAM, Grad-CAM++, XGrad-CAM.

Each takes activations A and gradients g = dy_c/dA, both float32 (M, h, w, K), and
returns channel weights (M, K); the map is sum_k w_k A_k, then ReLU and normalisation.
"""

from __future__ import annotations

from gradcam_cli.methods.registry import register


@register("gradcam", kind="weights", sums_only=True)
def gradcam(activations, gradients):
    """Grad-CAM (Selvaraju et al. 2017): the spatial mean of the gradient, per channel."""
    import tensorflow as tf

    return tf.reduce_mean(gradients, axis=(1, 2))


@register("gradcam++", kind="weights")
def gradcam_plus_plus(activations, gradients):
    """Grad-CAM++ (Chattopadhay et al. 2018), pytorch-grad-cam's closed form on the raw score:
    alpha = g^2 / (2 g^2 + S_k g^3 + 1e-6) (0 where g = 0), w_k = sum over positions of relu(g) alpha."""
    import tensorflow as tf

    g2 = tf.square(gradients)
    g3 = g2 * gradients
    sums = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)  # S_k, (M, 1, 1, K)
    alpha = tf.where(gradients != 0, g2 / (2.0 * g2 + sums * g3 + 1e-6), tf.zeros_like(g2))
    return tf.reduce_sum(tf.nn.relu(gradients) * alpha, axis=(1, 2))


@register("xgradcam", kind="weights")
def xgradcam(activations, gradients):
    """XGrad-CAM (Fu et al. 2020): w_k = sum(g * A_k) / (S_k + 1e-7), sums over positions."""
    import tensorflow as tf

    sums = tf.reduce_sum(activations, axis=(1, 2))
    return tf.reduce_sum(gradients * activations, axis=(1, 2)) / (sums + 1e-7)
