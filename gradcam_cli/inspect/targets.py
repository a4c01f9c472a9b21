"""Find layers in a model's graph and run the part of the graph that computes them.

The one place in ``inspect/`` that reaches into the graph internals of
:mod:`gradcam_cli.models.graph` (see :func:`_graph`): a model is flattened into
steps in topological order, nested models inlined, each step with a
'/'-separated ``path`` (``outer/inner/layer``) as ``gradcam layers`` shows it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from gradcam_cli.errors import ModelError, OptionError

#: the layer types whose outputs the book shows as activations ("the first 8 conv/pool layers")
CONV_POOL = (
    "Conv2D",
    "DepthwiseConv2D",
    "SeparableConv2D",
    "Conv2DTranspose",
    "MaxPooling2D",
    "AveragePooling2D",
)
_LIST_HINT = "`gradcam layers` lists them"


def _graph() -> tuple[Callable, Callable, Callable]:
    """``(flatten, resolve_target, execute)`` from the module that owns Keras graph surgery."""
    from gradcam_cli.models.graph import execute as _execute, flatten as _flatten
    from gradcam_cli.models.targets import resolve_target as _resolve_target

    return _flatten, _resolve_target, _execute


@dataclass(frozen=True)
class Target:
    """A located layer: its path, its tensor key in the graph, output shape without batch, class name."""

    path: str
    key: tuple
    shape: tuple
    kind: str


def flatten(model: Any) -> Any:
    """The model's flattened graph (ModelError for a subclassed or unbuilt model)."""
    return _graph()[0](model)


def _shape(graph: Any, key: tuple) -> tuple:
    return tuple(None if d is None else int(d) for d in graph.tensors[key].shape[1:])


def _is_conv_pool(op: Any) -> bool:
    import keras

    kinds = tuple(getattr(keras.layers, name) for name in CONV_POOL)
    return isinstance(op, kinds)


def conv_pool_layers(graph: Any) -> list[Target]:
    """Every conv / pooling layer with one 4-D output, in graph order (nested models included)."""
    found = []
    for step in graph.steps:
        if len(step.outputs) == 1 and _is_conv_pool(step.op):
            shape = _shape(graph, step.outputs[0])
            if len(shape) == 3:
                found.append(Target(step.path, step.outputs[0], shape, type(step.op).__name__))
    return found


def _four_d_paths(graph: Any) -> list[str]:
    return [s.path for s in graph.steps if len(s.outputs) == 1 and len(_shape(graph, s.outputs[0])) == 3]


def _known(graph: Any) -> dict[str, list[tuple]]:
    """path -> the output shapes of its calls (single-output steps and inlined nested models)."""
    known: dict[str, list[tuple]] = {}
    for step in graph.steps:
        if len(step.outputs) == 1:
            known.setdefault(step.path, []).append(_shape(graph, step.outputs[0]))
    for path, calls in graph.containers.items():
        for keys, _ in calls:
            if len(keys) == 1:
                known.setdefault(path, []).append(_shape(graph, keys[0]))
    return known


def _miss(graph: Any, name: str) -> OptionError | None:
    """Our own error for an unknown layer or a layer without spatial and channel axes, else None."""
    model = graph.model.name
    wanted = name.strip().strip("/")
    if wanted.startswith(model + "/"):
        wanted = wanted[len(model) + 1 :]
    known = _known(graph)
    matches = [p for p in known if p == wanted or ("/" not in wanted and p.rsplit("/", 1)[-1] == wanted)]
    if not matches:
        four_d = _four_d_paths(graph)
        pool = list(dict.fromkeys([*four_d, *(p.rsplit("/", 1)[-1] for p in four_d)]))
        close = difflib.get_close_matches(wanted, pool, n=4, cutoff=0.5)
        some = close or four_d[:4]
        listing = f" (did you mean {', '.join(repr(c) for c in some)}?)" if close else (
            f" (its 4-D layers start {', '.join(repr(c) for c in some)})" if some else ""
        )
        return OptionError(
            f"model '{model}' has no layer '{name}'{listing}; pass a layer name or path with a 4-D output: "
            f"{_LIST_HINT}"
        )
    shapes = [s for p in matches for s in known[p]]
    if shapes and all(len(s) != 3 for s in shapes):
        return OptionError(
            f"layer '{matches[0]}' of model '{model}' has output shape (batch, {', '.join(map(str, shapes[0]))}), "
            "without spatial and channel axes; expected a 4-D (batch, height, width, channels) layer: "
            f"pass a convolutional or pooling layer ({_LIST_HINT})"
        )
    return None


def locate(graph: Any, name: str) -> Target:
    """The layer addressed by ``name`` (a name, a nested path ``inner/layer``), checked 4-D.

    OptionError: unknown layer (close candidates listed), a layer without spatial and
    channel axes, an ambiguous bare name, a shared layer, the model input.
    """
    _, resolve, _ = _graph()
    try:
        path, key, op = resolve(graph, name)
    except OptionError as exc:
        raise (_miss(graph, name) or exc) from None
    return Target(path, key, _shape(graph, key), type(op).__name__)


def single_input(graph: Any) -> tuple:
    """The key of the model's one input (ModelError for several inputs)."""
    if len(graph.input_keys) != 1:
        raise ModelError(
            f"model '{graph.model.name}' has {len(graph.input_keys)} inputs; only single-input image models "
            "are supported"
        )
    return graph.input_keys[0]


def input_shape(graph: Any) -> tuple:
    """The model input's shape without the batch axis (None where not fixed)."""
    return _shape(graph, single_input(graph))


def output_target(graph: Any) -> Target:
    """The model's one output (units before a final softmax / sigmoid: see :func:`runner`)."""
    if len(graph.output_keys) != 1:
        raise OptionError(
            f"model '{graph.model.name}' has {len(graph.output_keys)} outputs; unit mode needs a single-output model"
        )
    key = graph.output_keys[0]
    step = graph.producer.get(key)
    return Target(step.path if step else graph.model.name, key, _shape(graph, key), type(step.op).__name__)


def computing_in(graph: Any, keys: list, precision: str) -> Any:
    """A context in which functions traced compute the steps ``keys`` need in ``precision``
    (``float32`` or ``bfloat16``; see :func:`gradcam_cli.models.graph.computing_in`)."""
    from gradcam_cli.models.graph import computing_in as _computing_in

    needed = graph.ancestors(keys)
    return _computing_in([s for s in graph.steps if id(s) in needed], precision)


def runner(graph: Any, keys: list, *, logits: bool = False) -> Callable[[Any], list]:
    """``f(x) -> [float32 tensor per key]``: runs only the steps those keys need, in inference mode.

    ``logits``: the step producing the model output is called without its final
    softmax / sigmoid (for unit mode). Traceable inside ``tf.function``.
    """
    import tensorflow as tf

    _, _, execute = _graph()
    inp = single_input(graph)
    needed = graph.ancestors(keys)
    steps = [s for s in graph.steps if id(s) in needed]
    last = graph.producer.get(graph.output_keys[0]) if logits else None

    def run(x: Any) -> list:
        values = execute(steps, {inp: x}, last=last)
        return [tf.cast(values[k], tf.float32) for k in keys]

    return run
