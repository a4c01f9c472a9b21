"""Attention methods' maps inside the compiled explainer (see :mod:`gradcam_cli.methods.attention`).

The attention scores of every MultiHeadAttention layer come from the same input batch: without
gradient methods, from the one run of the model that also gives the scores
(:attr:`gradcam_cli.models.split.Split.full_attention`); beside gradient methods, from one more
run of the layers up to the last attention (:attr:`~gradcam_cli.models.split.Split.attention_scores`).
The method turns them into one (B, h, w) map per image, at the target layer's map size.
"""

from __future__ import annotations

from typing import Any


def attention_map(split: Any, method: Any, x, size, attention: list | None = None) -> Any:
    """``method``'s raw map (B, h, w) for the input ``x``, at ``size`` (the target layer's (h, w));
    ``attention``: the scores when the pass already took them (else taken here)."""
    import tensorflow as tf

    layout = split.attention_tokens
    raw = method.fn(split.attention_scores(x) if attention is None else attention, layout.prefix, layout.grid)
    if tuple(layout.grid) == tuple(split.feature_shape[:2]):
        return raw
    return tf.image.resize(raw[..., None], size, method="bilinear")[..., 0]
