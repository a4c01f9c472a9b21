"""CAMs of 3-D models (Conv3D, input (B, H, W, D, C)), batched and compiled like :mod:`.explainer`.

The methods defined in 3-D are those whose definition does not depend on how the positions
are laid out: their weights and maps are sums, means or principal components over positions
(:data:`VOLUME_METHODS`). So the registered 2-D functions serve unchanged: the target layer's
(M, h, w, d, K) activations and gradients are viewed as (M, h, w * d, K), the method runs, and its
(M, h, w * d) map is viewed back as (M, h, w, d). Score-CAM masks the input with each channel
upsampled trilinearly (:func:`trilinear`); its masked passes run in chunks as in 2-D.

Contract: input float32 (B, H, W, D, C) preprocessed; maps float32 (B, N, M, h, w, d) in [0, 1]
at the target layer's resolution (ReLU, then each map divided by its maximum; all-zero stays zero).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gradcam_cli.engine.combine import apply_method, centred_acts, normalise_maps
from gradcam_cli.engine.explainer import CamBatch, resolve_methods, squash
from gradcam_cli.methods import Method
from gradcam_cli.engine.score import blend_toward
from gradcam_cli.methods.score import MASK_EPS
from gradcam_cli.methods.volumes import check_volume_methods
from gradcam_cli.models.split import Split
from gradcam_cli.settings import MethodOptions


def trilinear(x, size):
    """(B, h, w, d, c) -> (B, H, W, D, c): separable linear interpolation along each axis, half-pixel
    centres (TensorFlow's bilinear resize, applied to (h, w) and then to d)."""
    import tensorflow as tf

    shape = tf.shape(x)
    b, h, w, d, c = shape[0], shape[1], shape[2], shape[3], shape[4]
    big_h, big_w, big_d = size[0], size[1], size[2]
    planes = tf.image.resize(tf.reshape(x, [b, h, w, d * c]), [big_h, big_w], method="bilinear")
    rows = tf.reshape(planes, [b * big_h, big_w, d, c])
    out = tf.image.resize(rows, [big_w, big_d], method="bilinear")  # w is unchanged: along d only
    return tf.reshape(out, [b, big_h, big_w, big_d, c])


def volume_masks(part, size):
    """(B, h, w, d, c) channels -> (B, H, W, D, c) masks, each upsampled trilinearly and min-max
    normalised to [0, 1] (a constant channel gives 0), as Score-CAM's 2-D masks."""
    import tensorflow as tf

    up = trilinear(tf.cast(part, tf.float32), size)
    low = tf.reduce_min(up, axis=(1, 2, 3), keepdims=True)
    high = tf.reduce_max(up, axis=(1, 2, 3), keepdims=True)
    span = high - low
    return tf.where(span > MASK_EPS, (up - low) / (span + MASK_EPS), tf.zeros_like(up))


def masked_volume_scores(score, x, acts, classes, batch: int, toward: str = "zero"):
    """The target classes' scores on the input masked by each channel of ``acts``: (B, N, K').
    Only about ``batch`` masked volumes exist at a time (at least one channel per pass); ``toward``:
    ``"zero"`` or ``"mean"`` (:func:`gradcam_cli.engine.score.blend_toward`)."""
    import tensorflow as tf

    b = tf.shape(x)[0]
    k = tf.shape(acts)[4]
    step = tf.maximum(1, batch // b)
    chunks = (k + step - 1) // step
    out = tf.TensorArray(tf.float32, size=chunks, infer_shape=False, element_shape=tf.TensorShape([None, None, None]))

    def body(i, out):
        part = acts[..., i * step:tf.minimum(i * step + step, k)]  # (B, h, w, d, c)
        c = tf.shape(part)[4]
        masks = tf.transpose(volume_masks(part, tf.shape(x)[1:4]), [0, 4, 1, 2, 3])  # (B, c, H, W, D)
        masked = tf.reshape(blend_toward(x, masks, toward, spatial=3), tf.concat([[b * c], tf.shape(x)[1:]], axis=0))
        scores = tf.reshape(tf.cast(score(masked), tf.float32), [b, c, -1])
        picked = tf.gather(scores, classes, axis=2, batch_dims=1)  # (B, c, N)
        return i + 1, out.write(i, tf.transpose(picked, [1, 0, 2]))

    _, out = tf.while_loop(lambda i, _: i < chunks, body, [tf.constant(0), out], parallel_iterations=1)
    return tf.transpose(out.concat(), [1, 2, 0])


def first_component_gram(acts):
    """Eigen-CAM's map (:func:`gradcam_cli.methods.eigen.first_component`, the same sign rule) from the
    K x K covariance's leading eigenvector instead of the P x K SVD: a volume has P = h * w * d
    positions (4,096 at 16^3) for K channels (tens), and eigh of K x K is 3.5x faster than the SVD
    (benchmarks/results/volumes.md). The covariance is summed in float32 over centred values and
    decomposed in float64; (M, h, w, d, K) -> (M, h, w, d) float32."""
    import tensorflow as tf

    acts = tf.cast(acts, tf.float32)
    s = tf.shape(acts)
    flat = tf.reshape(acts, [s[0], -1, s[4]])
    centred = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
    covariance = tf.cast(tf.einsum("mpk,mpl->mkl", centred, centred), tf.float64)
    _, vectors = tf.linalg.eigh(covariance)  # ascending eigenvalues, in float64
    projection = tf.einsum("mpk,mk->mp", centred, tf.cast(vectors[:, :, -1], tf.float32))
    mean = tf.reduce_mean(flat, axis=2)
    agreement = tf.reduce_sum(projection * (mean - tf.reduce_mean(mean, axis=1, keepdims=True)), axis=1)
    sign = tf.where(agreement < 0, -1.0, 1.0)
    return tf.reshape(projection * sign[:, None], s[:4])


def _flat(t):
    """(M, h, w, d, K) -> (M, h, w * d, K): the positions laid out as a 2-D map."""
    import tensorflow as tf

    s = tf.shape(t)
    return tf.reshape(t, [s[0], s[1], s[2] * s[3], s[4]])


class VolumeExplainer:
    """N maps per method for each volume of a batch in one compiled call.

    ``split``: a 3-D model cut at its target layer (:func:`gradcam_cli.models.split.split_model`);
    ``top`` or ``classes`` as :class:`~gradcam_cli.engine.explainer.Explainer`. The trunk runs once;
    the head on the activations tiled N times, one backward pass (the ``tile`` strategy); where the
    model cannot be cut, the whole model on the tiled input.
    """

    def __init__(self, split: Split, *, top: int | None = None, classes: Sequence[int] | None = None,
                 method: str | Method | Sequence[str | Method] = "gradcam", options: MethodOptions | None = None):
        import tensorflow as tf

        if (top is None) == (classes is None):
            raise ValueError("give exactly one of top= or classes=")
        self.split = split
        self.methods = resolve_methods(method)
        check_volume_methods([m.name for m in self.methods])
        self.options = options or MethodOptions()
        if self.options.aug_smooth or self.options.eigen_smooth:
            raise ValueError("--aug-smooth and --eigen-smooth are not defined on volumes; drop them")
        self.centred = self.options.centred(split.transformer)
        #: what Score-CAM's masks blend the input toward (``MethodOptions.scorecam_baseline``)
        self.masked_toward = self.options.masked_toward(split.transformer)
        self.top = None if top is None else min(int(top), split.num_classes)
        self.fixed = None if classes is None else tf.constant(list(classes), dtype=tf.int32)
        self.n = self.top if self.top is not None else len(classes)
        self._gradient = [m for m in self.methods if m.needs_gradients]
        self._fused = [m for m in self.methods if m.needs_gradients]
        #: XLA for the maps when a method beyond Grad-CAM is asked (off after a failure to compile)
        self.xla = any(m.name != "gradcam" for m in self._fused)
        self._spec = tf.TensorSpec((None, *split.model.inputs[0].shape[1:]), tf.float32)
        self._compile()

    def _select(self, scores):
        import tensorflow as tf

        if self.top is not None:
            return tf.math.top_k(scores, k=self.top, sorted=True).indices
        return tf.tile(self.fixed[None, :], [tf.shape(scores)[0], 1])

    def _tiled(self, x):
        """(acts (B, h, w, d, K), scores (B, C), classes (B, N), tiled acts and grads (B * N, ...)
        or None when no method needs gradients)."""
        import tensorflow as tf

        n, split = self.n, self.split
        if not self._gradient:
            acts, scores = (split.trunk(x), None) if split.cut else split.full(x)
            scores = split.head(acts) if scores is None else scores
            return acts, scores, self._select(scores), None, None
        if split.cut:
            acts = split.trunk(x)
            tiled = tf.repeat(acts, n, axis=0)
            with tf.GradientTape() as tape:
                tape.watch(tiled)
                tiled_scores = split.head(tiled)
                scores = tiled_scores[::n]
                classes = self._select(scores)
                total = tf.reduce_sum(tf.gather(tiled_scores, tf.reshape(classes, [-1]), axis=1, batch_dims=1))
            return acts, scores, classes, tiled, tape.gradient(total, tiled)
        with tf.GradientTape() as tape:
            tiled, tiled_scores = split.full(tf.repeat(x, n, axis=0))
            scores = tiled_scores[::n]
            classes = self._select(scores)
            total = tf.reduce_sum(tf.gather(tiled_scores, tf.reshape(classes, [-1]), axis=1, batch_dims=1))
        return tiled[::n], scores, classes, tiled, tape.gradient(total, tiled)

    def _explain(self, x):
        import tensorflow as tf

        acts, scores, classes, tiled, grads = self._tiled(x)
        acts = tf.cast(acts, tf.float32)
        if tiled is not None:
            tiled, grads = tf.cast(tiled, tf.float32), tf.cast(grads, tf.float32)
        fused = iter(tf.unstack(self._fused_maps(acts, tiled, grads), axis=2)) if self._fused else None
        maps = []
        for method in self.methods:
            if method.kind == "score":
                s = tf.shape(acts)
                found = masked_volume_scores(lambda z: self.split.full(z)[1], x, acts, classes,
                                             self.options.scorecam_batch, self.masked_toward)
                summed = centred_acts(acts) if self.centred else acts
                raw = tf.einsum("bhwdk,bnk->bnhwd", summed, method.fn(acts, found))
                maps.append(self._normalised(tf.reshape(raw, [-1, s[1], s[2], s[3]]), [-1, self.n, s[1], s[2], s[3]]))
            elif method.needs_gradients:
                maps.append(next(fused))
            else:  # Eigen-CAM outside XLA (its eigh runs 2x slower inside): one map per volume, every class
                s = tf.shape(acts)
                raw = tf.repeat(first_component_gram(acts), self.n, axis=0)
                maps.append(self._normalised(raw, [-1, self.n, s[1], s[2], s[3]]))
        scores = tf.cast(scores, tf.float32)
        return scores, squash(scores, self.split.activation), classes, tf.stack(maps, axis=2)

    def _maps(self, acts, tiled, grads):
        """Every gradient method's maps (B, N, M', h, w, d) from the tiled activations and gradients
        (B * N, h, w, d, K); ``acts`` (B, h, w, d, K) gives the grid."""
        import tensorflow as tf

        s = tf.shape(acts)
        grid = [-1, self.n, s[1], s[2], s[3]]  # (B, N, h, w, d)
        if tiled is not None:
            tiled, grads = _flat(tiled), _flat(grads)
        return tf.stack([self._normalised(apply_method(m, tiled, grads, centred=self.centred), grid)
                         for m in self._fused], axis=2)

    def _compile(self) -> None:
        """The compiled call. With ``xla``, the maps after the trunk and the head's backward pass are one
        XLA cluster (their elementwise chains fuse, as in the 2-D explainer); the trunk stays outside."""
        import tensorflow as tf

        self._fused_maps = tf.function(self._maps, jit_compile=self.xla)
        self._compiled = tf.function(self._explain, input_signature=[self._spec])

    @staticmethod
    def _normalised(raw, grid):
        """A raw map (M, h, w * d) or (M, h, w, d) -> (B, N, h, w, d) after ReLU and per-map scaling."""
        import tensorflow as tf

        flat = tf.reshape(raw, [tf.shape(raw)[0], grid[2], -1])
        return tf.reshape(normalise_maps(flat), grid)

    def __call__(self, batch: np.ndarray) -> CamBatch:
        import tensorflow as tf

        try:
            scores, probs, classes, maps = self._compiled(np.asarray(batch, np.float32))
        except tf.errors.InvalidArgumentError as exc:
            if not self.xla or "XLA" not in str(exc):
                raise
            self.xla = False  # an op XLA cannot compile here: the plain graph instead
            self._compile()
            scores, probs, classes, maps = self._compiled(np.asarray(batch, np.float32))
        b = scores.shape[0]
        return CamBatch(scores=scores.numpy(), probs=probs.numpy(), classes=classes.numpy().astype(np.int32),
                        method_maps=maps.numpy(), guided=np.zeros((b, self.n, 0, 0, 3), np.float32))

    def trace_count(self) -> int:
        return int(self._compiled.experimental_get_tracing_count())
