"""Probe a flattened graph (:mod:`gradcam_cli.models.graph`): find layers and run the part of
the graph that computes them, for ``gradcam activations`` and ``gradcam filters``.

Layers are addressed by '/'-separated paths (``outer/inner/layer``) as ``gradcam layers``
shows them; the lookup and its errors are :func:`gradcam_cli.models.targets.resolve_target`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gradcam_cli.errors import ModelError, OptionError
from gradcam_cli.models.graph import Graph, computing_in as _computing_in, execute
from gradcam_cli.models.targets import resolve_target

#: the layer types whose outputs the book shows as activations ("the first 8 conv/pool layers")
CONV_POOL = (
    "Conv2D",
    "DepthwiseConv2D",
    "SeparableConv2D",
    "Conv2DTranspose",
    "MaxPooling2D",
    "AveragePooling2D",
)


@dataclass(frozen=True)
class Target:
    """A located layer: its path, its tensor key in the graph, output shape without batch, class name."""

    path: str
    key: tuple
    shape: tuple
    kind: str


def _is_conv_pool(op: Any) -> bool:
    import keras

    kinds = tuple(getattr(keras.layers, name) for name in CONV_POOL)
    return isinstance(op, kinds)


def conv_pool_layers(graph: Graph) -> list[Target]:
    """Every conv / pooling layer with one 4-D output, in graph order (nested models included)."""
    found = []
    for step in graph.steps:
        if len(step.outputs) == 1 and _is_conv_pool(step.op):
            shape = graph.shape(step.outputs[0])
            if len(shape) == 3:
                found.append(Target(step.path, step.outputs[0], shape, type(step.op).__name__))
    return found


def locate(graph: Graph, name: str) -> Target:
    """The layer addressed by ``name`` (a name, a nested path ``inner/layer``), checked 4-D.

    OptionError as :func:`~gradcam_cli.models.targets.resolve_target` words it, its fixes
    saying what to pass without naming a command-line option.
    """
    path, key, op = resolve_target(graph, name, hint=None)
    return Target(path, key, graph.shape(key), type(op).__name__)


def single_input(graph: Graph) -> tuple:
    """The key of the model's one input (ModelError for several inputs)."""
    if len(graph.input_keys) != 1:
        raise ModelError(
            f"model '{graph.model.name}' has {len(graph.input_keys)} inputs; only single-input image models "
            "are supported"
        )
    return graph.input_keys[0]


def input_shape(graph: Graph) -> tuple:
    """The model input's shape without the batch axis (None where not fixed)."""
    return graph.shape(single_input(graph))


def output_target(graph: Graph) -> Target:
    """The model's one output (units before a final softmax / sigmoid: see :func:`runner`)."""
    if len(graph.output_keys) != 1:
        raise OptionError(
            f"model '{graph.model.name}' has {len(graph.output_keys)} outputs; unit mode needs a single-output model"
        )
    key = graph.output_keys[0]
    step = graph.producer.get(key)
    return Target(step.path if step else graph.model.name, key, graph.shape(key), type(step.op).__name__)


def _steps_for(graph: Graph, keys: list) -> list:
    """The steps needed to compute ``keys``, in graph order."""
    needed = graph.ancestors(keys)
    return [s for s in graph.steps if id(s) in needed]


def computing_in(graph: Graph, keys: list, precision: str) -> Any:
    """A context in which functions traced compute the steps ``keys`` need in ``precision``
    (``float32`` or ``bfloat16``; see :func:`gradcam_cli.models.graph.computing_in`)."""
    return _computing_in(_steps_for(graph, keys), precision)


def runner(graph: Graph, keys: list, *, logits: bool = False) -> Callable[[Any], list]:
    """``f(x) -> [float32 tensor per key]``: runs only the steps those keys need, in inference mode.

    ``logits``: the step producing the model output is called without its final
    softmax / sigmoid (for unit mode). Traceable inside ``tf.function``.
    """
    import tensorflow as tf

    inp = single_input(graph)
    steps = _steps_for(graph, keys)
    last = graph.producer.get(graph.output_keys[0]) if logits else None

    def run(x: Any) -> list:
        values = execute(steps, {inp: x}, last=last)
        return [tf.cast(values[k], tf.float32) for k in keys]

    return run
