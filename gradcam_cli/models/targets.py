"""Find the target layer: by name, by nested path, or ``auto``; list the candidates.

Target layers are addressed by *path*:

- ``conv5_block3_out``: a layer of the model itself (a top-level name always wins);
- ``resnet50/conv5_block3_out``: a layer inside a nested functional / Sequential
  model, '/'-separated model names, as deep as the nesting goes (the outer
  model's own name may lead: ``my_model/resnet50/conv5_block3_out``);
- ``conv5_block3_out`` when it is not top-level: the one layer of that name
  anywhere in the nesting; several -> OptionError listing their full paths;
- ``resnet50`` (a nested model): its output;
- ``auto``: the last layer, in graph order, with a 4-D output larger than 1x1
  among those the explained output depends on (:func:`auto_layer`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradcam_cli.errors import OptionError
from gradcam_cli.models.graph import Graph, LayerInfo, flatten
from gradcam_cli.models.tokens import is_transformer, pooled_token_norm, transformer_auto


def map_rank(graph: Graph) -> int:
    """The rank of a target layer's output: that of the model input, 4 for images (batch, h, w, c),
    5 for volumes (batch, h, w, d, c); any other input rank keeps 4 (and finds no target)."""
    shapes = [tuple(graph.tensors[key].shape) for key in graph.input_keys]
    return 5 if len(shapes) == 1 and len(shapes[0]) == 5 else 4


def _spatial(shape: tuple, rank: int = 4) -> bool:
    """A (batch, h, w, c) shape (``rank`` 5: (batch, h, w, d, c)) whose spatial extent is more than
    1 x 1 (unknown sizes count as more)."""
    if len(shape) != rank:
        return False
    extent = shape[1:-1]
    return any(n is None for n in extent) or int(np.prod(extent)) > 1


def _candidates(graph: Graph, within: set | None = None, tokens: bool = False) -> list:
    """(step, shape) of every step with one 4-D output of spatial extent > 1 x 1 (5-D in a volume
    model), in graph order (``tokens``: 3-D token outputs (batch, tokens, channels) too)."""
    found, rank = [], map_rank(graph)
    for step in graph.steps:
        if within is not None and id(step) not in within:
            continue
        if len(step.outputs) != 1 or type(step.op).__name__ == "InputLayer":
            continue
        shape = tuple(graph.tensors[step.outputs[0]].shape)
        if _spatial(shape, rank) or (tokens and len(shape) == 3 and (shape[1] is None or shape[1] > 1)):
            found.append((step, shape))
    return found


def select_output(graph: Graph, output: str | int | None) -> int:
    names = graph.output_names
    listing = ", ".join(f"{i}: '{n}'" for i, n in enumerate(names))
    if output is None:
        if len(names) == 1:
            return 0
        raise OptionError(
            f"model '{graph.model.name}' has {len(names)} outputs ({listing}); "
            "pass --output NAME or INDEX to choose the one to explain"
        )
    if isinstance(output, str):
        matches = [i for i, aliases in enumerate(graph.output_aliases) if output in aliases]
        if matches:
            return matches[0]
        if output.strip().lstrip("-").isdigit():
            output = int(output.strip())
    if isinstance(output, int) and not isinstance(output, bool):
        index = output + len(names) if output < 0 else output
        if 0 <= index < len(names):
            return index
    raise OptionError(
        f"model '{graph.model.name}' has no output {output!r}; its outputs are {listing}: "
        "pass --output with one of these names or indices"
    )


def auto_step(graph: Graph, output_keys: list) -> tuple:
    """(step, shape) of the automatic target: in a transformer, a normalisation of its last block
    (:func:`gradcam_cli.models.tokens.transformer_auto`); else the last 4-D layer larger than 1x1; else,
    in a token model without MultiHeadAttention, its pooled final norm
    (:func:`~gradcam_cli.models.tokens.pooled_token_norm`)."""
    block = transformer_auto(graph, output_keys)
    if block is not None:
        return block, tuple(graph.tensors[block.outputs[0]].shape)
    found = _candidates(graph, within=graph.ancestors(output_keys))
    norm = None if found else pooled_token_norm(graph, output_keys)
    if norm is not None:
        return norm, tuple(graph.tensors[norm.outputs[0]].shape)
    if not found:
        raise OptionError(
            f"model '{graph.model.name}' has no layer with a 4-D output larger than 1x1 on the way to its output; "
            "Grad-CAM needs a convolutional feature map: pass --layer with a 4-D layer"
        )
    return found[-1]


def candidate_layers(model: Any) -> list[LayerInfo]:
    """Every layer (nested models searched) whose output is 4-D with spatial extent > 1x1, in graph order;
    in a transformer (a model with MultiHeadAttention, or a pooled token norm), its 3-D token layers too."""
    graph = flatten(model)
    tokens = is_transformer(graph, graph.output_keys)
    return [
        LayerInfo(step.path, tuple(shape[1:]), type(step.op).__name__)
        for step, shape in _candidates(graph, tokens=tokens)
    ]


def auto_layer(model: Any, output: str | int | None = None) -> str:
    """The path of the last layer with a 4-D, larger-than-1x1 output on the way to the (chosen) output.

    With several outputs and ``output=None``, every output counts.
    """
    graph = flatten(model)
    keys = graph.output_keys if output is None else [graph.output_keys[select_output(graph, output)]]
    step, _ = auto_step(graph, keys)
    return step.path


#: where every layer-lookup error points for the list of layers
LAYERS_HINT = "`gradcam layers` lists them"


def _fix(hint: str | None, what: str) -> str:
    """The fix at the end of a lookup error: ``pass --layer with X``, or ``pass X`` without a hint."""
    return f"pass {hint} with {what}" if hint else f"pass {what}"


def _no_layer(graph: Graph, name: str, wanted: str, targets: dict, hint: str | None) -> OptionError:
    """The error for a name that addresses no layer, with close matches among the 4-D layers."""
    import difflib

    four_d = [
        path for path, calls in targets.items()
        if len(calls) == 1 and len(calls[0][0]) == 1 and len(graph.tensors[calls[0][0][0]].shape) == 4
    ]
    pool = list(dict.fromkeys([*four_d, *sorted({p.rsplit("/", 1)[-1] for p in four_d})]))
    close = difflib.get_close_matches(wanted, pool, n=3, cutoff=0.5)
    listing = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return OptionError(
        f"model '{graph.model.name}' has no layer '{name}'{listing}; {_fix(hint, 'one of its 4-D layers')} "
        f"({LAYERS_HINT})"
    )


def resolve_target(graph: Graph, name: str, *, hint: str | None = "--layer", tokens: bool = False
                   ) -> tuple[str, tuple, Any]:
    """``(path, key, op)`` of the layer addressed by ``name`` (see the module docstring for the rules),
    checked to have one 4-D output (``tokens``: or one 3-D token output, (batch, tokens, channels)).

    OptionError, one message per mistake: no such layer (close 4-D layers suggested), an
    ambiguous bare name, a shared layer, several outputs, an output that is not 4-D, the
    model input. Each ends in its fix, which names ``hint``, the option that takes the
    layer (``pass --layer with the full path``); ``hint=None`` for a caller without one
    (``pass the full path``).
    """
    model = graph.model
    by_path: dict[str, list] = {}
    for step in graph.steps:
        by_path.setdefault(step.path, []).append(step)
    targets: dict[str, list] = {p: [(s.outputs, s.op) for s in ss] for p, ss in by_path.items()}
    for path, calls in graph.containers.items():
        targets.setdefault(path, []).extend(calls)

    wanted = name.strip().strip("/")
    if "/" in wanted and wanted not in targets and wanted.split("/", 1)[0] == model.name:
        wanted = wanted.split("/", 1)[1]  # the model's own name as a leading component is allowed
    if wanted in targets:
        path = wanted
    elif "/" not in wanted:
        nested = sorted({p for p in targets if p.rsplit("/", 1)[-1] == wanted})
        if len(nested) > 1:
            raise OptionError(
                f"layer name '{name}' is ambiguous in model '{model.name}': it matches "
                f"{', '.join(repr(p) for p in nested)}; {_fix(hint, 'the full path')}"
            )
        path = nested[0] if nested else None
    else:
        path = None
    if path is None:
        raise _no_layer(graph, name, wanted, targets, hint)
    calls = targets[path]
    if len(calls) > 1:
        raise OptionError(
            f"layer '{path}' of model '{model.name}' is called {len(calls)} times (a shared layer or model), "
            f"so its activations are ambiguous; {_fix(hint, 'a layer that is used once')}"
        )
    keys, op = calls[0]
    if len(keys) != 1:
        raise OptionError(
            f"layer '{path}' of model '{model.name}' has {len(keys)} outputs, not one 4-D output; "
            f"{_fix(hint, 'a 4-D layer')}"
        )
    shape = tuple(graph.tensors[keys[0]].shape)
    volume = len(shape) == 5 and map_rank(graph) == 5  # a volume model's layer: (batch, h, w, d, channels)
    if tokens and len(shape) not in (3, 4) and not volume:
        raise OptionError(
            f"layer '{path}' of model '{model.name}' has output shape {shape}, not 4-D (batch, height, width, "
            f"channels) nor 3-D tokens (batch, tokens, channels); {_fix(hint, 'a 4-D or token layer')} ({LAYERS_HINT})"
        )
    if len(shape) != 4 and not tokens and not volume:
        raise OptionError(
            f"layer '{path}' of model '{model.name}' has output shape {shape}, not 4-D (batch, height, width, "
            f"channels): it has no spatial and channel axes; {_fix(hint, 'a 4-D layer')} ({LAYERS_HINT})"
        )
    if keys[0] in graph.input_keys:
        raise OptionError(
            f"layer '{path}' of model '{model.name}' is the model input; {_fix(hint, 'a convolutional layer')}"
        )
    return path, keys[0], op


def target_layer(model: Any, name: str) -> Any:
    """The layer addressed by ``name`` (a name or a nested path), checked to have a 4-D output."""
    _, _, op = resolve_target(flatten(model), name)
    return op


