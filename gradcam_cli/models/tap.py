"""Tap a model at one target layer per image input and at the tensor a target reads.

:func:`tap_model` serves the targets beyond a classifier's class score
(:mod:`gradcam_cli.targets`) and models with several inputs: the tensor read is a model
output (``--output``; a final softmax / sigmoid removed, so a segmenter's class logits) or,
for embeddings, any layer (``--embedding``; by default the features entering a classifier's
last Dense: the pooled features, so any backbone works). Each image input (a 4-D input) gets
its own target layer: ``auto`` takes the last 4-D layer, larger than 1 x 1, that depends on
that input alone. The graph is re-threaded through the same layer objects: nothing is mutated.

Running it: :meth:`Tap.before` computes every value that does not depend on the target
layers (the trunks, skip connections); :meth:`Tap.after` recomputes the rest from given
activations, so a tape watching them differentiates only the part after the cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from gradcam_cli.errors import OptionError
from gradcam_cli.models.graph import Graph, execute, flatten, squashing_op
from gradcam_cli.models.targets import _spatial, resolve_target, select_output


@dataclass
class Tap:
    model: Any
    graph: Graph
    image_inputs: list  # indices (in model.inputs) of the 4-D inputs, one map each
    layer_names: list  # resolved target layer path per image input
    layer_keys: list
    feature_shapes: list  # (h, w, channels) per target layer
    out_key: Any
    out_name: str  # the output or layer the target reads
    out_shape: tuple  # its shape without the batch axis
    last: Any = None  # the step whose final squashing is removed (None: the tensor as it is)
    removed: str | None = None  # "softmax", "sigmoid" or None
    before_steps: list = field(default_factory=list)
    after_steps: list = field(default_factory=list)

    def before(self, inputs: Sequence[Any]) -> dict:
        """Every value the target layers' activations and the rest need, computed from ``inputs``
        (one tensor per model input, in ``model.inputs`` order)."""
        return execute(self.before_steps, dict(zip(self.graph.input_keys, inputs)))

    def after(self, values: dict, acts: Sequence[Any]) -> Any:
        """The tapped tensor from ``acts`` (one per target layer) and the other ``values``."""
        fed = {**values, **dict(zip(self.layer_keys, acts))}
        if self.out_key in fed:
            return fed[self.out_key]
        return execute(self.after_steps, fed, last=self.last)[self.out_key]


def _sources(graph: Graph) -> dict:
    """key -> the input keys it depends on."""
    found = {k: {k} for k in graph.input_keys}
    for step in graph.steps:
        deps = set().union(*(found.get(k, set()) for k in step.inputs)) if step.inputs else set()
        for k in step.outputs:
            found[k] = deps
    return found


def _layer_key(graph: Graph, name: str) -> tuple[str, Any]:
    """(path, key) of any layer (any rank) named ``name``: a path or a bare name found once."""
    steps = [s for s in graph.steps if len(s.outputs) == 1 and s.path.strip("/") == name.strip("/")]
    if not steps:
        steps = [s for s in graph.steps if len(s.outputs) == 1 and s.path.rsplit("/", 1)[-1] == name]
    if len(steps) != 1:
        import difflib

        close = difflib.get_close_matches(name, [s.path for s in graph.steps], n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        why = "no output or layer" if not steps else f"{len(steps)} layers named"
        raise OptionError(f"model '{graph.model.name}' has {why} '{name}'{hint}; pass --embedding with one of its "
                          f"output names ({', '.join(graph.output_names)}) or a layer path (`gradcam layers` lists "
                          "the 4-D ones)")
    return steps[0].path, steps[0].outputs[0]


def _pooled(graph: Graph, index: int) -> tuple[str, Any]:
    """The default embedding: the input of the Dense layer producing output ``index`` (through a
    Dropout before it), else the output itself."""
    from keras import layers

    key = graph.output_keys[index]
    step = graph.producer.get(key)
    if step is not None and isinstance(step.op, layers.Dense) and len(step.inputs) == 1:
        key = step.inputs[0]
        before = graph.producer.get(key)
        if before is not None and isinstance(before.op, layers.Dropout):
            key = before.inputs[0]
        return graph.producer[key].path if key in graph.producer else "input", key
    return graph.output_names[index], key


def _auto_layers(graph: Graph, image_inputs: list, out_key: Any, sources: dict) -> list:
    """Per image input, the last 4-D step (> 1 x 1) on the way to ``out_key`` fed by that input alone;
    the step producing ``out_key`` (and the one before its squashing) excluded."""
    within = graph.ancestors([out_key])
    excluded = set()
    last = graph.producer.get(out_key)
    if last is not None:
        excluded.add(id(last))
        if squashing_op(last.op) and last.inputs and last.inputs[0] in graph.producer:
            excluded.add(id(graph.producer[last.inputs[0]]))
    chosen = []
    for i in image_inputs:
        source = graph.input_keys[i]
        found = [s for s in graph.steps if id(s) in within and id(s) not in excluded and len(s.outputs) == 1
                 and type(s.op).__name__ != "InputLayer" and _spatial(tuple(graph.tensors[s.outputs[0]].shape))
                 and sources.get(s.outputs[0]) == {source}]
        if not found:
            raise OptionError(f"input {i} of model '{graph.model.name}' reaches the explained tensor through no 4-D "
                              "layer larger than 1x1 of its own; pass --layer with one 4-D layer per image input")
        chosen.append((found[-1].path, found[-1].outputs[0]))
    return chosen


def tap_model(model: Any, layers: Sequence[str] | str | None = "auto", output: str | int | None = None,
              embedding: str | None = None, strip: bool = True) -> Tap:
    """Tap ``model`` (see the module docstring). ``layers``: one per image input, or ``auto``;
    ``output``: which model output (required with several); ``embedding``: read this output or
    layer instead, ``"auto"`` for the default pooled features; ``strip``: remove the output's
    final softmax / sigmoid (the logits)."""
    graph = flatten(model)
    sources = _sources(graph)
    image_inputs = [i for i, k in enumerate(graph.input_keys) if len(graph.tensors[k].shape) == 4]
    if not image_inputs:
        raise OptionError(f"model '{model.name}' has no image input (batch, height, width, channels)")
    last = None
    if embedding is None:
        index = select_output(graph, output)
        out_key, out_name = graph.output_keys[index], graph.output_names[index]
        last = graph.producer.get(out_key) if strip else None
    elif embedding == "auto":
        out_name, out_key = _pooled(graph, select_output(graph, output))
    else:
        aliases = [i for i, a in enumerate(graph.output_aliases) if embedding in a]
        if aliases:
            out_key, out_name = graph.output_keys[aliases[0]], graph.output_names[aliases[0]]
        else:
            out_name, out_key = _layer_key(graph, embedding)
    names = [layers] if isinstance(layers, str) or layers is None else list(layers)
    if names in (["auto"], [None]):
        chosen = _auto_layers(graph, image_inputs, out_key, sources)
    else:
        if len(names) != len(image_inputs):
            raise OptionError(f"model '{model.name}' has {len(image_inputs)} image inputs, but {len(names)} target "
                              "layers were given; pass one --layer per image input, or auto")
        chosen = [resolve_target(graph, n)[:2] for n in names]
    keys = [k for _, k in chosen]
    removed = squashing_op(last.op) if last is not None else None
    return Tap(model, graph, image_inputs, [p for p, _ in chosen], keys,
               [graph.shape(k) for k in keys], out_key, out_name, graph.shape(out_key),
               last if removed else None, removed, *_cut(graph, keys, out_key))


def _cut(graph: Graph, keys: list, *out_keys: Any) -> tuple[list, list]:
    """(steps before the cut, steps after it) on the way to ``out_keys``: those after depend on a
    target layer's output (``keys``)."""
    needed = graph.ancestors([*out_keys, *keys])
    reached = set(keys)
    before, after = [], []
    for step in graph.steps:
        if id(step) not in needed:
            continue
        if any(k in reached for k in step.inputs):
            reached.update(step.outputs)
            after.append(step)
        else:
            before.append(step)
    return before, after
