"""EfficientNet-Lite0's graph as a plain Keras 3 functional model (see :mod:`gradcam_cli.models.lite0`
for its weights): EfficientNet-B0's block table without squeeze-excitation, ReLU6, batch-norm
epsilon 1e-3, a fixed 32-channel stem and a 1280-channel head, TensorFlow 'same' padding on the
strided convolutions, layer names as ``keras.applications.EfficientNetB0``'s."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

MODEL_NAME = "efficientnet_lite0"


#: (expand ratio, kernel, stride, filters in, filters out, repeats) per stage.
BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
STEM_FILTERS = 32
TOP_FILTERS = 1280
BN_EPSILON = 1e-3
ACTIVATION = "relu6"

def block_specs() -> list[tuple[str, int, int, int, int, int]]:
    """Expand :data:`BLOCKS` into one ``(prefix, expand, kernel, stride, in, out)`` per block."""
    specs = []
    for stage, (expand, kernel, stride, f_in, f_out, repeats) in enumerate(BLOCKS):
        for j in range(repeats):
            prefix = f"block{stage + 1}{chr(ord('a') + j)}_"
            specs.append(
                (prefix, expand, kernel, stride if j == 0 else 1, f_in if j == 0 else f_out, f_out)
            )
    return specs


# --------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------


def _tf_same_pad(size: int | None, kernel: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) of a stride-2 conv along one axis.

    TF pads ``max((ceil(n / 2) - 1) * 2 + k - n, 0)`` in total, the odd pixel
    after: an even input of a 3x3 conv gets (0, 1), not PyTorch's symmetric
    (1, 1). An unknown size is treated as even, like
    ``keras.applications.imagenet_utils.correct_pad``.
    """
    n = 2 * kernel if size is None else size
    total = max((-(-n // 2) - 1) * 2 + kernel - n, 0)
    return (total // 2, total - total // 2)


def _strided_pad(x: Any, kernel: int, name: str) -> Any:
    """Zero-pad ``x`` for a stride-2 'valid' conv so it matches TF 'same' padding."""
    from keras import layers

    _, height, width, _ = x.shape
    padding = (_tf_same_pad(height, kernel), _tf_same_pad(width, kernel))
    return layers.ZeroPadding2D(padding=padding, name=name)(x)


def _conv_bn_act(x: Any, filters: int, kernel: int, stride: int, name: str, act: bool = True) -> Any:
    """Conv2D (no bias) + BatchNormalization (+ ReLU6), Keras EfficientNet names."""
    from keras import layers

    padding = "same"
    if stride == 2:
        x = _strided_pad(x, kernel, f"{name}_conv_pad")
        padding = "valid"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if act:
        x = layers.Activation(ACTIVATION, name=f"{name}_activation")(x)
    return x


def _block(inputs: Any, prefix: str, expand: int, kernel: int, stride: int, f_in: int, f_out: int) -> Any:
    """One MBConv block without squeeze-excitation (Keras EfficientNet names)."""
    from keras import layers

    x = inputs
    if expand != 1:
        x = _conv_bn_act(x, f_in * expand, 1, 1, f"{prefix}expand")
    padding = "same"
    if stride == 2:
        x = _strided_pad(x, kernel, f"{prefix}dwconv_pad")
        padding = "valid"
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False, name=f"{prefix}dwconv")(x)
    x = layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, name=f"{prefix}bn")(x)
    x = layers.Activation(ACTIVATION, name=f"{prefix}activation")(x)
    x = _conv_bn_act(x, f_out, 1, 1, f"{prefix}project", act=False)
    if stride == 1 and f_in == f_out:
        x = layers.add([x, inputs], name=f"{prefix}add")
    return x


def build_graph(input_shape: tuple[int | None, int | None, int] = (224, 224, 3), classes: int = 1000) -> keras.Model:
    """Build the randomly initialised EfficientNet-Lite0 functional model."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="input_layer")
    x = _conv_bn_act(inputs, STEM_FILTERS, 3, 2, "stem")
    for spec in block_specs():
        x = _block(x, *spec)
    x = _conv_bn_act(x, TOP_FILTERS, 1, 1, "top")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(0.2, name="top_dropout")(x)
    outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=MODEL_NAME)


# --------------------------------------------------------------------------
# Conversion
