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
