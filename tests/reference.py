"""The plain, tutorial-style Grad-CAM used as the reference: one image, one class, one tape.

Written independently of gradcam_cli.engine.explainer: the class score before softmax is
taken from the final Dense layer's input times its kernel plus bias.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def logits_model(model: keras.Model, layer_name: str):
    """Returns f(x) -> (activations, logits) for a model ending in Dense(softmax) or Activation."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Dense):
        grad_model = keras.Model(model.inputs[0], [model.get_layer(layer_name).output, last.input])

        def f(x):
            acts, features = grad_model(x, training=False)
            return acts, tf.matmul(features, last.kernel) + last.bias

        return f
    # a stand-alone Activation / Softmax layer: its input is the logit
    grad_model = keras.Model(model.inputs[0], [model.get_layer(layer_name).output, last.input])
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
