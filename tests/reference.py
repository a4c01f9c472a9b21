"""The plain, tutorial-style references the tests compare with.

Grad-CAM: one image, one class, one tape, written independently of
gradcam_cli.engine.explainer: the class score before softmax is taken from the final
Dense layer's input times its kernel plus bias.

Filter patterns: the book's loop (Deep Learning with Python, 5.4.2), one filter at a time,
a GradientTape per filter per step, from the same noise as ``FilterAscent.run``
(``benchmarks/_inspect.py`` times it as the baseline).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from gradcam_cli.inspect.filters import noise
from gradcam_cli.models.graph import flatten
from gradcam_cli.models.probe import locate, runner
from gradcam_cli.render.channels import deprocess


def _output_of(model: keras.Model, name: str):
    """The output of the layer, or of the keras.ops operation (ConvNeXt's residual ``add_17``), ``name``."""
    for op in model.operations:
        if op.name == name:
            return op.output
    return model.get_layer(name).output  # raises Keras' own "No such layer" error


def logits_model(model: keras.Model, layer_name: str):
    """Returns f(x) -> (activations, logits) for a model ending in Dense(softmax) or Activation."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Dense):
        grad_model = keras.Model(model.inputs[0], [_output_of(model, layer_name), last.input])

        def f(x):
            acts, features = grad_model(x, training=False)
            return acts, tf.matmul(features, last.kernel) + last.bias

        return f
    # a stand-alone Activation / Softmax layer: its input is the logit
    grad_model = keras.Model(model.inputs[0], [_output_of(model, layer_name), last.input])
    return lambda x: grad_model(x, training=False)


def gradcam_reference(model: keras.Model, layer_name: str, image: np.ndarray, class_index: int) -> np.ndarray:
    f = logits_model(model, layer_name)
    with tf.GradientTape() as tape:
        acts, logits = f(image[None])
        score = logits[0, class_index]
    grads = tape.gradient(score, acts)[0].numpy()
    acts = acts[0].numpy()
    weights = grads.mean(axis=(0, 1))
    cam = np.maximum((acts * weights).sum(axis=-1), 0.0)
    peak = cam.max()
    return cam / peak if peak > 0 else cam


def feature_extractor(model: Any, layer: str, preprocess: Callable[[Any], Any] | None = None) -> Callable:
    """As the book: ``keras.Model(model.inputs, layer.output)`` for a top-level layer (the graph
    executor for a nested path), after ``preprocess``; image 0..255 -> layer output."""
    prep = preprocess or (lambda x: x)
    try:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        sub = keras.Model(inputs, model.get_layer(layer).output)
        return lambda image: sub(prep(image), training=False)
    except ValueError:
        graph = flatten(model)
        run = runner(graph, [locate(graph, layer).key])
        return lambda image: run(prep(image))[0]


def book_step(extractor: Callable, image: Any, filter_index: Any, step_size: float) -> tuple[Any, Any]:
    """One of the book's steps for one image (1, H, W, 3) and one filter: (new image, loss)."""
    with tf.GradientTape() as tape:
        tape.watch(image)
        loss = tf.reduce_mean(tf.gather(extractor(image), filter_index, axis=-1))
    grads = tape.gradient(loss, image)
    grads /= tf.sqrt(tf.reduce_mean(tf.square(grads))) + 1e-5
    return image + step_size * grads, loss


def book_loop(
    model: Any,
    layer: str,
    filters: Sequence[int],
    size: int | tuple[int, int],
    steps: int,
    step_size: float,
    preprocess: Callable[[Any], Any] | None = None,
    seed: int = 0,
    *,
    compiled: bool = False,
) -> np.ndarray:
    """The book's loop in TensorFlow 2: one filter at a time, a GradientTape per filter per step,
    from the same noise as :meth:`FilterAscent.run`. ``compiled``: the step in a ``tf.function``
    (the filter index a tensor, so one trace serves every filter) instead of eager.
    Returns patterns RGB uint8 (F, H, W, 3)."""
    extractor = feature_extractor(model, layer, preprocess)

    def step(image: Any, f: Any) -> tuple[Any, Any]:
        return book_step(extractor, image, f, step_size)

    if compiled:
        step = tf.function(step, autograph=False)
    shape = (size, size) if isinstance(size, int) else tuple(size)
    start = noise(filters, (*shape, 3), seed)
    out = []
    for f, image in zip(filters, start):
        x = tf.constant(image[None])
        for _ in range(steps):
            x, _ = step(x, tf.constant(int(f)))
        out.append(x.numpy()[0])
    return deprocess(np.stack(out))


# ---------------------------------------------------------------------------
# 3-D maps: one volume, one class, one tape, each method's formula written out in NumPy


def volume_tape(model: keras.Model, layer: str, volume: np.ndarray, class_index: int):
    """(activations (h, w, d, K), dy_c/dA) of one volume, y_c the logit before the final softmax layer."""
    sub = keras.Model(model.inputs[0], [model.get_layer(layer).output, model.layers[-1].input])
    with tf.GradientTape() as tape:
        acts, logits = sub(volume[None], training=False)
        score = logits[0, class_index]
    return acts[0].numpy().astype(np.float64), tape.gradient(score, acts)[0].numpy().astype(np.float64)


def _scaled(cam: np.ndarray) -> np.ndarray:
    cam = np.maximum(cam, 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def eigen_3d(acts: np.ndarray) -> np.ndarray:
    """The activations' first principal component over positions, sign agreeing with the channel mean."""
    flat = acts.reshape(-1, acts.shape[-1])
    centred = flat - flat.mean(0)
    v = np.linalg.svd(centred, full_matrices=False)[2][0]
    projection = centred @ v
    mean = flat.mean(1)
    if (projection * (mean - mean.mean())).sum() < 0:
        projection = -projection
    return projection.reshape(acts.shape[:3])


def volume_method_map(method: str, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """gradcam, gradcam++, xgradcam, layercam, hirescam, eigencam on one volume: the (h, w, d) map in [0, 1]."""
    axes = (0, 1, 2)
    if method == "gradcam":
        return _scaled((acts * grads.mean(axes)).sum(-1))
    if method == "gradcam++":
        g2, g3 = grads ** 2, grads ** 3
        denom = 2 * g2 + acts.sum(axes) * g3 + 1e-6
        alpha = np.where(grads != 0, g2 / np.where(grads != 0, denom, 1.0), 0.0)
        return _scaled((acts * (np.maximum(grads, 0) * alpha).sum(axes)).sum(-1))
    if method == "xgradcam":
        return _scaled((acts * ((grads * acts).sum(axes) / (acts.sum(axes) + 1e-7))).sum(-1))
    if method == "layercam":
        return _scaled((np.maximum(grads, 0) * acts).sum(-1))
    if method == "hirescam":
        return _scaled((grads * acts).sum(-1))
    if method == "eigencam":
        return _scaled(eigen_3d(acts))
    raise ValueError(method)


def linear_resize_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation along one axis, half-pixel centres, edges clamped."""
    n = a.shape[axis]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    frac = (src - i0).reshape([-1 if k == axis else 1 for k in range(a.ndim)])
    return np.take(a, i0, axis=axis) * (1 - frac) + np.take(a, i1, axis=axis) * frac


def trilinear_numpy(a: np.ndarray, shape) -> np.ndarray:
    """(h, w, d, ...) -> (H, W, D, ...), one axis at a time."""
    for axis, size in enumerate(shape):
        a = linear_resize_axis(a, axis, size)
    return a


def scorecam_3d(model: keras.Model, layer: str, volume: np.ndarray, class_index: int,
                centred: bool = False, toward: str = "zero") -> np.ndarray:
    """Score-CAM on one volume: each channel upsampled trilinearly and min-max scaled masks the
    input (times it, or toward the volume's mean: mean + mask x (volume - mean), ``toward="mean"``);
    softmax over channels of the class logit on the masked volumes weighs the channels
    (``centred``: times the activations less each channel's mean over positions)."""
    acts, _ = volume_tape(model, layer, volume, class_index)
    logits_of = keras.Model(model.inputs[0], model.layers[-1].input)
    masks = []
    for k in range(acts.shape[-1]):
        up = trilinear_numpy(acts[..., k], volume.shape[:3])
        span = up.max() - up.min()
        masks.append((up - up.min()) / (span + 1e-8) if span > 1e-8 else np.zeros_like(up))
    base = volume.mean(axis=(0, 1, 2)) if toward == "mean" else 0.0
    masked = np.stack([base + m[..., None] * (volume - base) for m in masks]).astype(np.float32)
    scores = logits_of(masked, training=False).numpy()[:, class_index].astype(np.float64)
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    return _scaled(((acts - acts.mean(axis=(0, 1, 2)) if centred else acts) * weights).sum(-1))
