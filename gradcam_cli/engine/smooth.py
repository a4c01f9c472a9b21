"""``--aug-smooth``: maps averaged over test-time augmentations, inside the compiled explainer.

The augmentations are pytorch-grad-cam's (ttach ``HorizontalFlip`` x ``Multiply(0.9, 1, 1.1)``):
the preprocessed input mirrored or not, times 0.9, 1.0 or 1.1. The plain pass chooses the
classes; the five other passes explain those same classes (never re-chosen); mirrored maps
are mirrored back; the six maps are averaged, then ReLU'd and normalised again.
"""

from __future__ import annotations

from typing import Callable

FACTORS = (0.9, 1.0, 1.1)


def augmentations() -> list[tuple[bool, float]]:
    """(mirrored, factor) of every pass, the plain one first."""
    others = [(flip, f) for flip in (False, True) for f in FACTORS if (flip, f) != (False, 1.0)]
    return [(False, 1.0), *others]


def aug_smoothed(core: Callable, x, extra, normalise: Callable):
    """``core(x, extra, classes) -> (scores, probs, classes, maps (B, N, M, h, w), guided (B, N, H, W, 3))``;
    returns the same, with maps and guided images averaged over the augmentations."""
    import tensorflow as tf

    scores, probs, classes, maps, guided = core(x, extra, None)
    all_maps, all_guided = [maps], [guided]
    for flip, factor in augmentations()[1:]:
        seen = tf.reverse(x, axis=[2]) if flip else x
        _, _, _, m, g = core(seen * factor, None, classes)
        all_maps.append(tf.reverse(m, axis=[4]) if flip else m)
        all_guided.append(tf.reverse(g, axis=[3]) if flip else g)
    mean = normalise(tf.reduce_mean(tf.stack(all_maps), axis=0))
    return scores, probs, classes, mean, tf.reduce_mean(tf.stack(all_guided), axis=0)
