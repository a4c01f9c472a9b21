"""Intermediate activations: every channel of chosen layers, as one image grid per layer.

``ActivationProbe`` runs the model once per batch and returns every requested
layer's output (arrays in, arrays out); :func:`write_activation_grids` draws each
with :func:`gradcam_cli.render.channels.channel_grid` and writes PNGs and a JSON
index through :mod:`gradcam_cli.io.writers`.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

import numpy as np

from gradcam_cli.models.graph import flatten
from gradcam_cli.models.probe import Target, conv_pool_layers, input_shape, locate, runner
from gradcam_cli.render.channels import channel_grid
from gradcam_cli.render.overlay import encode_png


def default_layers(model: Any, first: int = 8) -> list[str]:
    """Paths of the model's first ``first`` conv / pooling layers in graph order (nested models searched)."""
    if first < 1:
        raise ValueError(f"first must be at least 1, got {first}")
    return [t.path for t in conv_pool_layers(flatten(model))[:first]]


class ActivationProbe:
    """Built once for a model and a list of layers; each call runs the model once for all of them.

    ``probe(batch)``: preprocessed model inputs (B, H, W, C) float32 -> ``{path:
    np.ndarray (B, h, w, channels) float32}``, one compiled call (``tf.function``
    with a None batch dimension, so batches of any size share one trace).
    Layers are names or '/'-separated nested paths; OptionError for an unknown
    layer (close candidates listed) or one without spatial and channel axes.
    """

    def __init__(self, model: Any, layer_paths: Sequence[str]):
        import tensorflow as tf

        if not layer_paths:
            raise ValueError("layer_paths must name at least one layer")
        graph = flatten(model)
        found = [locate(graph, name) for name in layer_paths]
        self.targets: list[Target] = list({t.path: t for t in found}.values())
        self.model = model
        run = runner(graph, [t.key for t in self.targets])
        spec = tf.TensorSpec((None, *input_shape(graph)), tf.float32)
        self._fn = tf.function(run, input_signature=[spec], autograph=False)

    @property
    def layers(self) -> list[str]:
        """The resolved paths, in the order given (duplicates dropped)."""
        return [t.path for t in self.targets]

    @property
    def trace_count(self) -> int:
        """How many times the compiled call was traced (1 after any number of batch sizes)."""
        return int(self._fn.experimental_get_tracing_count())

    @property
    def shapes(self) -> dict[str, tuple]:
        """path -> (h, w, channels) as the graph declares it (None where not fixed)."""
        return {t.path: t.shape for t in self.targets}

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._fn(np.asarray(batch, np.float32))
        return {t.path: np.asarray(v) for t, v in zip(self.targets, outputs)}


def layer_file_stem(path: str) -> str:
    """A file name for a layer path: nested '/' become '__'."""
    return path.replace("/", "__")


def write_activation_grids(
    probe: ActivationProbe,
    images: Sequence[tuple[str, np.ndarray]],
    prepare: Callable[[list[np.ndarray]], np.ndarray],
    out_dir: str | pathlib.Path,
    *,
    batch_size: int = 8,
    per_row: int = 16,
    min_tile: int = 32,
    gap: int = 2,
    colormap: str = "viridis",
    save_raw: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write ``out_dir/STEM/LAYER.png`` (and ``.npy`` with ``save_raw``) for each (stem, RGB uint8
    image) and layer, then ``out_dir/activations.json``; returns that index.

    ``prepare`` turns a list of RGB uint8 images into the model's float32 input
    batch (e.g. ``GradCAM.prepare``). ``progress(n)`` is called after each batch
    with the number of images done in it.
    """
    from gradcam_cli.io import writers

    stems = [stem for stem, _ in images]
    if len(set(stems)) != len(stems):
        raise ValueError("image stems must be unique (they name the output folders)")
    out = pathlib.Path(out_dir)
    records = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        outputs = probe(prepare([image for _, image in chunk]))
        for b, (stem, _) in enumerate(chunk):
            files, raw = {}, {}
            for path, values in outputs.items():
                name = f"{stem}/{layer_file_stem(path)}"
                act = values[b]
                title = f"{path}  {' x '.join(map(str, act.shape))}"
                grid = channel_grid(act, per_row=per_row, min_tile=min_tile, gap=gap, colormap=colormap, title=title)
                writers.write_bytes(out / f"{name}.png", encode_png(grid))
                files[path] = f"{name}.png"
                if save_raw:
                    writers.write_npy(out / f"{name}.npy", act)
                    raw[path] = f"{name}.npy"
            records.append({"image": stem, "files": files, **({"raw": raw} if save_raw else {})})
        if progress is not None:
            progress(len(chunk))
    shapes = {path: list(values.shape[1:]) for path, values in outputs.items()} if images else {}
    index = {
        "model": probe.model.name,
        "layers": [{"path": t.path, "type": t.kind, "shape": shapes.get(t.path, list(t.shape))}
                   for t in probe.targets],
        "per_row": per_row,
        "colormap": colormap,
        "images": records,
    }
    writers.write_json(out / "activations.json", index)
    return index
