"""A Keras model as a flat list of steps, and running any part of it.

A model is flattened into a list of *steps*: one per node of its Keras graph,
in topological order, with every nested functional / Sequential model inlined
(its own layers called node by node on the outer tensors) instead of being
called as one opaque operation. A tensor is identified by a key
``(scope, id(KerasTensor))`` where ``scope`` names the chain of nested-model
calls; the inputs of an inlined model are aliased to the outer tensors fed to
it, and the outer outputs of that call to the inner model's outputs. Executing
the steps from any set of fed keys gives trunk, head and full model alike."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from gradcam_cli.errors import ModelError
from gradcam_cli.models.kernels import dense

#: final activations that are removed to get the score Grad-CAM differentiates
SQUASHING = ("softmax", "sigmoid")


@dataclass(frozen=True)
class LayerInfo:
    """A possible target layer: its path (``outer/inner/layer`` for nested models) and output shape."""

    name: str  # the full '/'-separated path; plain layer name at the top level
    shape: tuple  # output shape without the batch axis
    kind: str = ""  # the layer's class name

    @property
    def path(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class Step:
    node: Any
    path: str
    inputs: tuple  # keys of node.input_tensors
    outputs: tuple  # keys of node.outputs

    @property
    def op(self) -> Any:
        return self.node.operation


@dataclass
class Graph:
    model: Any
    steps: list
    input_keys: list
    output_keys: list
    output_names: list  # display name of each output (dict key or producing layer's name)
    output_aliases: list  # every name an output answers to
    tensors: dict  # key -> KerasTensor (static shape and dtype)
    containers: dict  # path of an inlined model -> [(its output keys, the model), one per call]
    producer: dict  # key -> Step

    def shape(self, key: tuple) -> tuple:
        """The static shape of tensor ``key`` without the batch axis (None where not fixed)."""
        return tuple(None if d is None else int(d) for d in self.tensors[key].shape[1:])

    def ancestors(self, keys) -> set:
        """Ids of the steps needed to compute ``keys``."""
        seen: set = set()
        stack = [self.producer[k] for k in keys if k in self.producer]
        while stack:
            step = stack.pop()
            if id(step) in seen:
                continue
            seen.add(id(step))
            stack.extend(self.producer[k] for k in step.inputs if k in self.producer)
        return seen


def _graph_of(model: Any) -> Any | None:
    """The Functional that holds ``model``'s graph (itself, or a built Sequential's), else None."""
    import keras

    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def _model_call_inputs(node: Any, inner: Any) -> list:
    """The outer KerasTensors fed to the inputs of a nested model, in ``inner.inputs`` order."""
    import keras

    arguments = node.arguments
    structure = arguments.args[0] if arguments.args else arguments.kwargs.get("inputs")
    if isinstance(structure, dict) and not isinstance(inner._inputs_struct, dict):
        with contextlib.suppress(KeyError):
            return [structure[t.name] for t in inner.inputs]
    return keras.tree.flatten(structure)


def flatten(model: Any) -> Graph:
    import keras

    top = _graph_of(model)
    if top is None:
        if isinstance(model, keras.Sequential):
            raise ModelError(
                f"Sequential model '{model.name}' has no input shape yet, so it has no layer graph; "
                "build it with keras.Input(shape) as its first layer"
            )
        raise ModelError(
            f"model '{getattr(model, 'name', model)}' is not a functional or Sequential Keras model; "
            "Grad-CAM needs its layer graph (a subclassed model's call() cannot be cut)"
        )
    steps: list = []
    alias: dict = {}
    tensors: dict = {}
    containers: dict = {}

    def key(scope: tuple, tensor: Any) -> tuple:
        k = (scope, id(tensor))
        k = alias.get(k, k)
        tensors.setdefault(k, tensor)
        return k

    def walk(graph: Any, scope: tuple, prefix: str, depth: int) -> None:
        if depth > 64:
            raise ModelError(f"model '{model.name}' nests models more than 64 levels deep")
        for level in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[level]:
                op = node.operation
                if not op or node.is_input:
                    continue
                path = f"{prefix}{op.name}"
                inner = _graph_of(op) if isinstance(op, keras.Model) else None
                if inner is None:
                    step = Step(
                        node=node,
                        path=path,
                        inputs=tuple(key(scope, t) for t in node.input_tensors),
                        outputs=tuple(key(scope, t) for t in node.outputs),
                    )
                    steps.append(step)
                    continue
                # a nested model: alias its inputs to the outer tensors, inline its nodes
                sub = scope + (id(node),)
                fed = _model_call_inputs(node, inner)
                if len(fed) != len(inner.inputs):
                    raise ModelError(
                        f"nested model '{path}' is called with {len(fed)} tensors for {len(inner.inputs)} inputs; "
                        "cannot inline it"
                    )
                for t_inner, t_outer in zip(inner.inputs, fed):
                    alias[(sub, id(t_inner))] = key(scope, t_outer)
                walk(inner, sub, path + "/", depth + 1)
                inner_outputs = [key(sub, t) for t in inner.outputs]
                for t_outer, k_inner in zip(node.outputs, inner_outputs):
                    alias[(scope, id(t_outer))] = k_inner
                containers.setdefault(path, []).append((tuple(inner_outputs), op))

    input_keys = [key((), t) for t in top.inputs]
    walk(top, (), "", 0)
    output_keys = [key((), t) for t in top.outputs]

    names, aliases = [], []
    flat = keras.tree.flatten_with_path(top._outputs_struct)
    for (where, tensor) in flat:
        layer_name = tensor._keras_history.operation.name
        label = where[-1] if where and isinstance(where[-1], str) else layer_name
        names.append(label)
        aliases.append({label, layer_name})
    producer = {k: step for step in steps for k in step.outputs}
    return Graph(model, steps, input_keys, output_keys, names, aliases, tensors, containers, producer)


def _squashing_name(fn: Any) -> str | None:
    name = getattr(fn, "__name__", None) or getattr(fn, "name", None)
    if name == "log_softmax":
        return "softmax"  # log-probabilities: the logit before it is the same score
    return name if name in SQUASHING else None


def squashing_op(op: Any) -> str | None:
    """The squashing function that ``op`` applies last, if any (Dense, Activation, Softmax, keras.ops)."""
    from keras import layers

    if isinstance(op, layers.Softmax):
        return "softmax"
    if isinstance(op, (layers.Dense, layers.Activation)):
        return _squashing_name(op.activation)
    if not isinstance(op, layers.Layer):  # keras.ops.softmax / sigmoid / log_softmax on KerasTensors
        return {"Softmax": "softmax", "LogSoftmax": "softmax", "Sigmoid": "sigmoid"}.get(type(op).__name__)
    return None



def _pre_activation(node: Any, args: tuple, kwargs: dict, transposed: dict | None = None) -> tuple[Any, str | None]:
    """Call ``node``'s operation, but stop before a final softmax / sigmoid.

    Returns ``(output, removed_activation)``. Handles ``Dense(..., activation=...)``
    (weights shared, nothing mutated), stand-alone ``Activation`` / ``Softmax``
    layers and ``keras.ops.softmax`` / ``sigmoid``. Any other operation is called as it is.
    """
    from keras import layers, ops

    op = node.operation
    removed = squashing_op(op)
    if removed is None:
        return _call(op, args, kwargs, transposed), None
    if isinstance(op, layers.Dense):
        dtype = op.compute_dtype  # what Keras' own call would compute in (mixed precision included)
        if (transposed or {}).get(id(op)) is not None and len(args[0].shape) == 2:
            return dense(op, args[0], transposed[id(op)], activation=False), removed
        x = ops.cast(args[0], dtype)
        y = ops.matmul(x, ops.cast(op.kernel, dtype))
        if op.use_bias:
            y = ops.add(y, ops.cast(op.bias, dtype))
        return y, removed
    return args[0], removed


def _call(op: Any, args: tuple, kwargs: dict, transposed: dict | None = None) -> Any:
    """Call one operation in inference mode (like ``model(x, training=False)`` does)."""
    if transposed and id(op) in transposed and len(args[0].shape) == 2 and not kwargs:
        return dense(op, args[0], transposed[id(op)])
    if "training" in getattr(op, "_call_context_args", ()):
        kwargs = {**kwargs, "training": False}
    return op(*args, **kwargs)


def execute(steps: list, values: dict, last: Step | None = None, transposed: dict | None = None,
            attention: list | None = None) -> dict:
    """Run ``steps`` on ``values`` (key -> tensor), in place; ``last`` is called without its squashing.

    A step whose output is already in ``values`` (fed from outside) is not
    recomputed; one whose inputs are not all available is skipped. ``attention``: a list that
    receives the attention scores (B, heads, T, T) of every MultiHeadAttention step run, in order.
    """
    import keras

    for step in steps:
        if any(k in values for k in step.outputs):
            continue
        if any(k not in values for k in step.inputs):
            continue
        local = {id(t): values[k] for t, k in zip(step.node.input_tensors, step.inputs)}
        args, kwargs = step.node.arguments.fill_in(local)
        if step is last:
            result, _ = _pre_activation(step.node, args, kwargs, transposed)
        elif attention is not None and isinstance(step.op, keras.layers.MultiHeadAttention):
            own = bool(kwargs.get("return_attention_scores"))  # the model asks for them itself
            result = _call(step.op, args, {**kwargs, "return_attention_scores": True}, transposed)
            attention.append(result[1])
            result = result if own else result[0]
        else:
            result = _call(step.op, args, kwargs, transposed)
        for k, value in zip(step.outputs, keras.tree.flatten(result)):
            values[k] = value
    return values


def computable(steps: list, fed: set) -> set:
    """The keys computable from ``fed`` alone (no execution, nothing created)."""
    available = set(fed)
    for step in steps:
        if any(k in available for k in step.outputs):
            continue
        if all(k in available for k in step.inputs):
            available.update(step.outputs)
    return available


#: the compute precisions a graph can be run in (weights stay float32)
PRECISIONS = ("float32", "bfloat16")


@contextlib.contextmanager
def computing_in(steps: list, precision: str):
    """While tracing a function inside this block, the layers of ``steps`` compute in
    ``precision`` (Keras' ``mixed_bfloat16`` policy: float32 variables read as bfloat16, so
    the weights are not touched); their own policies come back on leaving it. A function
    traced inside keeps the precision in its graph; the model is unchanged afterwards."""
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    layers = list({id(s.op): s.op for s in steps if isinstance(s.op, keras.layers.Layer)}.values())
    saved = [layer.dtype_policy for layer in layers]
    try:
        if precision != "float32":
            for layer in layers:
                layer.dtype_policy = keras.DTypePolicy(f"mixed_{precision}")
        yield
    finally:
        for layer, policy in zip(layers, saved):
            layer.dtype_policy = policy
