"""Intermediate activations: every channel of chosen layers, as one image grid per layer.

``ActivationProbe`` runs the model once per batch and returns every requested
layer's output; ``channel_grid`` draws one layer's channels as coloured tiles
(Deep Learning with Python, 5.4.1: each channel standardised, 16 per row).
Arrays in, arrays out; :func:`write_activation_grids` writes PNGs and a JSON
index through :mod:`gradcam_cli.io.writers`.
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from gradcam_cli.inspect.targets import Target, conv_pool_layers, flatten, input_shape, locate, runner

#: background of the grid (gaps and title band), RGB
BACKGROUND = (255, 255, 255)
TITLE_COLOUR = (0, 0, 0)
_TITLE_PAD = 3


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


def standardise(channel: np.ndarray) -> np.ndarray:
    """One channel (h, w) -> uint8 levels: ``(x - mean) / std * 64 + 128``, rounded, clipped to 0..255.

    A channel with no spread (std 0, or below float rounding of its mean) is flat 128:
    no NaN, no warning.
    """
    return _levels(np.asarray(channel)[..., None])[..., 0]


def _levels(activation: np.ndarray) -> np.ndarray:
    """(h, w, C) -> (h, w, C) uint8: :func:`standardise` per channel, vectorised."""
    x = np.asarray(activation, np.float64)
    mean = x.mean(axis=(0, 1))
    std = x.std(axis=(0, 1))
    dead = (x.max(axis=(0, 1)) == x.min(axis=(0, 1))) | (std <= 1e-9 * np.abs(mean))
    scale = np.where(dead, 0.0, 64.0 / np.where(dead, 1.0, std))
    levels = (x - mean) * scale + 128.0
    return np.clip(np.rint(levels), 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.load_default()


def _title_size(title: str) -> tuple[int, int]:
    """(width, height) of the title band for ``title`` ('' -> no band)."""
    if not title:
        return 0, 0
    left, top, right, bottom = _font().getbbox(title)
    height = _font().getbbox("Ag|")[3]
    return right + 2 * _TITLE_PAD, height + 2 * _TITLE_PAD


@dataclass(frozen=True)
class GridLayout:
    """Where :func:`channel_grid` puts things: channel ``i`` is at row ``i // cols``, column
    ``i % cols``; its top-left pixel is ``(title_height + row * (tile_h + gap), col * (tile_w + gap))``."""

    scale: int  # integer nearest-neighbour upscale factor of each tile
    tile_h: int
    tile_w: int
    rows: int
    cols: int
    gap: int
    title_height: int
    height: int
    width: int

    def origin(self, i: int) -> tuple[int, int]:
        row, col = divmod(i, self.cols)
        return self.title_height + row * (self.tile_h + self.gap), col * (self.tile_w + self.gap)


def grid_layout(h: int, w: int, channels: int, *, per_row: int = 16, min_tile: int = 32, gap: int = 2,
                title: str = "") -> GridLayout:
    """The layout of a grid of ``channels`` tiles of (h, w) each (see :class:`GridLayout`)."""
    if per_row < 1 or min_tile < 1 or gap < 0 or channels < 1 or h < 1 or w < 1:
        raise ValueError(
            f"grid needs per_row >= 1, min_tile >= 1, gap >= 0 and a non-empty (h, w, C) activation; got "
            f"per_row={per_row}, min_tile={min_tile}, gap={gap}, shape=({h}, {w}, {channels})"
        )
    scale = max(1, math.ceil(min_tile / min(h, w)))
    cols = min(per_row, channels)
    rows = math.ceil(channels / cols)
    tile_h, tile_w = h * scale, w * scale
    title_w, title_h = _title_size(title)
    width = max(cols * tile_w + (cols - 1) * gap, title_w)
    height = title_h + rows * tile_h + (rows - 1) * gap
    return GridLayout(scale, tile_h, tile_w, rows, cols, gap, title_h, height, width)


def channel_grid(
    activation: np.ndarray,
    *,
    per_row: int = 16,
    min_tile: int = 32,
    gap: int = 2,
    colormap: str = "viridis",
    title: str | None = None,
) -> np.ndarray:
    """One layer's activation (h, w, C) -> RGB uint8 grid image, laid out as :func:`grid_layout` says.

    Each channel is :func:`standardise`-d, coloured with the OpenCV ``colormap``
    and upscaled by an integer factor (nearest neighbour) so that its shorter side
    is at least ``min_tile`` px. ``title`` (default ``"h x w x C"``) is drawn above
    with Pillow's default font; ``""`` draws none. Gaps and title band are white.
    """
    from gradcam_cli.render.overlay import colormap_id

    activation = np.asarray(activation)
    if activation.ndim != 3:
        raise ValueError(f"activation must be (h, w, channels), got shape {activation.shape}")
    h, w, channels = activation.shape
    title = f"{h} x {w} x {channels}" if title is None else title
    layout = grid_layout(h, w, channels, per_row=per_row, min_tile=min_tile, gap=gap, title=title)
    levels = _levels(activation)  # (h, w, C)
    strip = levels.transpose(0, 2, 1).reshape(h, channels * w)  # channels side by side
    coloured = cv2.cvtColor(cv2.applyColorMap(strip, colormap_id(colormap)), cv2.COLOR_BGR2RGB)
    tiles = coloured.reshape(h, channels, w, 3).transpose(1, 0, 2, 3)  # (C, h, w, 3)
    if layout.scale > 1:
        tiles = tiles.repeat(layout.scale, axis=1).repeat(layout.scale, axis=2)
    canvas = np.empty((layout.height, layout.width, 3), np.uint8)
    canvas[:] = BACKGROUND
    for i in range(channels):
        y, x = layout.origin(i)
        canvas[y : y + layout.tile_h, x : x + layout.tile_w] = tiles[i]
    if title:
        _draw_title(canvas, title)
    return canvas


def _draw_title(canvas: np.ndarray, title: str) -> None:
    from PIL import Image, ImageDraw

    image = Image.fromarray(canvas)
    ImageDraw.Draw(image).text((_TITLE_PAD, _TITLE_PAD), title, fill=TITLE_COLOUR, font=_font())
    canvas[:] = np.asarray(image)


def encode_png(image_rgb: np.ndarray) -> bytes:
    """RGB uint8 (H, W, 3) -> PNG bytes."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV only fails here on invalid arrays
        raise ValueError("OpenCV could not encode the image as PNG")
    return buffer.tobytes()


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
