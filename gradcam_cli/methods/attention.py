"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", ACL) and
its class-specific form weighted by gradients (Chefer, Gur & Wolf 2021).

Methods of kind ``"attention"``: their map comes from the attention scores of every
MultiHeadAttention layer the explained output depends on, not from the target layer. For
layers 1..L with scores A_l (B, heads, T, T), in the model's order:

    A'_l = 0.5 * mean_heads(A_l) + 0.5 * I          (the residual connection)
    A'_l = A'_l / sum over its rows' entries         (each row sums to 1)
    R    = A'_L @ ... @ A'_2 @ A'_1

The map is the class token's row of R over the patch tokens (R[:, 0, P:], P prefix tokens),
or, for a model without prefix tokens (a mean-pooled head), the mean of R's rows over the
patch tokens; reshaped row-major to the (h, w) grid; then ReLU and division by the maximum
(the engine's, as for every method). No gradients: the map is the same for every class.

``gradrollout`` (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for Interpreting
Bi-Modal and Encoder-Decoder Transformers", ICCV, its self-attention rule): with G_l = d y_c / d A_l,
the class score's gradient with respect to layer l's scores,

    Abar_l = mean_heads( relu(G_l * A_l) )
    R      = I;  R = R + Abar_l @ R          for l = 1..L

and the map is read from R - I as rollout's is from R: the identity adds the same 1 / T to every
patch of the mean row (a model without a class token), which would flatten that map, and nothing
to the class token's row over the patches. It depends on the class: the gradients say which
attention raised y_c.

Limits (both): the model must be a functional Keras graph whose attention is
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
    return _read(rolled, prefix, grid)


@register("gradrollout", kind="attention", needs_gradients=False)
def gradrollout(attentions, gradients, prefix: int, grid: tuple[int, int]):
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021): R = I, then R += mean_heads(relu(g A)) R per layer.

    ``attentions`` and ``gradients`` (d y_c / d scores): each layer's (M, heads, T, T), first layer
    first; returns (M, h, w) as :func:`rollout`."""
    import tensorflow as tf

    relevance, eye = None, None
    for scores, grads in zip(attentions, gradients):
        weighted = tf.reduce_mean(tf.nn.relu(tf.cast(grads, tf.float32) * tf.cast(scores, tf.float32)), axis=1)
        if relevance is None:
            relevance = eye = tf.eye(tf.shape(weighted)[-1], batch_shape=[1])
        relevance = relevance + tf.matmul(weighted, relevance)
    return _read(relevance - eye, prefix, grid)


def _read(rolled, prefix: int, grid: tuple[int, int]):
    """(M, T, T) -> (M, h, w): the class token's row over the patch tokens, or (no prefix) the mean row."""
    import tensorflow as tf

    row = rolled[:, 0] if prefix else tf.reduce_mean(rolled, axis=1)  # (M, T)
    return tf.reshape(row[:, prefix:], [-1, grid[0], grid[1]])
