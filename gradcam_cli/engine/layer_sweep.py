"""Maps at several target layers from one compiled pass (``gradcam evaluate --layers``).

The model runs once per batch: up to the earliest swept layer outside the tape (as the
explainer's trunk), the rest under a GradientTape that records every later layer's output; one
backward pass from the explained scores gives their gradient at every swept layer (the
gradients of the later layers are on the way to the earlier ones: nothing is recomputed). When
some swept layer does not lie after the earliest one (parallel branches), the whole model runs
under the tape.
Each method that needs only (activations, gradients) of its layer (kinds ``weights`` and
``spatial``: Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, EigenCAM) is applied per
layer in the same compiled call. Score-CAM, guided Grad-CAM and aug-smooth are not fused
(:data:`FUSED_KINDS`): ``evaluate`` runs them with one explainer per layer.

Contract: input float32 (B, H, W, C) already preprocessed; out: scores (B, C) before the
head's activation, the explained class (B,) (top-1, or ``classes[0]`` as ``explain`` does
with given classes), and per layer the maps (B, M, h, w) in [0, 1] for the M fused methods.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gradcam_cli.engine.combine import apply_method, normalise_maps
from gradcam_cli.engine.explainer import squash
from gradcam_cli.errors import OptionError
from gradcam_cli.methods import Method, get_method
from gradcam_cli.models.graph import execute, flatten
from gradcam_cli.models.tokens import token_layout, transformer_layer
from gradcam_cli.models.split import _head_type, _input_hw, _score_shape, _scores
from gradcam_cli.models.targets import resolve_target, select_output
from gradcam_cli.settings import MethodOptions

#: method kinds a layer sweep derives from one pass: they read their layer's activations and gradients only
FUSED_KINDS = ("weights", "spatial")


def fusable(method: str | Method, options: MethodOptions | None = None) -> bool:
    """``method`` is computed by :class:`SweepExplainer` (else: one explainer per layer)."""
    m = method if isinstance(method, Method) else get_method(method)
    return m.kind in FUSED_KINDS and not (options and options.aug_smooth)


class SweepExplainer:
    """Every fused method's maps at every layer of ``layers`` (paths, as ``--layer`` takes them),
    one compiled forward and backward pass per batch (see the module docstring)."""

    def __init__(self, model: Any, layers: Sequence[str], methods: Sequence[str], *, output: str | int | None = None,
                 classes: Sequence[int] | None = None, options: MethodOptions | None = None,
                 tokens: tuple = (None, None), input_size: tuple | None = None):
        import tensorflow as tf

        graph = flatten(model)
        index = select_output(graph, output)
        self.out_key = graph.output_keys[index]
        out_shape = _score_shape(graph, index, model)
        self.last = graph.producer.get(self.out_key)
        units = 1 if len(out_shape) == 1 else int(out_shape[-1])
        head_type, self.activation = _head_type(self.last, units)
        self._scores_of = _scores(out_shape, head_type)
        resolved = [resolve_target(graph, name, hint="--layers", tokens=True) for name in layers]
        self.layers, self.keys = [path for path, _, _ in resolved], [key for _, key, _ in resolved]
        #: per layer: how a token layer's tokens form its grid (None for a 4-D layer); ``tokens``: the
        #: (grid, prefix) given by flags or a profile, as :func:`gradcam_cli.models.split.split_model` takes them
        self.layouts = [token_layout(graph, k, path, _input_hw(graph, input_size), *tokens, hint="--layers")
                        for path, k in zip(self.layers, self.keys)]
        wanted = graph.ancestors([self.out_key])
        self.steps = [s for s in graph.steps if id(s) in wanted]
        # the part before the earliest layer runs outside the tape, as the explainer's trunk does, when
        # every other layer lies after it (its descendants): the tape then holds only what the gradients need
        order = {k: i for i, s in enumerate(self.steps) for k in s.outputs}
        off = [name for name, k in zip(self.layers, self.keys) if k not in order]
        if off:
            raise OptionError(f"layer {', '.join(repr(n) for n in off)} of model '{model.name}' does not lead to the "
                              f"explained output '{graph.output_names[index]}'; pass --layers with layers on its way")
        first = min(self.keys, key=lambda k: order.get(k, -1))
        after = all(id(graph.producer[first]) in graph.ancestors([k]) for k in self.keys)
        before = graph.ancestors([first]) if first in graph.producer and after else set()
        self.trunk = [s for s in self.steps if id(s) in before]
        self.first = first if self.trunk else None
        (self.inp,) = graph.input_keys
        self.options = options or MethodOptions()
        #: per swept layer: its maps centred (``MethodOptions.centre_activations``)
        self.centred = [self.options.centred(transformer_layer(graph, k)) for k in self.keys]
        self.methods = tuple(get_method(m) for m in methods)
        unfused = [m.name for m in self.methods if not fusable(m, self.options)]
        if unfused:
            raise ValueError(f"methods {', '.join(unfused)} are not computed by a layer sweep's single pass")
        self.fixed = None if not classes else int(classes[0])
        self._gradients = any(m.needs_gradients for m in self.methods)
        spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
        self._compiled = tf.function(self._explain, input_signature=[spec])

    def _explain(self, x):
        import tensorflow as tf

        values = execute(self.trunk, {self.inp: x}) if self.first is not None else {self.inp: x}
        with tf.GradientTape() as tape:
            tape.watch(values[self.first] if self.first is not None else x)
            values = execute(self.steps, values, last=self.last)
            scores = self._scores_of(values[self.out_key])
            if self.fixed is None:
                classes = tf.argmax(scores, axis=-1, output_type=tf.int32)
            else:
                classes = tf.fill([tf.shape(scores)[0]], self.fixed)
            total = tf.reduce_sum(tf.gather(scores, classes, axis=1, batch_dims=1))
        acts = [values[k] for k in self.keys]
        grads = tape.gradient(total, acts) if self._gradients else [None] * len(acts)
        maps = []
        for a, g, centred, layout in zip(acts, grads, self.centred, self.layouts):
            if layout is not None:  # a token layer: its patch tokens as their grid, for A and dY/dA alike
                a, g = layout.to_grid(a), None if g is None else layout.to_grid(g)
            a = tf.cast(a, tf.float32)
            g = None if g is None else tf.cast(g, tf.float32)
            maps.append(tf.stack([normalise_maps(apply_method(m, a, g if m.needs_gradients else None,
                                                              self.options.eigen_smooth, centred))
                                  for m in self.methods], axis=1) if self.methods else tf.zeros([tf.shape(x)[0], 0]))
        return scores, squash(scores, self.activation), classes, maps

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """(scores (B, C), probabilities (B, C), explained classes (B,), {(method, layer): maps (B, h, w)})."""
        scores, probs, classes, maps = self._compiled(np.asarray(batch, dtype=np.float32))
        out = {}
        for layer, stacked in zip(self.layers, maps):
            for i, method in enumerate(self.methods):
                out[(method.name, layer)] = stacked.numpy()[:, i]
        return scores.numpy(), probs.numpy(), classes.numpy(), out

    def trace_count(self) -> int:
        """How many times the compiled function was traced (1 after any number of batches)."""
        return int(self._compiled.experimental_get_tracing_count())
