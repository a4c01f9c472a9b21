"""CAMs of any target (a segment, a similarity, a class of a multi-input model), batched and compiled.

:class:`TargetExplainer` is :class:`gradcam_cli.engine.explainer.Explainer`'s counterpart for the
targets of :mod:`gradcam_cli.targets` beyond a one-input classifier's class score: a
:class:`gradcam_cli.models.tap.Tap` runs the model up to its target layers once, a tape
watches their activations while the part after the cut and the target's scalars are computed,
and the N explained items of every image get their gradients from N backward passes through
that part only, all in one ``tf.function`` with a ``None`` batch axis. The methods, ReLU and
normalisation are the class engine's (:func:`apply_method`, :func:`normalise_maps`, in :mod:`gradcam_cli.engine.combine`).

Output per batch: ``values`` and ``rank`` (B, C) (every candidate item's scalar and its top-N
key), ``items`` (B, N) and, per image input, maps (B, N, M, h, w) in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from gradcam_cli.engine.combine import apply_method, normalise_maps
from gradcam_cli.engine.explainer import resolve_methods
from gradcam_cli.models.tap import Tap
from gradcam_cli.models.tokens import transformer_layer
from gradcam_cli.settings import MethodOptions


@dataclass(frozen=True)
class TargetBatch:
    values: np.ndarray  # (B, C) float32, each candidate item's scalar
    rank: np.ndarray  # (B, C) float32, what top-N orders by (a segment's pixels, a similarity)
    items: np.ndarray  # (B, N) int32, the explained item of each map
    input_maps: tuple  # per image input: (B, N, M, h, w) float32 in [0, 1]
    aux: np.ndarray  # what the target hands back (a segmenter's predicted label map (B, H, W))

    @property
    def method_maps(self) -> np.ndarray:
        """The first image input's maps (B, N, M, h, w)."""
        return self.input_maps[0]


class TargetExplainer:
    """N maps per method and image input for each image of a batch, in one compiled call.

    ``scalars(out, mask) -> (values, rank, aux)``: the target (:mod:`gradcam_cli.targets.kinds`);
    ``top``: explain each image's ``top`` items of highest rank, or ``items``: these for every
    image. ``mask_shape`` (H, W): the call takes a (B, H, W) region mask too.
    """

    def __init__(self, tap: Tap, scalars: Callable, *, top: int | None = None, items: Sequence[int] | None = None,
                 method="gradcam", options: MethodOptions | None = None, mask_shape: tuple | None = None):
        import tensorflow as tf

        if (top is None) == (items is None):
            raise ValueError("give exactly one of top= or items=")
        self.tap, self.scalars = tap, scalars
        self.methods = resolve_methods(method)
        self.options = options or MethodOptions()
        #: per target layer: its maps centred (``MethodOptions.centre_activations``)
        self.centred = [self.options.centred(transformer_layer(tap.graph, k)) for k in tap.layer_keys]
        if self.options.aug_smooth and mask_shape is not None:
            raise ValueError("aug-smooth flips the image but not a given mask: leave out --aug-smooth or --mask")
        self.top = top
        self.fixed = None if items is None else tf.constant(list(items), tf.int32)
        self.n = top if items is None else len(items)
        specs = [tf.TensorSpec((None, *t.shape[1:]), tf.float32) for t in tap.model.inputs]
        self.mask_shape = mask_shape
        if mask_shape is not None:
            specs.append(tf.TensorSpec((None, *mask_shape), tf.float32))
        self._compiled = tf.function(self._explain, input_signature=specs)

    def _select(self, rank):
        import tensorflow as tf

        if self.fixed is not None:
            return tf.tile(self.fixed[None], [tf.shape(rank)[0], 1])
        return tf.math.top_k(rank, k=self.n, sorted=True).indices

    def _explain(self, *args):
        count = len(self.tap.model.inputs)
        inputs, mask = list(args[:count]), (args[count] if self.mask_shape is not None else None)
        if self.options.aug_smooth:
            return self._smoothed(inputs, mask)
        return self._core(inputs, mask)

    def _core(self, inputs, mask, fixed=None):
        import tensorflow as tf

        values_before = self.tap.before(inputs)
        acts = [values_before[k] for k in self.tap.layer_keys]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(acts)
            values, rank, aux = self.scalars(self.tap.after(values_before, acts), mask)
            items = self._select(rank) if fixed is None else fixed
            picked = tf.gather(values, items, axis=1, batch_dims=1)  # (B, N)
            totals = [tf.reduce_sum(picked[:, n]) for n in range(self.n)]
        grads = [tape.gradient(total, acts, unconnected_gradients=tf.UnconnectedGradients.ZERO) for total in totals]
        del tape
        maps = []
        for i, a in enumerate(acts):
            a = tf.cast(a, tf.float32)
            g = tf.stack([tf.cast(grads[n][i], tf.float32) for n in range(self.n)], axis=1)  # (B, N, h, w, K)
            maps.append(self._maps(a, g, self.centred[i]))
        return values, tf.cast(rank, tf.float32), items, tuple(maps), aux

    def _maps(self, acts, grads, centred: bool):
        """Every method's maps (B, N, M, h, w) from the activations (B, h, w, K) and gradients (B, N, h, w, K)."""
        import tensorflow as tf

        shape = tf.shape(grads)
        flat_grads = tf.reshape(grads, tf.concat([[-1], shape[2:]], axis=0))
        tiled = tf.reshape(tf.repeat(acts[:, None], self.n, axis=1), tf.shape(flat_grads))
        out = []
        for method in self.methods:
            if method.needs_gradients:
                raw = tf.reshape(apply_method(method, tiled, flat_grads, self.options.eigen_smooth, centred),
                                 shape[:4])
            else:
                raw = tf.repeat(apply_method(method, acts, None, centred=centred)[:, None], self.n, axis=1)
            out.append(normalise_maps(raw))
        return tf.stack(out, axis=2)

    def _smoothed(self, inputs, mask):
        """aug-smooth: the mean of the maps over horizontal flip x input times 0.9 / 1.0 / 1.1 (image inputs
        only; flips undone), items fixed by the plain pass."""
        import tensorflow as tf

        values, rank, items, maps, aux = self._core(inputs, mask)
        image = set(self.tap.image_inputs)
        sums = [tf.zeros_like(m) for m in maps]
        for flip in (False, True):
            for scale in (0.9, 1.0, 1.1):
                xs = [(tf.reverse(x, [2]) if flip else x) * scale if i in image else x for i, x in enumerate(inputs)]
                part = self._core(xs, mask, fixed=items)[3]
                sums = [s + (tf.reverse(p, [4]) if flip else p) for s, p in zip(sums, part)]
        return values, rank, items, tuple(normalise_maps(s) for s in sums), aux

    def __call__(self, inputs: Sequence[np.ndarray], mask: np.ndarray | None = None) -> TargetBatch:
        """``inputs``: one float32 batch per model input (preprocessed); ``mask``: (B, H, W) when asked."""
        args = [np.asarray(x, np.float32) for x in inputs]
        if self.mask_shape is not None:
            args.append(np.asarray(mask, np.float32))
        values, rank, items, maps, aux = self._compiled(*args)
        return TargetBatch(values.numpy(), rank.numpy(), items.numpy().astype(np.int32),
                           tuple(m.numpy() for m in maps), aux.numpy())

    def trace_count(self) -> int:
        return int(self._compiled.experimental_get_tracing_count())
