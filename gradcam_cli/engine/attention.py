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


class TapedAttention:
    """One run of the model on ``x`` under a persistent tape: ``acts`` (the target layer's value),
    ``logits`` (the class scores) and ``scores`` (every attention layer's), kept to differentiate class
    scores with respect to the attention scores (:func:`attention_class_maps`). Without gradient methods
    it is the explainer's only run of the model; beside them, one more."""

    def __init__(self, split: Any, x):
        import tensorflow as tf

        self.tape = tf.GradientTape(persistent=True)
        with self.tape:
            self.acts, self.logits, self.scores = split.full_attention(x)


def attention_class_maps(split: Any, method: Any, taped: TapedAttention, classes, n: int, size) -> Any:
    """A class-specific attention method's raw maps (B, N, h, w) for the explained ``classes`` (B, N) of
    the run ``taped``: each rank n's class scores differentiated with respect to every attention layer's
    scores, one backward pass per rank (the forward pass is not repeated per class, as tiling the input
    would), each rank's (B, heads, T, T) gradients reduced to its map against the scores as they are."""
    import tensorflow as tf

    layout = split.attention_tokens
    with taped.tape:  # the taped run's persistent tape records the class scores' selection too
        picked = tf.cast(tf.gather(taped.logits, classes, axis=1, batch_dims=1), tf.float32)  # (B, N)
        totals = [tf.reduce_sum(picked[:, k]) for k in range(n)]
    grads = [taped.tape.gradient(total, taped.scores) for total in totals]
    return tf.stack([_at_size(split, method.fn(taped.scores, g, layout.prefix, layout.grid), size)
                     for g in grads], axis=1)  # N x (B, h, w) -> (B, N, h, w)


def _at_size(split: Any, raw, size):
    """(M, grid h, grid w) -> (M, h, w) at the target layer's map size (bilinear where they differ)."""
    import tensorflow as tf

    if tuple(split.attention_tokens.grid) == tuple(split.feature_shape[:2]):
        return raw
    return tf.image.resize(raw[..., None], size, method="bilinear")[..., 0]
