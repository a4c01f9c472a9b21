"""Typed run settings: everything that changes what a run writes, in one frozen record.

The CLI builds them from its flags; a library user builds them directly. ``--resume``
compares them with the folder's, and the run header records them. Nothing here
knows a command-line flag's name.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from gradcam_cli.engine.cam import DEFAULT_BATCH, DEFAULT_METHOD, DEFAULT_TOP

DEFAULT_ALPHA = 0.4
DEFAULT_QUALITY = 90
DEFAULT_COLORMAP = "jet"


@dataclass(frozen=True)
class ModelSettings:
    """Which model, cut where, fed how. ``backbone`` (a profile name) or ``model`` (a saved file)."""

    backbone: str | None = None
    model: str | None = None
    weights: str = "imagenet"
    layer: str | None = None
    output: str | None = None
    input_size: int | None = None
    preprocessing: str | None = None
    mean: float | tuple[float, ...] | None = None
    std: float | tuple[float, ...] | None = None
    labels: str | None = None
    custom_objects: str | None = None
    config_dirs: tuple[str, ...] = ()
    precision: str = "float32"


@dataclass(frozen=True)
class RunSettings:
    """What is explained and what is written for each image."""

    model: ModelSettings = field(default_factory=ModelSettings)
    methods: tuple[str, ...] = (DEFAULT_METHOD,)  # several: all from one forward and backward pass
    top: int = DEFAULT_TOP
    classes: tuple[str, ...] = ()  # explain these (indices or names) instead of the top N
    threshold: float | None = None  # keep only targets at least this probable (multi-label)
    labels_csv: str | None = None  # test-set mode: path,label rows
    alpha: float = DEFAULT_ALPHA
    colormap: str = DEFAULT_COLORMAP
    quality: int = DEFAULT_QUALITY
    save_raw: bool = False
    max_pixels: int | None = None
    boxes: bool = False  # the paper's localisation box per map: in the records, drawn on the overlays
    box_threshold: float = 0.15
    grid: bool = False  # per image: original + every overlay, titled, in one JPEG
    grid_columns: int = 3
    grid_tile: int = 384
    gif: bool = False  # per image: an animated GIF cycling original -> each overlay
    gif_ms: int = 800
    overlays: bool = True  # False: records, raw maps and other outputs only (no overlay JPEGs)
    overlay_max_side: int | None = None  # overlays (and grids, GIFs) at most this long side; None: original size
    scorecam_batch: int = 256  # Score-CAM: masked inputs per forward pass
    scorecam_channels: int | None = None  # Score-CAM: only the channels of highest spatial variance
    aug_smooth: bool = False  # mean over horizontal flip x input times 0.9 / 1.0 / 1.1
    eigen_smooth: bool = False  # first principal component of the weighted activations, not their sum

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            object.__setattr__(self, "methods", (self.methods,))
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must name each CAM method once, got {list(self.methods)}")

    def method_options(self) -> Any:
        """The :class:`gradcam_cli.methods.MethodOptions` of this run."""
        from gradcam_cli.methods import MethodOptions

        return MethodOptions(scorecam_batch=self.scorecam_batch, scorecam_channels=self.scorecam_channels,
                             aug_smooth=self.aug_smooth, eigen_smooth=self.eigen_smooth)

    @property
    def method(self) -> str:
        """The first method of this run (``Explanation.maps`` are its maps)."""
        return self.methods[0]

    def to_json(self) -> dict[str, Any]:
        """A flat JSON-able dict (``model.*`` keys for the model's settings), as it reads back from disk."""
        data = asdict(self)
        model = data.pop("model")
        flat = {f"model.{k}": v for k, v in model.items()}
        flat.update(data)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in flat.items()}


@dataclass(frozen=True)
class RunOptions:
    """How a folder run goes (none of it changes the results)."""

    out_dir: str | os.PathLike
    batch_size: int = DEFAULT_BATCH
    resume: bool = False
    shard: tuple[int, int] | None = None  # (K, N): names the predictions files so shards can share --out
    workers: int | None = None  # decode and write threads (None: one per usable CPU, at least 2)
