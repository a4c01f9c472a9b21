"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", ACL).

A method of kind ``"attention"``: its map comes from the attention scores of every
MultiHeadAttention layer the explained output depends on, not from the target layer. For
layers 1..L with scores A_l (B, heads, T, T), in the model's order:

    A'_l = 0.5 * mean_heads(A_l) + 0.5 * I          (the residual connection)
    A'_l = A'_l / sum over its rows' entries         (each row sums to 1)
    R    = A'_L @ ... @ A'_2 @ A'_1

The map is the class token's row of R over the patch tokens (R[:, 0, P:], P prefix tokens),
or, for a model without prefix tokens (a mean-pooled head), the mean of R's rows over the
patch tokens; reshaped row-major to the (h, w) grid; then ReLU and division by the maximum
(the engine's, as for every method). No gradients: the map is the same for every class.

Limits: the model must be a functional Keras graph whose attention is
``keras.layers.MultiHeadAttention`` over the image's tokens (a ViT, DeiT); global attention
only: Swin-style window attention (scores per window) and models without such layers are
refused before the run.
"""

from __future__ import annotations

from gradcam_cli.methods.registry import register


@register("rollout", kind="attention", needs_gradients=False, class_agnostic=True)
def rollout(attentions, prefix: int, grid: tuple[int, int]):
    """Attention rollout (Abnar & Zuidema 2020): residual-mixed, row-normalised attention multiplied over layers.

    ``attentions``: the layers' scores, each (B, heads, T, T), first layer first; ``prefix``: the
    prefix tokens before the ``grid`` (h, w) of patch tokens. Returns (B, h, w)."""
    import tensorflow as tf

    rolled = None
    for scores in attentions:
        mixed = 0.5 * tf.reduce_mean(tf.cast(scores, tf.float32), axis=1)
        mixed += 0.5 * tf.eye(tf.shape(mixed)[-1], batch_shape=[1])
        mixed /= tf.reduce_sum(mixed, axis=-1, keepdims=True)
        rolled = mixed if rolled is None else tf.matmul(mixed, rolled)
    row = rolled[:, 0] if prefix else tf.reduce_mean(rolled, axis=1)  # (B, T)
    return tf.reshape(row[:, prefix:], [-1, grid[0], grid[1]])
