"""The compiled scorer every metric feeds, and the chunked, prefetching loop that feeds it.

A score function takes pixels float32 (M, H, W, 3) in 0..255 (pixel space, before
preprocessing) and the explained class of each, int (M,), and returns (M,) scores.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

ACTIVATIONS = ("softmax", "sigmoid", "linear", "logit")
DEFAULT_CHUNK = 64

#: build(start, stop) -> pixels float32 (stop - start, H, W, 3): the inputs of one chunk
Builder = Callable[[int, int], np.ndarray]


class ScoreFn:
    """``score_fn(pixels, classes) -> (M,) float64``: preprocess, compiled forward, pick each input's class.

    ``prepare`` (host: the preprocessing) and ``forward`` (the compiled call on prepared
    inputs) are exposed separately so that :func:`score_inputs` can prepare the next
    chunk while the current one runs. Built by :func:`make_score_fn`.
    """

    def __init__(self, forward: Callable, preprocess: Callable[[np.ndarray], np.ndarray] | None, chunk: int):
        if int(chunk) < 1:
            raise ValueError(f"chunk must be a positive number of inputs per forward call, got {chunk!r}")
        self._forward = forward
        self._preprocess = preprocess
        self.chunk = int(chunk)

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels (M, H, W, 3) in 0..255 -> float32 model inputs (the preprocess callable's job)."""
        out = pixels if self._preprocess is None else self._preprocess(pixels)
        return np.asarray(out, dtype=np.float32)

    def forward(self, inputs: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Prepared float32 inputs (M, H, W, 3), classes int (M,) -> scores float32 (M,)."""
        return self._forward(inputs, np.asarray(classes, dtype=np.int32)).numpy()

    def __call__(self, pixels: np.ndarray, classes: Sequence[int] | np.ndarray) -> np.ndarray:
        classes = np.asarray(classes, dtype=np.int32)
        return score_inputs(self, lambda a, b: pixels[a:b], len(pixels), classes, self.chunk)

    def trace_count(self) -> int:
        """How many times the compiled function was traced (1 after any number of chunk sizes)."""
        return int(self._forward.experimental_get_tracing_count())


def make_score_fn(
    model: Any,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    activation: str = "softmax",
    chunk: int = DEFAULT_CHUNK,
    shape: tuple | None = None,
) -> ScoreFn:
    """A :class:`ScoreFn` on one ``tf.function`` with a ``None`` batch dimension (traced once).

    ``model``: a Keras model or any callable ``x -> (M, C)`` raw scores (e.g.
    ``lambda x: split.full(x)[1]``, pre-activation). ``activation`` is applied to them:
    ``softmax`` / ``sigmoid`` give probabilities; ``linear`` (a regression head, or a model
    that already ends in its softmax) and ``logit`` (``--score logit`` on pre-activation
    scores) take the outputs as they are. ``preprocess``: pixels (M, H, W, 3) float32 in
    0..255 -> model input (e.g. ``lambda p: preprocess.normalise(p, profile)``); None =
    identity. ``chunk``: inputs per forward call. The explained class is an argument of
    each call, not of this builder: it differs per image, and one compiled function
    serves every batch. ``shape``: one input's shape without the batch, for a plain callable
    that does not take (H, W, C) images (a 3-D model's (H, W, D, C)); default: the model's own.
    """
    import tensorflow as tf

    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    call = (lambda x: model(x, training=False)) if _is_keras(model) else model
    shape = tuple(shape) if shape is not None else _input_shape(model)

    def forward(x, picked):
        raw = call(x)
        raw = tf.cast(raw[0] if isinstance(raw, (list, tuple)) else raw, tf.float32)
        if activation == "softmax":
            raw = tf.nn.softmax(raw, axis=-1)
        elif activation == "sigmoid":
            raw = tf.sigmoid(raw)
        return tf.gather(raw, picked, axis=1, batch_dims=1)

    specs = [tf.TensorSpec((None, *shape), tf.float32), tf.TensorSpec((None,), tf.int32)]
    return ScoreFn(tf.function(forward, input_signature=specs), preprocess, chunk)


def _is_keras(model: Any) -> bool:
    import keras

    return isinstance(model, keras.layers.Layer)


def _input_shape(model: Any) -> tuple:
    """(H, W, C) of a Keras model's single input; (None, None, None) for a plain callable."""
    inputs = getattr(model, "inputs", None)
    if inputs:
        return tuple(inputs[0].shape[1:])
    return (None, None, None)


def score_inputs(
    score_fn: Callable,
    build: Builder,
    count: int,
    classes: np.ndarray,
    chunk: int | None = None,
) -> np.ndarray:
    """Score ``count`` inputs made by ``build`` in chunks; returns float64 (count,).

    ``classes`` int (count,): the class to score for each input. ``chunk`` defaults to
    ``score_fn.chunk`` (a :class:`ScoreFn`) or 64. While the score function runs on one
    chunk (TensorFlow releases the GIL), a worker thread builds the next one, and, for a
    :class:`ScoreFn`, preprocesses it too; a plain callable gets the pixels.
    """
    chunk = int(chunk or getattr(score_fn, "chunk", DEFAULT_CHUNK))
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of inputs per forward call, got {chunk!r}")
    classes = np.asarray(classes)
    if classes.shape != (count,):
        raise ValueError(f"classes must have one entry per input, shape ({count},); got {classes.shape}")
    prepare = getattr(score_fn, "prepare", None)
    forward = getattr(score_fn, "forward", score_fn)

    def make(start: int) -> np.ndarray:
        pixels = build(start, min(start + chunk, count))
        return pixels if prepare is None else prepare(pixels)

    scores = np.empty(count, dtype=np.float64)
    if count == 0:
        return scores
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(make, 0)
        for start in range(0, count, chunk):
            inputs = pending.result()
            stop = min(start + chunk, count)
            if stop < count:
                pending = pool.submit(make, stop)
            out = np.asarray(forward(inputs, classes[start:stop]), dtype=np.float64).reshape(-1)
            if out.shape != (stop - start,):
                raise ValueError(f"score_fn must return one score per input, ({stop - start},); got {out.shape}")
            scores[start:stop] = out
    return scores
