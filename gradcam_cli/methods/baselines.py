"""Baseline maps, for comparison overlays (``evaluate`` always scores its own beside every method).

Neither looks at gradients or at the class: a map that a real method should beat.

- ``random``: uniform noise in [0, 1) per cell, a hash of the cell's position and of the
  image's activations (``frac(sin(x) * 43758.5453)``), so it is the same for an image
  whatever its batch, and differs between images;
- ``centre``: a centred Gaussian, sigma = 1/4 of the map's short side (the centre bias of
  photographs).
"""

from __future__ import annotations

from gradcam_cli.methods.registry import register


@register("random", kind="spatial", needs_gradients=False, class_agnostic=True)
def random(activations, gradients):
    """A baseline: uniform noise per cell, reproducible per image (a hash of its activations)."""
    import tensorflow as tf

    acts = tf.cast(activations, tf.float32)
    shape = tf.shape(acts)
    image = tf.reduce_sum(acts, axis=[1, 2, 3])  # (M,): one number per image
    rows = tf.cast(tf.range(shape[1]), tf.float32)[:, None]
    cols = tf.cast(tf.range(shape[2]), tf.float32)[None, :]
    x = 12.9898 * rows + 78.233 * cols  # (h, w)
    x = x[None] + tf.math.floormod(image, 1000.0)[:, None, None] * 0.7315
    noise = tf.sin(x) * 43758.5453
    return noise - tf.floor(noise)


@register("centre", kind="spatial", needs_gradients=False, class_agnostic=True)
def centre(activations, gradients):
    """A baseline: a centred Gaussian, sigma = 1/4 of the map's short side."""
    import tensorflow as tf

    shape = tf.shape(activations)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    y = tf.range(h) - (h - 1.0) / 2.0
    x = tf.range(w) - (w - 1.0) / 2.0
    sigma = tf.minimum(h, w) / 4.0
    cam = tf.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2.0 * sigma * sigma))
    return tf.tile(cam[None], [shape[0], 1, 1])
