"""Grad-CAM, batched and compiled. The only module that holds a GradientTape.

A CAM method is a small function from (activations, gradients) to channel
weights; everything else (target selection, batching over B images x N
classes, ReLU, normalisation) lives once in :class:`Explainer`.

Contract: input float32 (B, H, W, 3) already preprocessed; output maps float32
(B, N, h, w) in [0, 1] at the target layer's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .backbones import Split

#: channel-weight functions: (A, dY/dA), both (M, h, w, K) -> weights (M, K)
METHODS: dict[str, Callable] = {}
#: methods that use only the per-channel sums of dY/dA over positions: they may take the
#: head's cheaper gradient that is exact in those sums alone (``Split.channel_head``)
SUMS_ONLY: set[str] = set()


def _method(name: str, *, sums_only: bool = False):
    def register(fn: Callable) -> Callable:
        METHODS[name] = fn
        if sums_only:
            SUMS_ONLY.add(name)
        return fn

    return register


@_method("gradcam", sums_only=True)
def gradcam_weights(activations, gradients):
    """Selvaraju et al. 2017: the spatial mean of the gradient, per channel."""
    import tensorflow as tf

    return tf.reduce_mean(gradients, axis=(1, 2))


@dataclass(frozen=True)
class CamBatch:
    """Results for one batch. ``scores`` are pre-activation, ``probs`` after it."""

    scores: np.ndarray  # (B, C) float32
    probs: np.ndarray  # (B, C) float32
    classes: np.ndarray  # (B, N) int32, the explained class of each map
    maps: np.ndarray  # (B, N, h, w) float32 in [0, 1]


def squash(scores, activation: str):
    import tensorflow as tf

    if activation == "softmax":
        return tf.nn.softmax(scores, axis=-1)
    if activation == "sigmoid":
        return tf.sigmoid(scores)
    return scores


def normalise_maps(cams):
    """ReLU, then divide each map by its maximum; an all-zero map stays zero (no NaN)."""
    import tensorflow as tf

    cams = tf.nn.relu(cams)
    peak = tf.reduce_max(cams, axis=(-2, -1), keepdims=True)
    return tf.math.divide_no_nan(cams, peak)


STRATEGIES = ("tile", "jacobian")


class Explainer:
    """Computes N Grad-CAM maps for each image of a batch in one compiled call.

    ``top``: explain each image's ``top`` highest-scoring classes; or ``classes``:
    explain these class indices for every image. The trunk runs once per batch.
    Two strategies give all B x N gradients from one compiled call:

    - ``"tile"``: the head runs on the activations tiled N times; one backward pass.
    - ``"jacobian"``: the head runs once; ``batch_jacobian`` (vectorised) does N
      backward passes through it. Cheaper where the head is heavy (VGG's 100M-weight
      fully connected layers).

    ``strategy="auto"`` takes ``jacobian`` where the head holds big Dense layers
    (``Split.heavy_head``), else ``tile``: measured with benchmarks/bench.py, VGG16
    top-5 reaches 0.98x the forward pass with ``jacobian`` and 0.90x with ``tile``,
    EfficientNet-Lite0 0.95x with ``tile`` and 0.86x with ``jacobian``. Where the
    model cannot be cut at the target layer, the whole model runs on the tiled
    input instead (correct, N times slower).

    Grad-CAM uses only the per-channel sums of dY/dA over positions, so where the
    split offers a head whose gradient is exact in those sums alone
    (``Split.channel_head``: VGG's pool -> flatten -> fc1) the backward passes take it:
    VGG16 top-5 at batch 1 goes from 0.85x to 0.95x the forward pass.
    """

    def __init__(
        self,
        split: Split,
        *,
        top: int | None = None,
        classes: Sequence[int] | None = None,
        method: str = "gradcam",
        force_full: bool = False,
        extra: bool = False,
        strategy: str = "auto",
    ):
        import tensorflow as tf

        if (top is None) == (classes is None):
            raise ValueError("give exactly one of top= or classes=")
        if strategy not in (*STRATEGIES, "auto"):
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)} or auto, got {strategy!r}")
        self.split = split
        self.top = None if top is None else min(int(top), split.num_classes)
        self.fixed = None if classes is None else tf.constant(list(classes), dtype=tf.int32)
        #: extra=True: each call also takes one more class per image (e.g. its true label), explained last
        self.extra = extra
        self.n = (self.top if self.top is not None else len(classes)) + int(extra)
        self.weights_fn = METHODS[method]
        self._head = split.channel_head if (method in SUMS_ONLY and split.channel_head is not None) else split.head
        self.path = "full" if (force_full or not split.cut) else "cut"
        if self.path == "full":
            strategy = "tile"
        elif strategy == "auto":
            strategy = "jacobian" if split.heavy_head else "tile"
        self.strategy = strategy
        specs = [tf.TensorSpec((None, *split.model.inputs[0].shape[1:]), tf.float32)]
        if extra:
            specs.append(tf.TensorSpec((None,), tf.int32))
        self._compiled = {
            name: tf.function(getattr(self, f"_explain_{name}"), input_signature=specs, jit_compile=False)
            for name in STRATEGIES
        }

    def _select(self, scores, extra=None):
        import tensorflow as tf

        if self.top is not None:
            classes = tf.math.top_k(scores, k=self.top, sorted=True).indices
        else:
            classes = tf.tile(self.fixed[None, :], [tf.shape(scores)[0], 1])
        if extra is not None:
            classes = tf.concat([classes, extra[:, None]], axis=1)
        return classes

    def _explain_tile(self, x, extra=None):
        import tensorflow as tf

        n = self.n
        if self.path == "cut":
            tiled = tf.repeat(self.split.trunk(x), n, axis=0)  # image-major: b * N + n
        with tf.GradientTape() as tape:
            if self.path == "cut":
                tape.watch(tiled)
                tiled_scores = self._head(tiled)
            else:
                tiled, tiled_scores = self.split.full(tf.repeat(x, n, axis=0))
            scores = tiled_scores[::n]  # every copy of an image scores the same
            classes = self._select(scores, extra)  # (B, N)
            picked = tf.gather(tiled_scores, tf.reshape(classes, [-1]), axis=1, batch_dims=1)
            total = tf.reduce_sum(picked)
        grads = tape.gradient(total, tiled)
        maps = self._maps(tiled, grads)  # (B * N, h, w)
        shape = tf.shape(maps)
        return self._outputs(scores, classes, tf.reshape(maps, [-1, n, shape[1], shape[2]]))

    def _explain_jacobian(self, x, extra=None):
        import tensorflow as tf

        acts = self.split.trunk(x)
        with tf.GradientTape() as tape:
            tape.watch(acts)
            scores = self._head(acts)
            classes = self._select(scores, extra)
            picked = tf.gather(scores, classes, axis=1, batch_dims=1)  # (B, N)
        jac = tape.batch_jacobian(picked, acts)  # (B, N, h, w, K)
        shape = tf.shape(jac)
        flat = lambda t: tf.reshape(t, [-1, shape[2], shape[3], shape[4]])  # noqa: E731
        maps = self._maps(flat(tf.repeat(acts[:, None], self.n, axis=1)), flat(jac))
        return self._outputs(scores, classes, tf.reshape(maps, [-1, self.n, shape[2], shape[3]]))

    def _maps(self, acts, grads):
        """(M, h, w, K) activations and gradients -> (M, h, w) maps in [0, 1]."""
        import tensorflow as tf

        # mixed precision: the model may compute in float16; weights and maps are float32
        acts, grads = tf.cast(acts, tf.float32), tf.cast(grads, tf.float32)
        weights = self.weights_fn(acts, grads)  # (M, K)
        return normalise_maps(tf.einsum("mhwk,mk->mhw", acts, weights))

    def _outputs(self, scores, classes, maps):
        import tensorflow as tf

        scores = tf.cast(scores, tf.float32)
        return scores, squash(scores, self.split.activation), classes, maps

    def __call__(self, batch: np.ndarray, extra: np.ndarray | None = None) -> CamBatch:
        args = [np.asarray(batch, dtype=np.float32)]
        if self.extra:
            args.append(np.asarray(extra, dtype=np.int32))
        scores, probs, classes, maps = self._compiled[self.strategy](*args)
        return CamBatch(
            scores=scores.numpy(),
            probs=probs.numpy(),
            classes=classes.numpy().astype(np.int32),
            maps=maps.numpy(),
        )

    def trace_count(self) -> int:
        """How many times the compiled function was traced (1 after any number of batches)."""
        return int(self._compiled[self.strategy].experimental_get_tracing_count())
