"""Attention methods' maps inside the compiled explainer (see :mod:`gradcam_cli.methods.attention`).

The attention scores of every MultiHeadAttention layer come from the same input batch
(:attr:`gradcam_cli.models.split.Split.attention_scores`: the layers before the last attention
run once more, and each attention layer again on its recorded inputs); the method turns them
into one (B, h, w) map per image, brought to the target layer's map size where it differs.
"""

from __future__ import annotations

from typing import Any


def attention_map(split: Any, method: Any, x, size) -> Any:
    """``method``'s raw map (B, h, w) for the input ``x``, at ``size`` (the target layer's (h, w))."""
    import tensorflow as tf

    layout = split.attention_tokens
    raw = method.fn(split.attention_scores(x), layout.prefix, layout.grid)
    if tuple(layout.grid) == tuple(split.feature_shape[:2]):
        return raw
    return tf.image.resize(raw[..., None], size, method="bilinear")[..., 0]
