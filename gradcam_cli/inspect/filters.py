"""Filter patterns: the input image each filter responds to most, by gradient ascent.

Deep Learning with Python, 5.4.2, batched: every requested filter gets its own
image in one batch, and one compiled step (``tf.function`` with a None batch
dimension) moves all of them at once. The images live in 0..255 pixel space;
the model's preprocessing runs inside the graph
(:func:`gradcam_cli.io.preprocess.preprocess_tensor`).
The book's one-filter-at-a-time loop, the reference, is ``tests/reference.py:book_loop``.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

import numpy as np

from gradcam_cli.errors import ModelError, OptionError
from gradcam_cli.models.graph import flatten
from gradcam_cli.models.probe import computing_in, input_shape, locate, output_target, runner
from gradcam_cli.render.channels import deprocess, pattern_grid
from gradcam_cli.render.overlay import encode_png

#: the book's noise: grey 128 plus 20 * U[0, 1)
NOISE_BASE, NOISE_SPAN = 128.0, 20.0


def noise(filters: Sequence[int], shape: tuple, seed: int) -> np.ndarray:
    """Start images (F, H, W, 3) float32: 128 + 20 * U[0, 1), one generator per (seed, filter),
    so a filter starts from the same image whatever else is requested or how it is chunked."""
    return np.stack(
        [NOISE_BASE + NOISE_SPAN * np.random.default_rng([seed, int(f)]).random(shape) for f in filters]
    ).astype(np.float32)


def _pick(activation: Any, filters: Any) -> Any:
    """Per image b: the mean of channel ``filters[b]`` of its activation (or unit ``filters[b]``)."""
    import tensorflow as tf

    picked = tf.gather(activation, filters, axis=-1, batch_dims=1)
    return picked if picked.shape.rank == 1 else tf.reduce_mean(picked, axis=list(range(1, picked.shape.rank)))


class FilterAscent:
    """Gradient ascent for many filters of one layer at once; build once, :meth:`run` many times.

    ``layer_path``: a name or nested path with a 4-D output; ``None`` = the model's
    output units, before a final softmax / sigmoid (class visualisation: a
    "filter" is then a unit). ``preprocess``: float32 0..255 RGB batch tensor ->
    model input, traceable (e.g. ``lambda x: preprocess_tensor(x, profile)``);
    None = identity. Images are square ``size`` px unless the model input has a
    fixed size, which wins. Each step moves every image by ``step_size`` along
    its gradient divided by the gradient's RMS + 1e-5.

    ``precision="bfloat16"``: the layers compute in bfloat16 (float32 weights, images and
    updates); on a CPU with AMX (or AVX512-BF16) or a GPU with bfloat16 units it is several
    times faster (VGG16 block3_conv1, 64 filters at 64 px: 2.8-3.5x here), and the patterns
    correlate ~0.94 with float32's after 40 steps (they drift apart slowly, as any two
    ascents from different rounding do). Elsewhere it is emulated, and slower.
    """

    def __init__(
        self,
        model: Any,
        layer_path: str | None,
        preprocess: Callable[[Any], Any] | None = None,
        *,
        size: int = 64,
        steps: int = 40,
        step_size: float = 1.0,
        precision: str = "float32",
    ):
        import tensorflow as tf

        if size < 1 or steps < 0:
            raise ValueError(f"size must be >= 1 and steps >= 0, got size={size}, steps={steps}")
        graph = flatten(model)
        self.model = model
        self.target = output_target(graph) if layer_path is None else locate(graph, layer_path)
        if layer_path is None and len(self.target.shape) != 1:
            raise OptionError(
                f"the output of model '{model.name}' has shape (batch, {', '.join(map(str, self.target.shape))}); "
                "unit mode needs (batch, units): pass a layer instead"
            )
        self.units = layer_path is None
        self.channels = int(self.target.shape[-1])
        h, w, c = input_shape(graph)
        if c != 3:
            raise ModelError(f"model '{model.name}' takes {c}-channel inputs; filter patterns need RGB (3) inputs")
        self.size = (h or size, w or size)
        self.steps, self.step_size = int(steps), float(step_size)
        activation = runner(graph, [self.target.key], logits=self.units)
        prep = preprocess or (lambda x: x)
        self.activation = lambda images: activation(prep(images))[0]
        self.traces = {"step": 0, "loss": 0}
        specs = [tf.TensorSpec((None, *self.size, 3), tf.float32), tf.TensorSpec((None,), tf.int32)]

        def step(images: Any, filters: Any) -> tuple[Any, Any]:
            self.traces["step"] += 1  # runs only while tracing
            with tf.GradientTape() as tape:
                tape.watch(images)
                loss = _pick(self.activation(images), filters)
            grads = tape.gradient(loss, images)  # images are independent: d(sum)/d(image b) = d(loss b)/d(image b)
            rms = tf.sqrt(tf.reduce_mean(tf.square(grads), axis=[1, 2, 3], keepdims=True))
            return images + self.step_size * grads / (rms + 1e-5), loss

        def loss(images: Any, filters: Any) -> Any:
            self.traces["loss"] += 1
            return _pick(self.activation(images), filters)

        self.precision = precision
        self.step = tf.function(step, input_signature=specs, autograph=False)
        self.loss = tf.function(loss, input_signature=specs, autograph=False)
        with computing_in(graph, [self.target.key], precision):  # traced now, in that precision
            self.step.get_concrete_function()
            self.loss.get_concrete_function()

    @property
    def layer(self) -> str:
        return self.target.path

    def check_filters(self, filters: Sequence[int]) -> np.ndarray:
        """The filters as int32, each in 0..channels-1 (OptionError naming the channel count)."""
        values = np.asarray(list(filters))
        if values.size == 0:
            raise ValueError("filters must name at least one filter")
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"filters must be a list of integers, got {list(filters)!r}")
        bad = values[(values < 0) | (values >= self.channels)]
        if bad.size:
            what = "units" if self.units else "channels"
            raise OptionError(
                f"filter {int(bad[0])} is out of range: layer '{self.layer}' has {self.channels} {what} "
                f"(0-{self.channels - 1}); pass filters between 0 and {self.channels - 1}"
            )
        return values.astype(np.int32)

    def ascend(self, images: np.ndarray, filters: Sequence[int], progress: Callable[[int], None] | None = None):
        """``steps`` ascent steps on one batch: (images after float32, mean activations before, after)."""
        import tensorflow as tf

        x = tf.constant(images, tf.float32)
        idx = tf.constant(self.check_filters(filters))
        initial = None
        for _ in range(self.steps):
            x, loss = self.step(x, idx)
            initial = loss if initial is None else initial
            if progress is not None:
                progress(len(filters))
        final = self.loss(x, idx)
        return x.numpy(), (final if initial is None else initial).numpy(), final.numpy()

    def run(
        self,
        filters: Sequence[int],
        *,
        batch_size: int = 64,
        seed: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patterns for ``filters``: (patterns RGB uint8 (F, s, s, 3), final mean activations (F,),
        initial mean activations (F,)). Chunks of ``batch_size`` filters share one trace;
        ``progress(n)`` advances by n filter-steps (total ``len(filters) * steps``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        filters = self.check_filters(filters)
        images = noise(filters, (*self.size, 3), seed)
        finals, initials = [], []
        for start in range(0, len(filters), batch_size):
            part = slice(start, start + batch_size)
            images[part], initial, final = self.ascend(images[part], filters[part], progress)
            initials.append(initial)
            finals.append(final)
        return deprocess(images), np.concatenate(finals), np.concatenate(initials)


def write_filter_outputs(
    ascent: FilterAscent,
    filters: Sequence[int],
    out_dir: str | pathlib.Path,
    *,
    batch_size: int = 64,
    seed: int = 0,
    per_row: int = 8,
    margin: int = 5,
    progress: Callable[[int], None] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Run ``ascent`` and write ``out_dir/grid.png``, ``out_dir/filter_NNNN.png`` per filter and
    ``out_dir/filters.json`` (each filter's mean activation before and after); returns that index.

    Each grid tile is labelled with its filter number, or for the output units with its class
    name from ``class_names`` (indexed by unit; None: the unit number), which the index's
    records then carry as ``label``."""
    from gradcam_cli.io import writers

    filters = [int(f) for f in ascent.check_filters(filters)]
    patterns, final, initial = ascent.run(filters, batch_size=batch_size, seed=seed, progress=progress)
    out = pathlib.Path(out_dir)
    named = ascent.units and class_names is not None
    labels = [str(class_names[f]) if named else str(f) for f in filters]
    records = []
    for f, label, pattern, after, before in zip(filters, labels, patterns, final, initial):
        name = f"{'unit' if ascent.units else 'filter'}_{f:04d}.png"
        writers.write_bytes(out / name, encode_png(pattern))
        records.append({"filter": f, **({"label": label} if named else {}), "file": name,
                        "initial_mean_activation": float(before), "final_mean_activation": float(after)})
    writers.write_bytes(out / "grid.png", encode_png(pattern_grid(patterns, per_row, margin, labels)))
    index = {
        "model": ascent.model.name,
        "layer": ascent.layer,
        "units": ascent.units,
        "channels": ascent.channels,
        "size": list(ascent.size),
        "steps": ascent.steps,
        "step_size": ascent.step_size,
        "precision": ascent.precision,
        "seed": seed,
        "grid": "grid.png",
        "filters": records,
    }
    writers.write_json(out / "filters.json", index)
    return index
