"""The only module that builds or loads Keras models and reaches into their graphs.

``build_model`` turns a :class:`~gradcam_cli.profiles.Profile` into a Keras
model (pretrained, random, or from a local weights file). ``split_model`` cuts a
functional model at its target layer into a *trunk* (input -> activations) and a
*head* (activations -> class scores before the final softmax / sigmoid), without
mutating the model: the graph is re-threaded through the same layer objects.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pathlib
import sys
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ModelError, WeightsError
from .profiles import Profile, keras_cache_dir

#: final activations that are removed to get the score Grad-CAM differentiates
SQUASHING = ("softmax", "sigmoid")


def _resolve_builder(profile: Profile) -> Callable[..., Any]:
    spec = profile.builder
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"{profile.source}: builder '{spec}' cannot be imported ({exc}); "
            "use 'keras.applications.NAME' or 'package.module:function'"
        ) from None
    if not callable(obj):
        raise ModelError(f"{profile.source}: builder '{spec}' is not callable")
    return obj


def build_model(profile: Profile, weights: str | None = "imagenet") -> Any:
    """Build the profile's model.

    ``weights``: ``"imagenet"`` (the profile's pretrained weights), ``None`` or
    ``"none"`` (random initialisation), or a path to a local weights file.
    Keras' own download messages go to stderr, never to stdout.
    """
    builder = _resolve_builder(profile)
    height, width = profile.input_size
    kwargs = {"input_shape": (height, width, 3)}
    if weights in (None, "none"):
        with contextlib.redirect_stdout(sys.stderr):
            return builder(weights=None, **kwargs)
    if weights == "imagenet":
        return _build_pretrained(profile, builder, kwargs)
    path = pathlib.Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; pass --weights PATH to an existing file, or --weights none"
        )
    with contextlib.redirect_stdout(sys.stderr):
        model = builder(weights=None, **kwargs)
        try:
            model.load_weights(str(path))
        except Exception as exc:  # keras raises ValueError, OSError, KeyError, ... here
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(
                f"cannot load weights {path} into backbone '{profile.name}': {first}; "
                "expected a Keras .weights.h5 / .h5 file saved from the same architecture"
            ) from None
    return model


def _build_pretrained(profile: Profile, builder: Callable[..., Any], kwargs: dict) -> Any:
    cached = keras_cache_dir() / profile.weights_file if profile.weights_file else None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return builder(weights="imagenet", **kwargs)
    except WeightsError:
        raise
    except Exception as exc:
        if cached is not None and not cached.is_file():
            raise WeightsError(
                f"the ImageNet weights of '{profile.name}' are not on this machine and could not be "
                f"downloaded: Keras looks for {cached}; copy {profile.weights_file} there, "
                "pass --weights PATH to a local weights file, or --weights none for random weights"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot build backbone '{profile.name}' with ImageNet weights: {first}") from None


# ---------------------------------------------------------------------------
# graph surgery


@dataclass(frozen=True)
class LayerInfo:
    name: str
    shape: tuple  # output shape without the batch axis


def target_layer(model: Any, name: str) -> Any:
    """The layer called ``name``, checked to have a 4-D (batch, h, w, channels) output."""
    import difflib

    names = [layer.name for layer in model.layers]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise ModelError(
            f"model '{model.name}' has no layer '{name}'{hint}; pass --layer with one of its 4-D layers"
        )
    layer = model.get_layer(name)
    shape = tuple(layer.output.shape)
    if len(shape) != 4:
        raise ModelError(
            f"layer '{name}' of model '{model.name}' has output shape {shape}, not 4-D (batch, height, width, "
            "channels); Grad-CAM needs a convolutional layer: pass --layer with a 4-D layer"
        )
    return layer


def _squashing_name(fn: Any) -> str | None:
    name = getattr(fn, "__name__", None) or getattr(fn, "name", None)
    return name if name in SQUASHING else None


def _pre_activation(node: Any, args: tuple, kwargs: dict) -> tuple[Any, str | None]:
    """Call ``node``'s operation, but stop before a final softmax / sigmoid.

    Returns ``(output, removed_activation)``. Handles ``Dense(..., activation=...)``
    (weights shared, nothing mutated) and stand-alone ``Activation`` / ``Softmax``
    layers. Any other operation is called as it is.
    """
    from keras import layers, ops

    op = node.operation
    if isinstance(op, layers.Dense) and _squashing_name(op.activation):
        x = args[0]
        y = ops.matmul(x, op.kernel)
        if op.use_bias:
            y = ops.add(y, op.bias)
        return y, _squashing_name(op.activation)
    if isinstance(op, layers.Softmax):
        return args[0], "softmax"
    if isinstance(op, layers.Activation) and _squashing_name(op.activation):
        return args[0], _squashing_name(op.activation)
    return op(*args, **kwargs), None


def _output_activation(model: Any) -> str:
    """Which squashing function ends the model ("softmax", "sigmoid" or "linear")."""
    from keras import layers

    (output,) = model.outputs
    op = output._keras_history.operation
    if isinstance(op, layers.Softmax):
        return "softmax"
    if isinstance(op, (layers.Dense, layers.Activation)):
        return _squashing_name(op.activation) or "linear"
    return "linear"


def run_graph(model: Any, values: dict[int, Any]) -> Any | None:
    """Execute ``model``'s graph from the tensors in ``values`` (id(KerasTensor) -> value).

    ``values`` is filled in with every tensor computed on the way. The node that
    produces the output is called without its final softmax / sigmoid. Returns
    the output value, or None when it cannot be computed from the fed tensors
    alone (a skip connection bypasses them).
    """
    import keras

    (output,) = model.outputs
    history = output._keras_history
    out_node = history.operation._inbound_nodes[history.node_index]
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            if any(id(t) in values for t in node.outputs):
                continue  # fed from outside: do not recompute
            if any(id(t) not in values for t in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(values)
            if node is out_node:
                result, _ = _pre_activation(node, args, kwargs)
            else:
                result = node.operation(*args, **kwargs)
            for ref, value in zip(node.outputs, keras.tree.flatten(result)):
                values[id(ref)] = value
    return values.get(id(output))


@dataclass
class Split:
    """A model cut at its target layer.

    ``trunk(x) -> A``; ``head(A) -> scores`` (None when the cut is impossible);
    ``full(x) -> (A, scores)`` always works. ``activation`` is the squashing
    function removed from the output ("softmax", "sigmoid" or "linear").
    """

    model: Any
    layer_name: str
    activation: str
    trunk: Callable[[Any], Any]
    head: Callable[[Any], Any] | None
    full: Callable[[Any], Any]
    num_classes: int
    feature_shape: tuple  # (h, w, channels) of the target layer

    @property
    def cut(self) -> bool:
        return self.head is not None


def split_model(model: Any, layer_name: str) -> Split:
    """Cut ``model`` at ``layer_name`` (see :class:`Split`). Nothing is mutated."""
    import keras

    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ModelError(
            f"model '{getattr(model, 'name', model)}' is not a functional or Sequential Keras model; "
            "Grad-CAM needs its layer graph"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"model '{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "only single-input, single-output models are supported here"
        )
    layer = target_layer(model, layer_name)
    target = layer.output
    (inp,) = model.inputs
    trunk_model = keras.Model(inp, target, name=f"{model.name}_trunk")

    def trunk(x: Any) -> Any:
        return trunk_model(x, training=False)

    def full(x: Any) -> tuple[Any, Any]:
        values: dict[int, Any] = {id(inp): x}
        scores = run_graph(model, values)
        return values[id(target)], scores

    def head(a: Any) -> Any:
        return run_graph(model, {id(target): a})

    probe = keras.KerasTensor(target.shape, dtype=target.dtype)
    head_ok = run_graph(model, {id(target): probe}) is not None

    return Split(
        model=model,
        layer_name=layer_name,
        activation=_output_activation(model),
        trunk=trunk,
        head=head if head_ok else None,
        full=full,
        num_classes=int(model.outputs[0].shape[-1]),
        feature_shape=tuple(int(d) for d in target.shape[1:]),
    )
