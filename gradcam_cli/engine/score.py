"""Score-CAM's masked forward passes, in chunks, inside the compiled explainer.

Each of the K' chosen channels of A, upsampled and min-max normalised
(:func:`gradcam_cli.methods.score.channel_masks`), masks the preprocessed input (toward zero,
``M x``, or toward its mean per input channel, ``b + M (x - b)``: ``MethodOptions.scorecam_baseline``); the
model scores every masked input once, and all N target classes are read from those
same passes. Only ``chunk`` masked inputs exist at a time: never B x K' x H x W x 3.
"""

from __future__ import annotations

from typing import Any, Callable

from gradcam_cli.settings import MethodOptions
from gradcam_cli.methods.score import channel_masks, top_variance_channels


def chosen_channels(acts, options: MethodOptions):
    """(B, h, w, K) -> (B, h, w, K'): all channels, or the K' = scorecam_channels of highest variance."""
    import tensorflow as tf

    k = int(acts.shape[-1])
    if options.scorecam_channels is None or options.scorecam_channels >= k:
        return acts
    picked = top_variance_channels(acts, options.scorecam_channels)  # (B, K')
    return tf.gather(acts, picked, axis=3, batch_dims=1)


def masked_scores(score: Callable[[Any], Any], x, acts, classes, batch: int, toward: str = "zero"):
    """The target classes' scores on the input masked by each channel: (B, N, K') float32.

    ``score(inputs) -> (batch, C)`` scores before softmax; ``x`` (B, H, W, 3) the
    preprocessed input; ``acts`` (B, h, w, K') the channels; ``classes`` (B, N) int32;
    ``batch``: masked inputs per forward pass (at least one channel per pass); ``toward``:
    ``"zero"`` or ``"mean"`` (:func:`blend_toward`)."""
    import tensorflow as tf

    b = tf.shape(x)[0]
    k = tf.shape(acts)[3]
    make_masked = tf.function(lambda x, part: _masked_inputs(x, part, toward), jit_compile=True)
    step = tf.maximum(1, batch // b)  # channels per pass
    chunks = (k + step - 1) // step
    out = tf.TensorArray(tf.float32, size=chunks, infer_shape=False, element_shape=tf.TensorShape([None, None, None]))

    def body(i, out):
        start = i * step
        part = acts[..., start:tf.minimum(start + step, k)]  # (B, h, w, c)
        c = tf.shape(part)[3]
        masked = make_masked(x, part)
        scores = tf.reshape(tf.cast(score(masked), tf.float32), [b, c, -1])  # (B, c, C), image-major
        picked = tf.gather(scores, classes, axis=2, batch_dims=1)  # (B, c, N)
        return i + 1, out.write(i, tf.transpose(picked, [1, 0, 2]))  # (c, B, N): concat joins channels

    _, out = tf.while_loop(lambda i, _: i < chunks, body, [tf.constant(0), out], parallel_iterations=1)
    return tf.transpose(out.concat(), [1, 2, 0])  # (B, N, K')


def blend_toward(x, masks, toward: str, spatial: int = 2):
    """(B, *S, C) input, (B, c, *S) masks -> (B, c, *S, C): ``M x`` (``toward="zero"``, Score-CAM's
    definition) or ``b + M (x - b)`` with ``b`` each image's mean per input channel over its ``spatial``
    axes (``"mean"``: a masked-out place reads as the image's average, not as black, which a transformer's
    LayerNorm would see as the same patch at a lower scale)."""
    import tensorflow as tf

    if toward == "zero":
        return x[:, None] * masks[..., None]
    base = tf.reduce_mean(x, axis=tuple(range(1, spatial + 1)), keepdims=True)
    return base[:, None] + masks[..., None] * (x - base)[:, None]


def _masked_inputs(x, part, toward: str = "zero"):
    """(B, H, W, 3) input, (B, h, w, c) channels -> (B * c, H, W, 3) masked inputs, image-major.
    Compiled by XLA (in :func:`masked_scores`): the resize, min-max and product fuse into a few
    passes over the masked inputs (Lite0, 128 masked passes: Score-CAM at 0.93-1.03x its floor,
    the masked forward passes alone, instead of 0.88x; benchmarks/results/methods.md)."""
    import tensorflow as tf

    masks = tf.transpose(channel_masks(part, tf.shape(x)[1:3]), [0, 3, 1, 2])  # (B, c, H, W)
    shape = tf.concat([[tf.shape(x)[0] * tf.shape(part)[3]], tf.shape(x)[1:]], axis=0)
    return tf.reshape(blend_toward(x, masks, toward), shape)
