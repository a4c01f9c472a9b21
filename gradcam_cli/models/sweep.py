"""The layers of a layer sweep (``gradcam evaluate --layers sweep``): the last K block outputs.

A block output is a *cut* of the graph: a 4-D layer, larger than 1 x 1, through which every
path from the model input to the explained output passes, so its activations alone carry all
the later layers need (in a residual network each block's output after its addition, in a
plain CNN each layer). A block's pointwise tail (normalisation, activation) is folded into it:
``conv5_block2_add`` is followed by its ReLU ``conv5_block2_out``, ``Conv_1`` by ``Conv_1_bn``
and ``out_relu``; the tail's end stands for the block. Consecutive cuts named as one block
(keras.applications' ``block_16_expand_relu``, ``block_16_depthwise_relu``, ``block_16_project_BN``:
the name up to ``block<N>`` alike) are one block too, ending at the last. The sweep ends at the
automatic layer (:func:`gradcam_cli.models.targets.auto_step`).
"""

from __future__ import annotations

import re
from typing import Any

from gradcam_cli.errors import OptionError
from gradcam_cli.models.graph import Graph, flatten
from gradcam_cli.models.targets import _candidates, auto_step, resolve_target, select_output
from gradcam_cli.models.tokens import block_normalisations, token_layout

#: how many block outputs ``--layers sweep`` takes without a count
DEFAULT_SWEEP = 4

#: layers that transform each position on its own, keeping the shape: the tail of a block
POINTWISE = frozenset({
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "BatchNormalization", "LayerNormalization",
    "GroupNormalization", "UnitNormalization", "Dropout", "SpatialDropout2D", "GaussianNoise", "Rescaling",
    "Identity",
})


def _is_cut(graph: Graph, step: Any, output_keys: list) -> bool:
    """Every path from the model's inputs to ``output_keys`` goes through ``step``: with ``step``
    removed, the outputs cannot be reached from the inputs."""
    reached = set(graph.input_keys)
    for other in graph.steps:  # graph order is topological
        if other is not step and any(k in reached for k in other.inputs):
            reached.update(other.outputs)
    return not any(k in reached for k in output_keys)


def _pointwise_after(step: Any, before: Any) -> bool:
    """``step`` is a pointwise layer applied to ``before``'s output alone."""
    return type(step.op).__name__ in POINTWISE and tuple(step.inputs) == tuple(before.outputs)


def block_outputs(graph: Graph, output_keys: list) -> list:
    """Every block output (see the module docstring) on the way to ``output_keys``, in graph order,
    ending at the automatic layer. In a transformer (a MultiHeadAttention on the way): the
    normalisations the automatic layer is chosen from (:func:`~gradcam_cli.models.tokens.block_normalisations`:
    the last block's first and second, the final one), in graph order."""
    norms = block_normalisations(graph, output_keys)
    if norms:
        order = {id(step): i for i, step in enumerate(graph.steps)}
        return sorted({id(step): step for step in norms.values()}.values(), key=lambda step: order[id(step)])
    last, _ = auto_step(graph, output_keys)
    cuts = [step for step, _ in _candidates(graph, within=graph.ancestors(output_keys))
            if step is last or _is_cut(graph, step, output_keys)]
    if last not in cuts:  # a token model whose attention is not a MultiHeadAttention (keras-hub's Swin)
        raise OptionError(f"--layers sweep finds a CNN's block outputs or a MultiHeadAttention transformer's last "
                          f"norms; model '{graph.model.name}' has neither on the way to its automatic layer "
                          f"'{last.path}': name the layers, --layers A,B,C (`gradcam layers` lists them)")
    cuts = cuts[: cuts.index(last) + 1]
    return [a for a, b in zip(cuts, cuts[1:]) if not _pointwise_after(b, a) and not _same_block(a, b)] + [last]


#: a block's name prefix in keras.applications: ``conv5_block3_``, ``block_16_``, ``block7a_``, ``block4_``
_BLOCK = re.compile(r"^(.*?block_?\d+[a-z]?)_")


def _same_block(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are named as layers of one block (the same ``...block<N>`` prefix)."""
    found = [_BLOCK.match(step.path.rsplit("/", 1)[-1]) for step in (a, b)]
    return all(found) and found[0].group(1) == found[1].group(1)


def sweep_layers(model: Any, count: int = DEFAULT_SWEEP, output: str | int | None = None) -> list[str]:
    """The paths of the last ``count`` block outputs on the way to the (chosen) output, in graph
    order, ending at the automatic layer (fewer when the model has fewer)."""
    if count < 1:
        raise OptionError(f"a layer sweep needs at least one layer, got {count}; pass --layers sweep:K with K >= 1")
    graph = flatten(model)
    keys = graph.output_keys if output is None else [graph.output_keys[select_output(graph, output)]]
    return [step.path for step in block_outputs(graph, keys)][-count:]


def parse_layers(value: str) -> tuple[str, ...] | int:
    """``--layers``: ``sweep`` (-> the default count), ``sweep:K`` (-> K) or ``A,B,C`` (-> the names).
    ValueError with the fix otherwise."""
    text = value.strip()
    if text == "sweep" or text.startswith("sweep:"):
        count = text.partition(":")[2] or str(DEFAULT_SWEEP)
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--layers sweep:K takes a count K >= 1, got {value!r}; e.g. --layers sweep:4")
        return int(count)
    names = tuple(v.strip() for v in text.split(","))
    if not all(names):
        raise ValueError(f"--layers takes 'sweep', 'sweep:K' or comma-separated layer names, got {value!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"--layers names a layer twice in {value!r}; give each layer once")
    return names


def resolve_layers(model: Any, asked: tuple[str, ...] | int, output: str | int | None = None,
                   tokens: tuple = (None, None), input_size: tuple | None = None) -> list[str]:
    """The swept layers' paths: ``asked`` an int -> :func:`sweep_layers` with that count; names ->
    each resolved and checked to be one 4-D or token output whose tokens form a grid (``tokens``: the
    (grid, prefix) of flags or a profile; ``input_size``: the model input's where it is not fixed), so a
    bad name is refused before the run starts (OptionError, one line, naming ``--layers``)."""
    from gradcam_cli.models.split import _input_hw

    if isinstance(asked, int):
        return sweep_layers(model, asked, output)
    graph = flatten(model)
    resolved = [resolve_target(graph, name, hint="--layers", tokens=True) for name in asked]
    paths = [path for path, _, _ in resolved]
    if len(set(paths)) != len(paths):
        raise OptionError(f"--layers names the same layer twice ({', '.join(asked)}); give each layer once")
    for path, key, _ in resolved:
        token_layout(graph, key, path, _input_hw(graph, input_size), *tokens, hint="--layers")
    return paths
