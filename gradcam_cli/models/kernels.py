"""Faster head kernels for Grad-CAM's backward passes, exact where Grad-CAM looks.

Big Dense layers get a pre-transposed kernel (a plain matmul in the backward
pass); VGG's ``pool -> flatten -> fc1`` gets a kernel averaged over positions,
exact in the per-channel gradient sums that Grad-CAM uses."""

from __future__ import annotations

from typing import Any, Iterable


#: Dense kernels with at least this many weights get a pre-transposed copy for the backward pass
BIG_KERNEL = 1 << 20
#: a head with a Dense kernel this big (VGG's 25088 x 4096 and 4096 x 4096) is "heavy": Grad-CAM
#: runs it once and back-propagates N times (batch Jacobian) rather than running it N times
HEAVY_KERNEL = 1 << 23


def big_dense(op: Any, minimum: int = BIG_KERNEL) -> bool:
    """A plain Dense layer (not quantised, no LoRA) with at least ``minimum`` weights."""
    from keras import layers

    return (
        type(op) is layers.Dense
        and int(op.kernel.shape[0]) * int(op.kernel.shape[1]) >= minimum
        and getattr(op, "quantization_mode", None) is None
        and not getattr(op, "lora_enabled", False)
    )


def transposed_kernels(steps: list, skip: Iterable[int] = ()) -> dict[int, Any]:
    """id(Dense layer) -> its kernel transposed, for the big plain Dense layers among ``steps``
    (but those in ``skip``).

    TensorFlow's gradient of ``x @ W`` computes ``dy @ W^T`` with a transposed-operand
    matmul that is ~5x slower on the CPU than a plain one for VGG's 25088 x 4096
    kernel; a transposed copy (taken once, when the model is cut) makes Grad-CAM's N
    backward passes through the head cheap. Costs the kernel's memory once more.
    """
    import tensorflow as tf

    out = {}
    for step in steps:
        if big_dense(step.op) and id(step.op) not in skip:
            out[id(step.op)] = tf.constant(tf.transpose(tf.convert_to_tensor(step.op.kernel)))
    return out


def channel_mean_kernels(steps: list, target: str) -> dict[int, Any]:
    """id(Dense) -> (K, units) kernel averaged over positions, where the head is
    ``target -> MaxPooling2D* -> Flatten -> Dense`` (VGG: block5_conv3 -> pool -> flatten -> fc1).

    Grad-CAM needs only the spatial sum of dY/dA per channel. Max pooling routes each
    gradient to one input cell (sums kept) and Flatten is a reshape, so that sum is the
    sum over positions of ``dy @ W^T``, which is ``positions * dy @ mean_kernel^T``: a
    (K, units) product instead of the whole kernel (VGG16: 512 x 4096 instead of
    25088 x 4096, the largest read of Grad-CAM's backward pass).
    """
    import tensorflow as tf
    from keras import layers

    consumers: dict[str, list] = {}
    for step in steps:
        for key in step.inputs:
            consumers.setdefault(key, []).append(step)
    key = target
    while True:  # along the only consumer of each tensor: max pools, then a Flatten
        users = consumers.get(key, [])
        if len(users) != 1 or len(users[0].outputs) != 1 or users[0].inputs != (key,):
            return {}
        (step,), key = users, users[0].outputs[0]
        if not (type(step.op) is layers.MaxPooling2D and step.op.data_format == "channels_last"):
            break
    if type(step.op) is not layers.Flatten or getattr(step.op, "data_format", "channels_last") != "channels_last":
        return {}
    shape = step.node.input_tensors[0].shape[1:]
    dense = consumers.get(key, [])
    if len(dense) != 1 or len(shape) != 3 or any(d is None for d in shape):
        return {}
    op = dense[0].op
    h, w, k = (int(d) for d in shape)
    if not big_dense(op) or int(op.kernel.shape[0]) != h * w * k:
        return {}
    if sum(step.op is op for step in steps) != 1:  # a shared layer: its other calls need the exact gradient
        return {}
    kernel = tf.reshape(tf.cast(tf.convert_to_tensor(op.kernel), tf.float32), [h * w, k, -1])
    return {id(op): (tf.constant(tf.transpose(tf.reduce_mean(kernel, axis=0))), h * w)}


def _matmul(x: Any, kernel: Any, transposed: Any | None) -> Any:
    """``x @ kernel``; with ``transposed`` (= kernel^T), its input gradient is a plain matmul.

    ``transposed`` may instead be ``(mean_kernel^T, positions)`` (see
    :func:`_channel_mean_kernels`): the input gradient is then ``dy @ mean_kernel^T``
    repeated at every position, whose per-channel sums over positions are exact (all
    Grad-CAM uses) while the values at single positions are not.
    """
    import tensorflow as tf

    if transposed is None:
        return tf.matmul(x, kernel)

    @tf.custom_gradient
    def matmul(x, k):
        def grad(dy):
            if isinstance(transposed, tuple):
                mean_t, positions = transposed
                return tf.tile(tf.matmul(dy, tf.cast(mean_t, dy.dtype)), [1, positions]), None
            return tf.matmul(dy, tf.cast(transposed, dy.dtype)), None

        return tf.matmul(x, k), grad

    return matmul(x, kernel)


def dense(op: Any, x: Any, transposed: Any | None, activation: bool = True) -> Any:
    """What ``Dense.call`` computes (2-D input), with the fast input gradient."""
    import tensorflow as tf

    dtype = op.compute_dtype  # mixed precision included
    x = tf.cast(x, dtype)
    y = _matmul(x, tf.cast(tf.convert_to_tensor(op.kernel), dtype), transposed)
    if op.use_bias:
        y = y + tf.cast(tf.convert_to_tensor(op.bias), dtype)
    if activation and op.activation is not None:
        y = op.activation(y)
    return y

