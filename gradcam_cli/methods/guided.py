"""Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the Grad-CAM map.

Guided backpropagation: the backward pass of every ReLU passes only positive gradients
where the ReLU's input was positive. It covers every TensorFlow ``Relu`` and ``Relu6`` op
the model runs: ``activation="relu"`` / ``"relu6"`` inside Conv and Dense layers,
``ReLU`` layers (``max_value`` 6 included) and ``Activation("relu")``; other activations
(swish, GELU, leaky ReLU, ...) keep their ordinary gradient. The model is not touched:
the engine runs one more forward pass with these ops' gradients replaced
(:func:`guided_relus`) and differentiates it with ``tf.gradients``.
"""

from __future__ import annotations

import contextlib
import threading

from gradcam_cli.methods.registry import register

_LOCK = threading.Lock()
_REGISTERED: list[bool] = []
GUIDED = {"Relu": "GradcamCliGuidedRelu", "Relu6": "GradcamCliGuidedRelu6"}


@register("guided", kind="guided", sums_only=True)
def guided(cams, input_gradients):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation x the upsampled Grad-CAM map.

    ``cams`` (M, H, W) Grad-CAM maps upsampled to the input; ``input_gradients`` (M, H, W, 3)."""
    return input_gradients * cams[..., None]


def _register_gradients() -> None:
    """Register the guided gradients with TensorFlow once (on first use: no TensorFlow at import)."""
    import tensorflow as tf

    with _LOCK:
        if _REGISTERED:
            return

        def guided_mask(grad, inner):
            return grad * tf.cast(inner, grad.dtype) * tf.cast(grad > 0, grad.dtype)

        @tf.RegisterGradient(GUIDED["Relu"])
        def _relu(op, grad):
            return guided_mask(grad, op.outputs[0] > 0)

        @tf.RegisterGradient(GUIDED["Relu6"])
        def _relu6(op, grad):
            x = op.inputs[0]
            return guided_mask(grad, tf.logical_and(x > 0, x < 6))

        _REGISTERED.append(True)


@contextlib.contextmanager
def guided_relus():
    """Inside a ``tf.function``: ReLU ops made in this block get guided gradients under ``tf.gradients``."""
    import tensorflow as tf

    _register_gradients()
    with tf.compat.v1.get_default_graph().gradient_override_map(GUIDED):
        yield
