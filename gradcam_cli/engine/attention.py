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
    forward pass is not repeated per class, as tiling the input would), each rank's (B, heads, T, T)
    gradients reduced to its map against the scores as they are (not tiled N times)."""
    import tensorflow as tf

    layout = split.attention_tokens
    with tf.GradientTape(persistent=True) as tape:
        _, logits, scores = split.full_attention(x)
        picked = tf.cast(tf.gather(logits, classes, axis=1, batch_dims=1), tf.float32)  # (B, N)
        totals = [tf.reduce_sum(picked[:, k]) for k in range(n)]
    ranks = [_at_size(split, method.fn(scores, tape.gradient(total, scores), layout.prefix, layout.grid), size)
             for total in totals]  # N x (B, h, w)
    del tape
    return tf.stack(ranks, axis=1)


def _at_size(split: Any, raw, size):
    """(M, grid h, grid w) -> (M, h, w) at the target layer's map size (bilinear where they differ)."""
    import tensorflow as tf

    if tuple(split.attention_tokens.grid) == tuple(split.feature_shape[:2]):
        return raw
    return tf.image.resize(raw[..., None], size, method="bilinear")[..., 0]
