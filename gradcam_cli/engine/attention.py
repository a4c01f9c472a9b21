"""Attention methods' maps inside the compiled explainer (see :mod:`gradcam_cli.methods.attention`).

The attention scores of every MultiHeadAttention layer come from the same input batch: without
gradient methods, from the one run of the model that also gives the scores
(:attr:`gradcam_cli.models.split.Split.full_attention`); beside gradient methods, from one more
run of the layers up to the last attention (:attr:`~gradcam_cli.models.split.Split.attention_scores`).
The method turns them into one (B, h, w) map per image, at the target layer's map size. A
class-specific method (``gradrollout``) also takes each class score's gradient with respect to
every layer's scores: one more run of the model under a persistent tape, then one backward pass
per explained class (:func:`attention_class_maps`).
"""

from __future__ import annotations

from typing import Any


def attention_map(split: Any, method: Any, x, size, attention: list | None = None) -> Any:
    """``method``'s raw map (B, h, w) for the input ``x``, at ``size`` (the target layer's (h, w));
    ``attention``: the scores when the pass already took them (else taken here)."""
    layout = split.attention_tokens
    raw = method.fn(split.attention_scores(x) if attention is None else attention, layout.prefix, layout.grid)
    return _at_size(split, raw, size)


def attention_class_maps(split: Any, method: Any, x, classes, n: int, size) -> Any:
    """A class-specific attention method's raw maps (B, N, h, w) for the input ``x`` and the explained
    ``classes`` (B, N): the model runs once under a persistent tape, and each rank n's class scores are
    differentiated with respect to every attention layer's scores, one backward pass per rank (the
    forward pass is not repeated per class, as tiling the input would; its activations are kept once)."""
    import tensorflow as tf

    layout = split.attention_tokens
    with tf.GradientTape(persistent=True) as tape:
        _, logits, scores = split.full_attention(x)
        picked = tf.cast(tf.gather(logits, classes, axis=1, batch_dims=1), tf.float32)  # (B, N)
        totals = [tf.reduce_sum(picked[:, k]) for k in range(n)]
    per_rank = [tape.gradient(total, scores) for total in totals]  # N x layers x (B, heads, T, T)
    del tape
    image_major = lambda parts: tf.reshape(tf.stack(parts, axis=1), tf.concat([[-1], tf.shape(parts[0])[1:]], 0))  # noqa: E731
    grads = [image_major([rank[layer] for rank in per_rank]) for layer in range(len(scores))]
    tiled = [tf.repeat(s, n, axis=0) for s in scores]
    raw = _at_size(split, method.fn(tiled, grads, layout.prefix, layout.grid), size)  # (B * N, h, w)
    return tf.reshape(raw, tf.concat([[-1, n], tf.shape(raw)[1:]], axis=0))


def _at_size(split: Any, raw, size):
    """(M, grid h, grid w) -> (M, h, w) at the target layer's map size (bilinear where they differ)."""
    import tensorflow as tf

    if tuple(split.attention_tokens.grid) == tuple(split.feature_shape[:2]):
        return raw
    return tf.image.resize(raw[..., None], size, method="bilinear")[..., 0]
