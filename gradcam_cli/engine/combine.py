"""From a method's output to the maps: the weighted sum (optionally centred) and the ReLU and
per-map scaling every method ends with. Shared by every engine (images, targets, volumes, layer sweeps)."""

from __future__ import annotations

from gradcam_cli.methods import Method
from gradcam_cli.methods.eigen import first_component


def normalise_maps(cams):
    """ReLU, then divide each map by its maximum; an all-zero map stays zero (no NaN)."""
    import tensorflow as tf

    cams = tf.nn.relu(cams)
    peak = tf.reduce_max(cams, axis=(-2, -1), keepdims=True)
    return tf.math.divide_no_nan(cams, peak)


def centred_acts(acts):
    """Activations (M, h, w, K), or (M, h, w, d, K) for a volume, less each channel's mean over positions
    (taken before the weighted sum: float32 rounding then stays relative to the centred values, not to the
    offsets it removes)."""
    import tensorflow as tf

    return acts - tf.reduce_mean(acts, axis=list(range(1, len(acts.shape) - 1)), keepdims=True)


def apply_method(method: Method, acts, grads, eigen_smooth: bool = False, centred: bool = False):
    """One method on (M, h, w, K) activations and gradients: the raw map (M, h, w), before ReLU.

    ``eigen_smooth``: the first principal component of the weighted activations (sign
    fixed, see :mod:`gradcam_cli.methods.eigen`) instead of their channel sum. ``centred``: the
    weights come from A and g as the method defines them; the map sums them times A less its mean
    over positions, per channel (a per-position method receives the centred A; a principal
    component is centred already)."""
    import tensorflow as tf

    if method.kind == "weights":
        weights = method.fn(acts, grads)  # (M, K)
        if eigen_smooth:
            return first_component(acts * weights[:, None, None, :])
        return tf.einsum("mhwk,mk->mhw", centred_acts(acts) if centred else acts, weights)
    if centred:
        acts = centred_acts(acts)
    if eigen_smooth and method.weighted is not None:
        return first_component(method.weighted(acts, grads))
    return method.fn(acts, grads)
