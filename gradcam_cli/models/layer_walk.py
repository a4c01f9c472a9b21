"""Computing a target layer's :class:`~gradcam_cli.models.geometry.Geometry`: the layer walk.

:func:`layer_geometry` walks every layer between the model input and the target once,
composing each layer's stride and offset into where the target's cells lie
(:class:`_Place`), and classifies the result as the stretch or the receptive-field
placement (see :mod:`gradcam_cli.models.geometry`). NumPy here; Keras only inside
functions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gradcam_cli.errors import ModelError, OptionError
from gradcam_cli.models.geometry import RECEPTIVE_FIELD, STRETCH, Geometry, stretch_geometry


def _graph_tools() -> tuple[Any, Any]:
    """The project's graph flattening and target lookup: the one place that imports them."""
    from gradcam_cli.models.graph import flatten
    from gradcam_cli.models.targets import resolve_target

    return flatten, resolve_target


class _Unsupported(Exception):
    """A layer the walk cannot place; the geometry falls back to the stretch."""


@dataclass(frozen=True)
class _Place:
    """Where a tensor's cells lie: cell k of axis a is centred at ``scale[a] * k + shift[a]``.

    ``nominal``: the size an all-'same' network would give here; ``same``: no layer so far
    produced another size (explicit padding in between allowed).
    """

    scale: tuple[float, float]
    shift: tuple[float, float]
    size: tuple[int, int]
    nominal: tuple[int, int]
    same: bool = True


def _conv_axis(n: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, float, float]:
    """A conv / pool along one axis: (output size, input cell of output cell 0's centre, stride)."""
    span = dilation * (kernel - 1) + 1
    if padding == "valid":
        if n < span:
            raise _Unsupported(f"input size {n} is smaller than the kernel span {span}")
        return (n - span) // stride + 1, (span - 1) / 2, stride
    if padding != "same":
        raise _Unsupported(f"padding '{padding}' is not understood")
    out = -(-n // stride)
    before = max((out - 1) * stride + span - n, 0) // 2  # TensorFlow pads the odd pixel after
    return out, (span - 1) / 2 - before, stride


def _transposed_axis(n: int, kernel: int, stride: int, dilation: int, padding: str, extra: int | None):
    """Conv2DTranspose along one axis, approximated by the affine fit of its cells' centres.

    Output cell o reads the input cells i with ``o = stride * i + tap - before``; their mean is
    ``(o + before - (span - 1) / 2) / stride`` up to rounding: exact for an odd kernel with
    stride 2, within ``(stride - 1) / (2 * stride)`` input cells otherwise (a quarter for a
    4-wide kernel with stride 2), and off at the outer cells, which read fewer input cells.
    """
    span = dilation * (kernel - 1) + 1
    if padding == "valid":
        out = (n - 1) * stride + span + (max(span, stride) - span if extra is None else extra)
        before = 0
    elif padding == "same":
        out = n * stride if extra is None else (n - 1) * stride + span % 2 + extra
        before = max((n - 1) * stride + span - out, 0) // 2  # TF pads as the forward conv out -> n
    else:
        raise _Unsupported(f"padding '{padding}' is not understood")
    return out, (before - (span - 1) / 2) / stride, 1.0 / stride


def _resampled(op: Any, place: _Place) -> _Place:
    """Conv2D / DepthwiseConv2D / SeparableConv2D / Conv2DTranspose / MaxPooling2D / AveragePooling2D.

    Output cell k lies at input cell ``step * k + start``, composed into the place; the
    nominal ('same') size is ``ceil(n / stride)`` (``n * stride`` when transposed).
    """
    from keras import layers

    transposed = isinstance(op, layers.Conv2DTranspose)
    kernel = getattr(op, "kernel_size", None) or op.pool_size
    dilation = getattr(op, "dilation_rate", None) or (1, 1)
    axes = []
    for a in range(2):
        args = (place.size[a], int(kernel[a]), int(op.strides[a]), int(dilation[a]), op.padding)
        if transposed:
            extra = None if op.output_padding is None else int(op.output_padding[a])
            axes.append((*_transposed_axis(*args, extra), place.nominal[a] * int(op.strides[a])))
        else:
            axes.append((*_conv_axis(*args), -(-place.nominal[a] // int(op.strides[a]))))
    size = tuple(int(ax[0]) for ax in axes)
    nominal = tuple(int(ax[3]) for ax in axes)
    return _Place(
        scale=tuple(place.scale[a] * axes[a][2] for a in range(2)),
        shift=tuple(place.shift[a] + place.scale[a] * axes[a][1] for a in range(2)),
        size=size,
        nominal=nominal,
        same=place.same and size == nominal,
    )


def _padded(place: _Place, pads: Any, sign: int) -> _Place:
    """ZeroPadding2D (``sign`` -1) or Cropping2D (+1): positions shift, 'same'-ness is judged later."""
    (top, bottom), (left, right) = ((int(a), int(b)) for a, b in pads)
    size = (place.size[0] - sign * (top + bottom), place.size[1] - sign * (left + right))
    if min(size) < 1:
        raise _Unsupported(f"crops everything away (size {size})")
    shift = (place.shift[0] + sign * top * place.scale[0], place.shift[1] + sign * left * place.scale[1])
    return replace(place, shift=shift, size=size)


#: keras.ops operations (not layers) that act on each position on its own
_ELEMENTWISE_OPS = frozenset(
    "Add Subtract Multiply Divide TrueDivide Maximum Minimum Power Negative Abs Absolute Exp Log Sqrt Square "
    "Reciprocal Sign Tanh Sigmoid Relu Relu6 Silu Swish Gelu Elu Selu LeakyRelu HardSigmoid HardSilu HardSwish "
    "Softplus Softsign Mish Cast Clip Where Concatenate".split()
)


def _passes_through(op: Any) -> bool:
    """Layers whose output cell (i, j) lines up with input cell (i, j): elementwise, per-position, merges."""
    from keras import layers

    if type(op).__module__.startswith("keras.src.ops.") and type(op).__name__ in _ELEMENTWISE_OPS:
        return type(op).__name__ != "Concatenate" or getattr(op, "axis", -1) in (-1, 3)
    if isinstance(op, layers.Concatenate):
        return op.axis in (-1, 3)
    kinds = (
        layers.BatchNormalization, layers.LayerNormalization, layers.GroupNormalization, layers.UnitNormalization,
        layers.Normalization, layers.Rescaling, layers.Activation, layers.ReLU, layers.LeakyReLU, layers.PReLU,
        layers.ELU, layers.Softmax, layers.Dropout, layers.SpatialDropout2D, layers.GaussianNoise,
        layers.GaussianDropout, layers.AlphaDropout, layers.ActivityRegularization, layers.Identity, layers.Dense,
        layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum, layers.Minimum, layers.Masking,
    )
    return isinstance(op, kinds)


def _merge(places: list[_Place]) -> _Place:
    """The one place all spatial inputs of a pass-through layer share; _Unsupported if they differ."""
    first = places[0]
    for other in places[1:]:
        if other.size != first.size or not (
            np.allclose(other.scale, first.scale, rtol=0, atol=1e-9)
            and np.allclose(other.shift, first.shift, rtol=0, atol=1e-9)
        ):
            raise _Unsupported(
                f"its inputs' cells lie at different places (stride {first.scale} offset {first.shift} size "
                f"{first.size} vs stride {other.scale} offset {other.shift} size {other.size})"
            )
    same = all(p.same and p.nominal == first.nominal for p in places)
    return replace(first, same=same)


def _through(op: Any, ins: list[_Place | None], n_outputs: int) -> _Place | None:
    """Where ``op``'s output cells lie, given its inputs' (None: carries no position)."""
    from keras import layers

    spatial = [p for p in ins if p is not None]
    if not spatial:
        return None  # pooled, reshaped or dense features: no positions to carry
    if isinstance(op, (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)):
        return None
    if n_outputs != 1:
        raise _Unsupported(f"{n_outputs} outputs")
    if getattr(op, "data_format", "channels_last") != "channels_last":
        raise _Unsupported("data_format 'channels_first'")
    resampling = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Conv2DTranspose,
                  layers.MaxPooling2D, layers.AveragePooling2D)
    if isinstance(op, (*resampling, layers.ZeroPadding2D, layers.Cropping2D)) and len(ins) != 1:
        raise _Unsupported(f"{len(ins)} inputs")
    if isinstance(op, resampling):
        return _resampled(op, spatial[0])
    if isinstance(op, layers.ZeroPadding2D):
        return _padded(spatial[0], op.padding, -1)
    if isinstance(op, layers.Cropping2D):
        return _padded(spatial[0], op.cropping, +1)
    if _passes_through(op):
        return _merge(spatial)
    raise _Unsupported(
        "a layer that may move or resample positions (understood: convolutions, pooling, ZeroPadding2D, "
        "Cropping2D and per-position layers)"
    )


def _input_size(model: Any, shape: tuple, input_size: tuple[int, int] | None) -> tuple[int, int]:
    if len(shape) != 4:
        raise ModelError(
            f"model '{model.name}' takes inputs of shape {shape}; expected (batch, height, width, channels)"
        )
    static = (shape[1], shape[2])
    if input_size is None:
        if None in static:
            raise OptionError(
                f"model '{model.name}' takes inputs of shape {shape}, without a fixed height and width; "
                "pass input_size (--input-size)"
            )
        return int(static[0]), int(static[1])
    size = (int(input_size[0]), int(input_size[1]))
    if any(s is not None and int(s) != v for s, v in zip(static, size)):
        raise ValueError(f"input_size {size} does not match the input shape {shape} of model '{model.name}'")
    return size


def _static_hw(shape: tuple) -> tuple[int, int] | None:
    return None if len(shape) != 4 or None in shape[1:3] else (int(shape[1]), int(shape[2]))


def _classify(place: _Place, size: tuple[int, int]) -> Geometry:
    """'stretch' when every layer kept 'same' sizes, else the receptive-field placement."""
    rf = (tuple(float(s) for s in place.scale), tuple(float(o) for o in place.shift))
    if place.same and place.size == place.nominal:
        geometry = stretch_geometry(size, place.size, rf=rf)
        shift = max(
            abs(rf[1][a] + k * rf[0][a] - (geometry.offset[a] + k * geometry.stride[a]))
            for a in range(2) for k in (0, place.size[a] - 1)
        )
        note = (
            "every layer keeps TensorFlow 'same' sizes: the map is stretched over the input; receptive-field "
            f"centres lie within {shift:.1f} px of the stretched cells' centres"
        )
        return replace(geometry, note=note)
    return Geometry(rf[0], rf[1], size, place.size, RECEPTIVE_FIELD,
                    "cells placed at their receptive-field centres ('valid' padding or uneven sizes)", *rf)


def layer_geometry(model: Any, layer_path: str, input_size: tuple[int, int] | None = None) -> Geometry:
    """The geometry of ``layer_path``'s cells (see :class:`Geometry`), computed once per model.

    ``layer_path``: a resolved target path (``Split.layer_name``; nested models as
    ``outer/inner/layer``). ``input_size``: (H, W) fed to the model, required when the
    model's input has no static height and width. Walks every layer between the input
    and the target (all branches, nested models inlined); where branches disagree or a
    layer is not understood (Resizing, UpSampling2D, Reshape, Lambda, custom layers, ...)
    the result is the stretch, with the reason in ``note``.
    """
    flatten, resolve = _graph_tools()
    graph = flatten(model)
    if len(graph.input_keys) != 1:
        raise ModelError(f"model '{model.name}' has {len(graph.input_keys)} inputs; expected one image input")
    (inp,) = graph.input_keys
    _, key, _ = resolve(graph, layer_path, tokens=True)
    size = _input_size(model, tuple(graph.tensors[inp].shape), input_size)
    if len(graph.tensors[key].shape) == 3:  # a token layer: its patches tile the input evenly
        return Geometry(None, None, size, None, STRETCH, "token grid: one cell per patch, stretched")
    static = _static_hw(tuple(graph.tensors[key].shape))
    places: dict = {inp: _Place((1.0, 1.0), (0.5, 0.5), size, size)}
    checkable = _static_hw(tuple(graph.tensors[inp].shape)) == size  # Keras' static shapes are for this size
    needed = graph.ancestors([key])
    for step in graph.steps:
        if id(step) not in needed:
            continue
        try:
            place = _through(step.op, [places.get(k) for k in step.inputs], len(step.outputs))
            shape = _static_hw(tuple(graph.tensors[step.outputs[0]].shape))
            if checkable and place is not None and shape is not None and shape != place.size:
                raise _Unsupported(f"computed size {place.size} but Keras gives {shape}")
        except _Unsupported as exc:
            note = f"stretched: layer '{step.path}' ({type(step.op).__name__}): {exc}"
            if static is None:
                return Geometry(None, None, size, None, STRETCH, note)
            return stretch_geometry(size, static, note)
        for k in step.outputs:
            places[k] = place
    place = places.get(key)
    if place is None:
        raise ModelError(f"layer '{layer_path}' of model '{model.name}' does not depend on the input's positions")
    return _classify(place, size)
