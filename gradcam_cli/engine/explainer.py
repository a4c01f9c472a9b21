"""CAMs, batched and compiled. The only module that holds a GradientTape.

A CAM method (:mod:`gradcam_cli.methods`) is a small function from (activations,
gradients) to channel weights or to a map; everything else (target selection,
batching over B images x N classes, ReLU, normalisation) lives once in :class:`Explainer`.

Contract: input float32 (B, H, W, 3) already preprocessed; output maps float32
(B, N, M, h, w) in [0, 1] at the target layer's resolution, for N classes and M methods
(all methods from the same activations and gradients: one forward, one backward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gradcam_cli.engine.score import chosen_channels, masked_scores
from gradcam_cli.engine.attention import TapedAttention, attention_class_maps, attention_map
from gradcam_cli.engine.combine import apply_method, centred_acts, normalise_maps
from gradcam_cli.engine.smooth import aug_smoothed
from gradcam_cli.errors import OptionError
from gradcam_cli.methods import Method, get_method
from gradcam_cli.settings import MethodOptions
from gradcam_cli.methods.eigen import first_component
from gradcam_cli.models.split import Split


@dataclass(frozen=True)
class CamBatch:
    """Results for one batch. ``scores`` are pre-activation, ``probs`` after it."""

    scores: np.ndarray  # (B, C) float32
    probs: np.ndarray  # (B, C) float32
    classes: np.ndarray  # (B, N) int32, the explained class of each map
    method_maps: np.ndarray  # (B, N, M, h, w) float32 in [0, 1], one map per method (in the asked order)
    guided: np.ndarray  # (B, N, H, W, 3) float32 Guided Grad-CAM at the input's resolution; (B, N, 0, 0, 3) if not asked

    @property
    def maps(self) -> np.ndarray:
        """(B, N, h, w): the first method's maps."""
        return self.method_maps[:, :, 0]


def squash(scores, activation: str):
    import tensorflow as tf

    if activation == "softmax":
        return tf.nn.softmax(scores, axis=-1)
    if activation == "sigmoid":
        return tf.sigmoid(scores)
    return scores


def resolve_methods(method: str | Method | Sequence[str | Method]) -> tuple[Method, ...]:
    """One method or several (by name or :class:`Method`) -> a tuple of distinct methods, in order."""
    items = [method] if isinstance(method, (str, Method)) else list(method)
    if not items:
        raise ValueError("give at least one CAM method, e.g. method='gradcam'")
    methods = tuple(m if isinstance(m, Method) else get_method(m) for m in items)
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"each CAM method may be asked once, got {', '.join(names)}")
    return methods


STRATEGIES = ("tile", "jacobian")


class Explainer:
    """Computes N maps per method for each image of a batch in one compiled call.

    ``method``: one registered method or several; all of them are derived from the
    same activations and gradients (trunk, head and backward run once).

    ``top``: explain each image's ``top`` highest-scoring classes; or ``classes``:
    explain these class indices for every image. The trunk runs once per batch.
    Two strategies give all B x N gradients from one compiled call:

    - ``"tile"``: the head runs on the activations tiled N times; one backward pass.
    - ``"jacobian"``: the head runs once; ``batch_jacobian`` (vectorised) does N
      backward passes through it. Cheaper where the head is heavy (VGG's 100M-weight
      fully connected layers).

    ``strategy="auto"`` takes ``jacobian`` where the head holds big Dense layers
    (``Split.heavy_head``), else ``tile``: measured with benchmarks/bench_engine.py, VGG16
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
        method: str | Method | Sequence[str | Method] = "gradcam",
        whole_model: bool = False,
        extra_class: bool = False,
        strategy: str = "auto",
        options: MethodOptions | None = None,
    ):
        import tensorflow as tf

        if (top is None) == (classes is None):
            raise ValueError("give exactly one of top= or classes=")
        if strategy not in (*STRATEGIES, "auto"):
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)} or auto, got {strategy!r}")
        self.split = split
        self.top = None if top is None else min(int(top), split.num_classes)
        self.fixed = None if classes is None else tf.constant(list(classes), dtype=tf.int32)
        #: each call also takes one more class per image (e.g. its true label), explained last
        self.extra_class = extra_class
        self.n = (self.top if self.top is not None else len(classes)) + int(extra_class)
        self.methods = resolve_methods(method)
        #: settings of particular methods (Score-CAM's chunk size and channel count)
        self.options = options or MethodOptions()
        self.method = self.methods[0]
        #: every map taken relative to the activations' mean over positions (``MethodOptions.centre_activations``)
        self.centred = self.options.centred(split.transformer)
        #: what Score-CAM's masks blend the input toward (``MethodOptions.scorecam_baseline``)
        self.masked_toward = self.options.masked_toward(split.transformer)
        self._attends = any(m.kind == "attention" for m in self.methods)
        self._per_class_attention = any(m.kind == "attention" and not m.class_agnostic for m in self.methods)
        if split.attention_problem and self._attends:
            raise OptionError(split.attention_problem)
        sums_only = all(m.sums_only or not m.needs_gradients for m in self.methods)
        self._head = split.channel_head if (sums_only and split.channel_head is not None) else split.head
        self.path = "full" if (whole_model or not split.cut) else "cut"
        if not any(m.needs_gradients for m in self.methods):
            strategy = "forward"
        elif self.path == "full":
            strategy = "tile"
        elif strategy == "auto":
            strategy = "jacobian" if split.heavy_head else "tile"
        self.strategy = strategy
        self._fused = [m for m in self.methods if m.needs_gradients and m.kind in ("weights", "spatial", "guided")]
        #: XLA for what follows the trunk (see :meth:`_compile`) when a method beyond Grad-CAM
        #: needs gradients: Grad-CAM alone has little elementwise work to fuse, and XLA's compile
        #: (~2-3 s on the first batch, ~0.5 s per new batch size, here) would cost small runs more
        #: than it saves. Off for eigen-smooth's float64 SVD, and after a model whose head XLA
        #: cannot compile (then the plain graph runs).
        self.xla = not self.options.eigen_smooth and any(m.name != "gradcam" for m in self._fused)
        self._specs = [tf.TensorSpec((None, *split.model.inputs[0].shape[1:]), tf.float32)]
        if extra_class:
            self._specs.append(tf.TensorSpec((None,), tf.int32))
        self._compile()

    def _compile(self) -> None:
        """The compiled call. With ``xla``, the part after the trunk (the tiled head, its backward
        pass and every gradient method's maps; for the jacobian and full-model paths, the maps)
        is one XLA cluster: it fuses the tiling, the head's backward broadcast and the methods'
        elementwise chains (g^2, g^3, alpha, relu, ...) instead of writing (B * N, h, w, K)
        arrays op by op. Measured on EfficientNet-Lite0, top-5, batch 8, after the trunk: 11.9
        ms instead of 33.3 for four methods. The trunk stays outside: oneDNN runs it faster."""
        import tensorflow as tf

        self._fused_maps = tf.function(self._gradient_maps, jit_compile=self.xla)
        self._tile_head = tf.function(self._tile_backward, jit_compile=self.xla)
        self._compiled = tf.function(self._explain, input_signature=self._specs, jit_compile=False)

    def _explain(self, x, extra=None):
        core = {"tile": self._explain_tile, "jacobian": self._explain_jacobian,
                "forward": self._explain_forward}[self.strategy]
        if self.options.aug_smooth:
            return aug_smoothed(core, x, extra, normalise_maps)
        return core(x, extra)

    def _select(self, scores, extra=None, fixed=None):
        """The explained classes (B, N): ``fixed`` when given (aug-smooth's later passes), else
        the top N or the asked classes, plus ``extra`` last."""
        import tensorflow as tf

        if fixed is not None:
            return fixed
        if self.top is not None:
            classes = tf.math.top_k(scores, k=self.top, sorted=True).indices
        else:
            classes = tf.tile(self.fixed[None, :], [tf.shape(scores)[0], 1])
        if extra is not None:
            classes = tf.concat([classes, extra[:, None]], axis=1)
        return classes

    def _explain_tile(self, x, extra=None, fixed=None):
        import tensorflow as tf

        n = self.n
        if self.path == "cut":
            acts, extras = self.split.trunk_with(x)
            scores, classes, fused = self._tile_head(acts, extras, extra, fixed)
            return self._outputs(scores, classes, self._maps(None, None, acts, x, classes, fused))
        with tf.GradientTape() as tape:
            tiled, tiled_scores = self.split.full(tf.repeat(x, n, axis=0))
            scores, classes, total = self._tiled_targets(tiled_scores, extra, fixed)
        grads = tape.gradient(total, tiled)
        return self._outputs(scores, classes, self._maps(tiled, grads, tiled[::n], x, classes))

    def _tiled_targets(self, tiled_scores, extra=None, fixed=None):
        """From the scores of each image's N copies (image-major: b * N + n): the images' scores
        (B, C), the explained classes (B, N), and the sum of copy n's score for class n, whose
        gradient gives every copy its own class's gradient."""
        import tensorflow as tf

        scores = tiled_scores[:: self.n]  # every copy of an image scores the same
        classes = self._select(scores, extra, fixed)  # (B, N)
        picked = tf.gather(tiled_scores, tf.reshape(classes, [-1]), axis=1, batch_dims=1)
        return scores, classes, tf.reduce_sum(picked)

    def _tile_backward(self, acts, extras, extra=None, fixed=None):
        """The head on the activations tiled N times (image-major: b * N + n), one backward pass:
        (scores (B, C), classes (B, N), every gradient method's maps (B * N, M', h, w)).
        ``extras``: what the head needs beside them (a token layer's), tiled alike."""
        import tensorflow as tf

        tiled = tf.repeat(acts, self.n, axis=0)
        extras = tuple(tf.repeat(e, self.n, axis=0) for e in extras)
        with tf.GradientTape() as tape:
            tape.watch(tiled)
            scores, classes, total = self._tiled_targets(self._head(tiled, extras), extra, fixed)
        grads = tape.gradient(total, tiled)
        return scores, classes, self._gradient_maps(tf.cast(tiled, tf.float32), tf.cast(grads, tf.float32))

    def _explain_jacobian(self, x, extra=None, fixed=None):
        import tensorflow as tf

        acts, extras = self.split.trunk_with(x)
        with tf.GradientTape() as tape:
            tape.watch(acts)
            scores = self._head(acts, extras)
            classes = self._select(scores, extra, fixed)
            picked = tf.gather(scores, classes, axis=1, batch_dims=1)  # (B, N)
        jac = tape.batch_jacobian(picked, acts)  # (B, N, h, w, K)
        shape = tf.shape(jac)
        flat = lambda t: tf.reshape(t, [-1, shape[2], shape[3], shape[4]])  # noqa: E731
        tiled = flat(tf.repeat(acts[:, None], self.n, axis=1))
        return self._outputs(scores, classes, self._maps(tiled, flat(jac), acts, x, classes))

    def _explain_forward(self, x, extra=None, fixed=None):
        """A method without gradients: one map per image from the activations alone, for every class."""
        attention, taped = None, None
        if self._per_class_attention:  # the one run of the model, kept on a tape for the attention gradients
            taped = TapedAttention(self.split, x)
            acts, scores, attention = taped.acts, taped.logits, taped.scores
        elif self._attends:  # the attention scores from the same run of the model
            acts, scores, attention = self.split.full_attention(x)
        elif self.path == "cut":
            acts, extras = self.split.trunk_with(x)
            scores = self.split.head(acts, extras)
        else:
            acts, scores = self.split.full(x)
        classes = self._select(scores, extra, fixed)
        return self._outputs(scores, classes, self._maps(None, None, acts, x, classes, attention=attention, taped=taped))

    def _maps(self, tiled, grads, acts, x, classes, fused=None, attention=None, taped=None):
        """Every method's maps, (B, N, M, h, w) in [0, 1], and the guided images (B, N, H, W, 3)
        (empty, (B, N, 0, 0, 3), unless ``guided`` is asked).

        ``tiled`` and ``grads``: (B * N, h, w, K) activations (image-major) and dy/dA
        (None when no method needs them); ``acts``: (B, h, w, K), each image's activations
        once, which the gradient-free methods use; ``x`` the input, ``classes`` (B, N) the
        targets (Score-CAM scores them on masked inputs; guided backpropagation differentiates them).
        ``fused``: the gradient methods' maps (B * N, M', h, w) when already made (the tiled head);
        ``attention``: the attention scores when already taken; ``taped``: that run's tape
        (:class:`~gradcam_cli.engine.attention.TapedAttention`), else a class-specific attention method runs its own.
        """
        import tensorflow as tf

        # mixed precision: the model may compute in float16; weights and maps are float32
        acts = tf.cast(acts, tf.float32)
        shape = tf.shape(acts)
        if tiled is not None:
            tiled, grads = tf.cast(tiled, tf.float32), tf.cast(grads, tf.float32)
        maps, guided = [], tf.zeros(tf.concat([tf.shape(classes), [0, 0, 3]], axis=0))
        if self._fused and fused is None:
            fused = self._fused_maps(tiled, grads)
        fused = iter(tf.unstack(fused, num=len(self._fused), axis=1)) if self._fused else None
        for method in self.methods:
            if method.kind == "score":
                chosen = chosen_channels(acts, self.options)
                scores = masked_scores(lambda z: self.split.full(z)[1], x, chosen, classes, self.options.scorecam_batch,
                                       self.masked_toward)
                maps.append(normalise_maps(self._score_map(chosen, method.fn(chosen, scores))))
            elif method.kind == "attention" and not method.class_agnostic:  # gradient-weighted
                taped = taped or TapedAttention(self.split, x)
                maps.append(normalise_maps(attention_class_maps(self.split, method, taped, classes, self.n, shape[1:3])))
            elif method.kind == "attention":
                maps.append(normalise_maps(tf.repeat(attention_map(self.split, method, x, shape[1:3], attention)[:, None],
                                                     self.n, axis=1)))
            elif method.needs_gradients:
                maps.append(tf.reshape(next(fused), [-1, self.n, shape[1], shape[2]]))
            else:
                maps.append(normalise_maps(tf.repeat(apply_method(method, acts, None, centred=self.centred)[:, None],
                                                     self.n, axis=1)))
            if method.kind == "guided":
                guided = self._guided(method, x, classes, maps[-1])
        return tf.stack(maps, axis=2), guided

    def _gradient_maps(self, tiled, grads):
        """Every gradient method's normalised maps (B * N, M', h, w) from the tiled activations and
        gradients (guided's slot: the Grad-CAM it multiplies)."""
        import tensorflow as tf

        return tf.stack([
            normalise_maps(apply_method(get_method("gradcam") if m.kind == "guided" else m, tiled, grads,
                                        self.options.eigen_smooth, self.centred))
            for m in self._fused
        ], axis=1)

    def _score_map(self, chosen, weights):
        """Score-CAM's raw maps (B, N, h, w) from the channels (B, h, w, K') and weights (B, N, K')."""
        import tensorflow as tf

        if not self.options.eigen_smooth:
            return tf.einsum("bhwk,bnk->bnhw", centred_acts(chosen) if self.centred else chosen, weights)
        weighted = chosen[:, None] * weights[:, :, None, None, :]  # (B, N, h, w, K')
        shape = tf.shape(weighted)
        flat = first_component(tf.reshape(weighted, tf.concat([[-1], shape[2:]], axis=0)))
        return tf.reshape(flat, shape[:4])

    def _guided(self, method, x, classes, cams):
        """Guided Grad-CAM images (B, N, H, W, 3): one more forward pass with guided ReLU
        gradients, N backward passes to the input, times the maps ``cams`` (B, N, h, w) upsampled."""
        import tensorflow as tf

        from gradcam_cli.methods.guided import guided_relus

        with guided_relus():
            scores = self.split.full(x)[1]
        picked = tf.gather(scores, classes, axis=1, batch_dims=1)  # (B, N)
        grads = tf.stack([tf.gradients(picked[:, n], x)[0] for n in range(self.n)], axis=1)  # (B, N, H, W, 3)
        size = tf.shape(x)[1:3]
        flat = tf.reshape(cams, tf.concat([[-1], tf.shape(cams)[2:], [1]], axis=0))
        up = tf.image.resize(flat, size, method="bilinear")[..., 0]  # (B * N, H, W)
        images = method.fn(up, tf.reshape(tf.cast(grads, tf.float32), tf.concat([[-1], tf.shape(x)[1:]], axis=0)))
        return tf.reshape(images, tf.concat([tf.shape(classes), tf.shape(x)[1:]], axis=0))

    def _outputs(self, scores, classes, maps):
        import tensorflow as tf

        scores = tf.cast(scores, tf.float32)
        maps, guided = maps
        return scores, squash(scores, self.split.activation), classes, maps, guided

    def __call__(self, batch: np.ndarray, extra: np.ndarray | None = None) -> CamBatch:
        """Explain a preprocessed batch; ``extra`` (B,): each image's extra class (``extra_class=True``)."""
        import tensorflow as tf

        args = [np.asarray(batch, dtype=np.float32)]
        if self.extra_class:
            args.append(np.asarray(extra, dtype=np.int32))
        try:
            scores, probs, classes, maps, guided = self._compiled(*args)
        except tf.errors.InvalidArgumentError as exc:
            if not self.xla or "XLA" not in str(exc):
                raise
            self.xla = False  # an op of the head XLA cannot compile: the plain graph instead
            self._compile()
            scores, probs, classes, maps, guided = self._compiled(*args)
        return CamBatch(
            scores=scores.numpy(),
            probs=probs.numpy(),
            classes=classes.numpy().astype(np.int32),
            method_maps=maps.numpy(),
            guided=guided.numpy(),
        )

    def trace_count(self) -> int:
        """How many times the compiled function was traced (1 after any number of batches)."""
        return int(self._compiled.experimental_get_tracing_count())
