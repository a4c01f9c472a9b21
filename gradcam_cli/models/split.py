"""Cut a model at its target layer into a trunk and a head, without mutating it.

``split_model`` cuts a functional or Sequential model at its target layer (also
inside nested models) into a *trunk* (input -> activations) and a *head*
(activations -> class scores before the final softmax / sigmoid): the graph is
re-threaded through the same layer objects, nested models inlined node by node.

A token layer (batch, tokens, channels) is cut as its grid (:mod:`gradcam_cli.models.tokens`):
the trunk returns the (batch, h, w, channels) grid and the *extras* the head needs beside it
(the prefix tokens, and the residual stream that bypasses the layer in a transformer block);
the head rebuilds the token tensor from the grid and runs on. Gradients taken at the grid are
the model's own: the extras are held fixed, as they do not depend on the layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gradcam_cli.errors import OptionError
from gradcam_cli.models.graph import computable, execute, flatten, squashing_op
from gradcam_cli.models.kernels import HEAVY_KERNEL, big_dense, channel_mean_kernels, transposed_kernels
from gradcam_cli.models.targets import auto_step, resolve_target, select_output
from gradcam_cli.models.tokens import (TokenLayout, attention_layout, attention_steps, carried_keys, token_layout,
                                      transformer_layer)


#: what the explained score is, per head type (for reports and JSON headers)
SCORE_DESCRIPTIONS = {
    "softmax": "class logit, before softmax",
    "multilabel": "label logit, before sigmoid (each label independent)",
    "binary": "single sigmoid unit: class 1 score = logit, class 0 score = -logit, before sigmoid",
    "linear": "model output (no final softmax or sigmoid found)",
}


@dataclass
class Split:
    """A model cut at its target layer.

    ``trunk(x) -> A``; ``head(A) -> scores`` (None when the cut is impossible);
    ``full(x) -> (A, scores)`` always works. Scores are float32 (batch, num_classes).
    ``trunk_extras(x) -> (A, extras)`` and ``head(A, extras)``: the tensors a token layer's head
    needs besides A (a tuple; empty for a 4-D layer). ``tokens``: how a token layer's tokens form
    A's grid (None for a 4-D layer).

    ``activation`` turns scores into probabilities ("softmax", "sigmoid" or
    "linear" = none); ``head_type`` says what a score is:

    - ``"softmax"``: one logit per class (softmax removed);
    - ``"multilabel"``: one logit per label (K > 1 sigmoid units removed);
    - ``"binary"``: one sigmoid unit with logit z exposed as two classes,
      scores ``[-z, z]``, so ``sigmoid(scores) == [1 - p, p]``;
    - ``"linear"``: the output units as they are (regression, or no squashing found).

    ``layer_name`` is the resolved target path (``outer/inner/layer`` inside
    nested models); ``output_name`` / ``output_index`` say which model output is explained.
    """

    model: Any
    layer_name: str
    activation: str
    trunk: Callable[[Any], Any]
    head: Callable[[Any], Any] | None
    full: Callable[[Any], Any]
    num_classes: int
    feature_shape: tuple  # (h, w, channels) of the target layer
    head_type: str = "softmax"
    output_name: str | None = None
    output_index: int = 0
    num_outputs: int = 1  # how many units the model output itself has (1 for a binary head)
    heavy_head: bool = False  # big Dense layers after the cut: one head forward + N backward is cheaper
    #: the head again, with an input gradient exact only in its per-channel sums over positions
    #: (all Grad-CAM needs) and much cheaper; None where the head has no such shortcut
    channel_head: Callable[[Any], Any] | None = None
    tokens: TokenLayout | None = None
    trunk_extras: Callable[[Any], Any] | None = None
    #: x -> the attention scores (B, heads, T, T) of every MultiHeadAttention the output depends on
    attention_scores: Callable[[Any], list] | None = None
    #: x -> (A, scores, the attention scores) from one run of the whole model
    full_attention: Callable[[Any], tuple] | None = None
    #: how many MultiHeadAttention layers the output depends on
    attention_layers: int = 0
    #: how their tokens form the image's grid; None with ``attention_problem``, the one-line reason
    attention_tokens: TokenLayout | None = None
    attention_problem: str | None = None
    #: the target layer holds a transformer's features (:func:`~gradcam_cli.models.tokens.transformer_layer`)
    transformer: bool = False

    @property
    def cut(self) -> bool:
        return self.head is not None

    def trunk_with(self, x: Any) -> tuple[Any, tuple]:
        """``(A, extras)``: the activations and what the head needs beside them."""
        if self.trunk_extras is None:
            return self.trunk(x), ()
        return self.trunk_extras(x)

    @property
    def score_description(self) -> str:
        return SCORE_DESCRIPTIONS[self.head_type]


def split_model(model: Any, layer_name: str = "auto", output: str | int | None = None,
                token_grid: tuple[int, int] | None = None, prefix_tokens: int | None = None,
                input_size: tuple[int, int] | None = None) -> Split:
    """Cut ``model`` at ``layer_name`` (see :class:`Split`). Nothing is mutated.

    ``layer_name``: a top-level layer name; a '/'-separated path through nested models, using
    their names (``mobilenetv2_1.00_224/out_relu``); a bare name found exactly once anywhere in the
    nesting (a top-level name wins); or ``"auto"`` (see :func:`auto_layer`). ``output``: which
    output of a multi-output model to explain, by its name (the dict key, or the name of the layer
    producing it) or its index; required when there are several. ``token_grid``, ``prefix_tokens``,
    ``input_size``: see :func:`gradcam_cli.models.tokens.token_layout`.
    """
    graph = flatten(model)
    if len(graph.input_keys) != 1:
        raise OptionError(
            f"model '{model.name}' has {len(graph.input_keys)} inputs; only single-input image models are supported "
            "here: pass --sidecar for non-image inputs in a file beside each image (docs/targets.md), or use "
            "gradcam_cli.cam_multi.MultiInputCAM for several image inputs"
        )
    index = select_output(graph, output)
    out_key = graph.output_keys[index]
    out_shape = _score_shape(graph, index, model)
    units = 1 if len(out_shape) == 1 else int(out_shape[-1])
    path, target = _target(graph, layer_name, out_key)
    target_tensor = graph.tensors[target]
    layout = token_layout(graph, target, path, _input_hw(graph, input_size), token_grid, prefix_tokens)

    last = graph.producer.get(out_key)
    head_type, activation = _head_type(last, units)
    num_classes = 2 if head_type == "binary" else units

    (inp,) = graph.input_keys
    trunk_steps, head_steps, full_steps = _steps(graph, target, out_key)
    scores_of = _scores(out_shape, head_type)

    def trunk(x: Any) -> Any:
        return execute(trunk_steps, {inp: x})[target]

    def full(x: Any, attention: list | None = None) -> tuple[Any, Any]:
        values = execute(full_steps, {inp: x}, last=last, attention=attention)
        return values[target], scores_of(values[out_key])

    channel_means = channel_mean_kernels(head_steps, target)
    # no transposed copy of a kernel the channel head replaces (VGG16's fc1: 400 MB); the
    # exact head keeps TensorFlow's own gradient there
    transposed = transposed_kernels(head_steps, skip=channel_means)
    with_means = {**transposed, **channel_means}

    def head(a: Any, extras: tuple = ()) -> Any:
        return scores_of(execute(head_steps, {target: a}, last=last, transposed=transposed)[out_key])

    def channel_head(a: Any, extras: tuple = ()) -> Any:
        return scores_of(execute(head_steps, {target: a}, last=last, transposed=with_means)[out_key])

    head_ok = out_key in computable(head_steps, {target})
    parts = {"trunk": trunk, "full": full, "head": head if head_ok else None,
             "channel_head": channel_head if head_ok and channel_means else None}
    feature_shape = tuple(int(d) if d is not None else None for d in target_tensor.shape[1:])
    if layout is not None:
        parts = _token_parts(layout, trunk_steps, head_steps, full_steps, inp, target, out_key, last, scores_of,
                             transposed)
        feature_shape = (*layout.grid, feature_shape[-1])

    return Split(
        model=model,
        layer_name=path,
        activation=activation,
        num_classes=num_classes,
        feature_shape=feature_shape,
        head_type=head_type,
        output_name=graph.output_names[index],
        output_index=index,
        num_outputs=units,
        heavy_head=parts["head"] is not None and any(big_dense(step.op, HEAVY_KERNEL) for step in head_steps),
        tokens=layout,
        transformer=transformer_layer(graph, target),
        **_attention(graph, out_key, full_steps, inp, _input_hw(graph, input_size), token_grid, prefix_tokens,
                     parts["full"]),
        **parts,
    )


def _input_hw(graph: Any, asked: tuple | None) -> tuple:
    """The model input's (height, width): its own where fixed, else ``asked`` (None, None where neither)."""
    shape = tuple(graph.tensors[graph.input_keys[0]].shape)
    if len(shape) == 4 and shape[1] is not None and shape[2] is not None:
        return int(shape[1]), int(shape[2])
    return tuple(asked) if asked else (None, None)


def _token_parts(layout: TokenLayout, trunk_steps: list, head_steps: list, full_steps: list, inp: Any, target: Any,
                 out_key: Any, last: Any, scores_of: Callable, transposed: dict) -> dict:
    """A token layer's trunk (the grid; with the extras), head (grid, extras) and full model (its A is
    the grid, on the path to the scores, so a tape on it differentiates the model)."""
    carried = carried_keys(head_steps, target)

    def trunk_extras(x: Any) -> tuple[Any, tuple]:
        values = execute(trunk_steps, {inp: x})
        tokens = values[target]
        return layout.to_grid(tokens), (tokens[:, :layout.prefix], *(values[k] for k in carried))

    def head(a: Any, extras: tuple = ()) -> Any:
        fed = {target: layout.from_grid(a, extras[0]), **dict(zip(carried, extras[1:]))}
        return scores_of(execute(head_steps, fed, last=last, transposed=transposed)[out_key])

    def full(x: Any, attention: list | None = None) -> tuple[Any, Any]:
        values = execute(trunk_steps, {inp: x}, attention=attention)
        tokens = values[target]
        grid = layout.to_grid(tokens)
        values[target] = layout.from_grid(grid, tokens[:, :layout.prefix])
        return grid, scores_of(execute(full_steps, values, last=last, attention=attention)[out_key])

    return {"trunk": lambda x: trunk_extras(x)[0], "trunk_extras": trunk_extras, "full": full, "head": head,
            "channel_head": None}


def _attention(graph: Any, out_key: Any, full_steps: list, inp: Any, input_hw: tuple, grid: Any, prefix: Any,
               full_values: Callable) -> dict:
    """The Split's attention fields (see :class:`Split`); ``full_values(x, attention)``: the target's
    value (the grid for a token layer) and the scores, from one run of the whole model."""
    mha = attention_steps(graph, [out_key])
    layout, problem = attention_layout(graph, mha, input_hw, grid, prefix)
    steps = full_steps[: full_steps.index(mha[-1]) + 1] if mha else []

    def scores(x: Any) -> list:
        found: list = []
        execute(steps, {inp: x}, attention=found)
        return found

    def full_attention(x: Any) -> tuple[Any, Any, list]:
        found: list = []
        a, logits = full_values(x, found)
        return a, logits, found

    return {"attention_scores": scores if mha else None, "full_attention": full_attention if mha else None,
            "attention_layers": len(mha), "attention_tokens": layout, "attention_problem": problem}


def _score_shape(graph: Any, index: int, model: Any) -> tuple:
    """The shape of output ``index``: (batch,) or (batch, classes); OptionError for any other."""
    out_shape = tuple(graph.tensors[graph.output_keys[index]].shape)
    if len(out_shape) not in (1, 2) or (len(out_shape) == 2 and out_shape[-1] is None):
        raise OptionError(
            f"output '{graph.output_names[index]}' of model '{model.name}' has shape {out_shape}; Grad-CAM needs "
            "one score per class, (batch, classes): pick another output with --output"
        )
    return out_shape


def _target(graph: Any, layer_name: str, out_key: Any) -> tuple[str, Any]:
    """The target layer's resolved path and the key of its output tensor (``"auto"``: the auto layer)."""
    if layer_name == "auto" and not any(s.path == "auto" for s in graph.steps):
        step, _ = auto_step(graph, [out_key])
        return step.path, step.outputs[0]
    path, target, _ = resolve_target(graph, layer_name, tokens=True)
    return path, target


def _head_type(last: Any, units: int) -> tuple[str, str]:
    """(head_type, activation) from the squashing op that produces the output (see :class:`Split`)."""
    removed = squashing_op(last.op) if last is not None else None
    if removed == "softmax":
        return "softmax", "softmax"
    if removed == "sigmoid":
        return ("binary" if units == 1 else "multilabel"), "sigmoid"
    return "linear", "linear"


def _steps(graph: Any, target: Any, out_key: Any) -> tuple[list, list, list]:
    """The steps of the trunk (input -> target), of the head (target -> output) and of both, in graph order."""
    order = {id(s): i for i, s in enumerate(graph.steps)}
    trunk_ids = graph.ancestors([target])
    out_ids = graph.ancestors([out_key])
    trunk_steps = [s for s in graph.steps if id(s) in trunk_ids]
    head_steps = [s for s in graph.steps if id(s) in out_ids and id(s) not in trunk_ids]
    full_steps = sorted([s for s in graph.steps if id(s) in trunk_ids | out_ids], key=lambda s: order[id(s)])
    return trunk_steps, head_steps, full_steps


def _scores(out_shape: tuple, head_type: str) -> Callable[[Any], Any]:
    """The model output -> float32 scores (batch, num_classes): a (batch,) output gets its class axis,
    a binary head's logit z becomes ``[-z, z]``."""
    from keras import ops

    def scores_of(z: Any) -> Any:
        z = ops.cast(z, "float32")
        if len(out_shape) == 1:
            z = ops.expand_dims(z, -1)
        if head_type == "binary":
            z = ops.concatenate([-z, z], axis=-1)
        return z

    return scores_of
