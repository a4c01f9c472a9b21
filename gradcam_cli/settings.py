"""Typed settings: everything that changes what a run computes or writes, in frozen records.

The ground floor of the package: it imports nothing of gradcam-cli, so every stage may
use these records and defaults. The CLI builds them from its flags; a library user builds
them directly. ``--resume`` compares :meth:`RunSettings.to_json` with the folder's, and the
run header records it. Nothing here knows a command-line flag's name.

A run's settings nest as the work goes: the model (:class:`ModelSettings`), what is
explained (:class:`TargetSettings`), how (``methods`` + :class:`MethodOptions`) and what is
written (:class:`OutputSettings`, one record per output).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

DEFAULT_TOP = 3
DEFAULT_BATCH = 16
DEFAULT_METHOD = "gradcam"
DEFAULT_ALPHA = 0.4
DEFAULT_QUALITY = 90
DEFAULT_COLORMAP = "jet"
#: the Grad-CAM paper's box: keep the map above this fraction of its maximum, then its largest segment
BOX_THRESHOLD = 0.15
#: model precisions: float32, or Keras' mixed_float16 policy (float16 compute, float32 variables and maps)
PRECISIONS = ("float32", "mixed")
#: how a full-depth input's values reach the model (docs/medical.md): ``auto`` is ``range`` for 16-bit
#: PNG / TIFF and ``raw`` for DICOM; ``range``: the container's range (0..65535) mapped linearly onto
#: 0..255 in float; ``window``: the view's window onto 0..255 in float, clipped; ``raw``: the values
#: themselves (DICOM: the modality's, e.g. Hounsfield units)
INTENSITIES = ("auto", "range", "window", "raw")


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
    #: a token layer's grid (height, width) in tokens and its prefix token count, where the model
    #: cannot say them (None: found from the model; docs/transformers.md)
    token_grid: tuple[int, int] | None = None
    prefix_tokens: int | None = None


@dataclass(frozen=True)
class TargetSettings:
    """Which classes get a map: the ``top`` N, or ``classes`` (indices or names); ``threshold`` keeps
    only those at least this probable (multi-label); ``labels_csv`` (path,label rows) adds each
    image's true class (test-set mode). ``kind``: the target (:mod:`gradcam_cli.targets`): a class
    score, a segment (``mask``: a mask image or an image,mask CSV; None: each class's predicted
    region) or a similarity (``reference``: an image, ``.npy`` or folder; ``embedding``: the output
    or layer read, None: the pooled features before the head). ``sidecar``: the model's non-image
    inputs come from a file beside each image (:mod:`gradcam_cli.io.sidecar`). ``box_score_threshold``
    (``box``, a detector's boxes; ``top`` is ``--boxes-top``): explain detections scoring at least this."""

    top: int = DEFAULT_TOP
    classes: tuple[str, ...] = ()
    threshold: float | None = None
    labels_csv: str | None = None
    kind: str = "class"
    mask: str | None = None
    reference: str | None = None
    embedding: str | None = None
    sidecar: bool = False
    box_score_threshold: float | None = None


#: ``MethodOptions.centre_activations``'s values
CENTRES = ("auto", "on", "off")
#: ``MethodOptions.scorecam_baseline``'s values
SCORE_BASELINES = ("auto", "zero", "mean")


@dataclass(frozen=True)
class MethodOptions:
    """Settings of particular methods (they change nothing for the others).

    ``scorecam_batch``: masked inputs per forward pass (Score-CAM's memory bound);
    ``scorecam_channels``: keep only this many channels of highest spatial variance
    (Faster Score-CAM; None: all). ``aug_smooth``: average the maps over horizontal flip x
    input multiplied by 0.9 / 1.0 / 1.1 (flips undone, classes fixed by the plain pass);
    ``eigen_smooth``: the map is the first principal component of the weighted activations
    instead of their channel sum. ``centre_activations``: whether each method's map sums its weights times the
    activations taken relative to their mean over the image's positions, per channel (one of
    :data:`CENTRES`; ``"auto"``: on for transformers, off for every other model; docs/transformers.md).
    ``scorecam_baseline``: what Score-CAM's masks blend the input toward, ``x' = b + M (x - b)``: ``"zero"``
    (``b = 0``, the paper's ``M x``) or ``"mean"`` (``b`` each image's mean per input channel); ``"auto"``:
    the mean for transformers, whose tokens a LayerNorm makes nearly blind to a patch's scale, zero
    for every other model (one of :data:`SCORE_BASELINES`; docs/methods.md)."""

    scorecam_batch: int = 256
    scorecam_channels: int | None = None
    aug_smooth: bool = False
    eigen_smooth: bool = False
    centre_activations: str = "auto"
    scorecam_baseline: str = "auto"

    def __post_init__(self) -> None:
        if self.scorecam_batch < 1:
            raise ValueError(f"scorecam_batch must be at least 1, got {self.scorecam_batch}")
        if self.scorecam_channels is not None and self.scorecam_channels < 1:
            raise ValueError(f"scorecam_channels must be at least 1 or None, got {self.scorecam_channels}")
        if self.centre_activations not in CENTRES:
            raise ValueError(f"centre_activations must be one of {', '.join(CENTRES)}, got {self.centre_activations!r}")
        if self.scorecam_baseline not in SCORE_BASELINES:
            raise ValueError(f"scorecam_baseline must be one of {', '.join(SCORE_BASELINES)}, got {self.scorecam_baseline!r}")

    def centred(self, transformer: bool) -> bool:
        """Whether maps are centred for a model that is (or is not) a transformer."""
        return self.centre_activations == "on" or (self.centre_activations == "auto" and transformer)

    def masked_toward(self, transformer: bool) -> str:
        """What Score-CAM's masks blend the input toward for a model that is (or is not) a transformer:
        ``"zero"`` or ``"mean"``."""
        if self.scorecam_baseline != "auto":
            return self.scorecam_baseline
        return "mean" if transformer else "zero"

    def resolved(self, transformer: bool, scored: bool) -> dict:
        """What ``auto`` resolved to, as run files record it beside the settings: ``centred``, and
        ``masked_toward`` where a Score-CAM method runs (``scored``; the other methods' maps ignore it)."""
        return {"centred": self.centred(transformer), **({"masked_toward": self.masked_toward(transformer)} if scored else {})}


@dataclass(frozen=True)
class OverlaySettings:
    """The heatmap blended over the image, one JPEG per map; ``max_side``: the overlays' (and grids',
    GIFs') long side at most (None: the original size); ``enabled=False``: no overlay files.
    ``caption``: a strip under each overlay JPEG naming its class, probability, method and rank;
    ``colorbar``: a strip under it showing the colormap from 0 to 1 (grids and GIFs have neither:
    they title their tiles and frames themselves)."""

    alpha: float = DEFAULT_ALPHA
    colormap: str = DEFAULT_COLORMAP
    quality: int = DEFAULT_QUALITY
    max_side: int | None = None
    enabled: bool = True
    caption: bool = False
    colorbar: bool = False


@dataclass(frozen=True)
class BoxSettings:
    """The paper's localisation box per map: in the records, drawn on the overlays."""

    enabled: bool = False
    threshold: float = BOX_THRESHOLD


@dataclass(frozen=True)
class GridSettings:
    """Per image: the original and every overlay, titled, in one JPEG."""

    enabled: bool = False
    columns: int = 3
    tile: int = 384


@dataclass(frozen=True)
class GifSettings:
    """Per image: an animated GIF cycling the original and each overlay."""

    enabled: bool = False
    ms: int = 800


@dataclass(frozen=True)
class OutputSettings:
    """What is written for each image besides its record; ``raw``: each map as float32 ``.npy``."""

    overlay: OverlaySettings = field(default_factory=OverlaySettings)
    raw: bool = False
    boxes: BoxSettings = field(default_factory=BoxSettings)
    grid: GridSettings = field(default_factory=GridSettings)
    gif: GifSettings = field(default_factory=GifSettings)


@dataclass(frozen=True)
class DepthSettings:
    """How full-depth inputs (16-bit grey PNG / TIFF, DICOM) reach the model and the pictures:
    ``intensity`` (one of :data:`INTENSITIES`) for the model input; ``window`` (centre, width),
    in the input's own units, for the 8-bit view the overlays are drawn on (None: a DICOM's own
    window, else the 1st-99th percentiles). 8-bit inputs are unaffected."""

    intensity: str = "auto"
    window: tuple[float, float] | None = None
    #: a 2-D model on volumes (NIfTI): explain each slice along this axis (0, 1 or 2) as an image
    slice_axis: int | None = None

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {', '.join(INTENSITIES)}, got {self.intensity!r}")
        if self.window is not None:
            if len(self.window) != 2 or not float(self.window[1]) > 0:
                raise ValueError(f"window must be (centre, width) with a positive width, got {self.window!r}")
            object.__setattr__(self, "window", (float(self.window[0]), float(self.window[1])))
        if self.slice_axis is not None and self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis!r}")


#: ``to_json()``'s flat keys (the run file's and the header's, read back by ``--resume`` on older
#: folders) -> where each lives in :class:`RunSettings`, in the order they are written; keys added
#: later go last (an older run file lacks them, and ``--resume`` compares the keys both sides hold)
_FLAT = {
    "methods": ("methods",), "top": ("targets", "top"), "classes": ("targets", "classes"),
    "threshold": ("targets", "threshold"), "labels_csv": ("targets", "labels_csv"),
    "alpha": ("outputs", "overlay", "alpha"), "colormap": ("outputs", "overlay", "colormap"),
    "quality": ("outputs", "overlay", "quality"), "save_raw": ("outputs", "raw"), "max_pixels": ("max_pixels",),
    "boxes": ("outputs", "boxes", "enabled"), "box_threshold": ("outputs", "boxes", "threshold"),
    "grid": ("outputs", "grid", "enabled"), "grid_columns": ("outputs", "grid", "columns"),
    "grid_tile": ("outputs", "grid", "tile"), "gif": ("outputs", "gif", "enabled"), "gif_ms": ("outputs", "gif", "ms"),
    "overlays": ("outputs", "overlay", "enabled"), "overlay_max_side": ("outputs", "overlay", "max_side"),
    "scorecam_batch": ("method_options", "scorecam_batch"), "scorecam_channels": ("method_options", "scorecam_channels"),
    "aug_smooth": ("method_options", "aug_smooth"), "eigen_smooth": ("method_options", "eigen_smooth"),
    "caption": ("outputs", "overlay", "caption"), "colorbar": ("outputs", "overlay", "colorbar"),
    "intensity": ("depth", "intensity"), "window": ("depth", "window"),
    "target": ("targets", "kind"), "mask": ("targets", "mask"), "reference": ("targets", "reference"),
    "embedding": ("targets", "embedding"), "sidecar": ("targets", "sidecar"),
    "slice_axis": ("depth", "slice_axis"), "box_score_threshold": ("targets", "box_score_threshold"),
}


@dataclass(frozen=True)
class RunSettings:
    """What is explained and what is written for each image. ``methods``: several come from one
    forward and backward pass; ``max_pixels``: refuse larger images (None: Pillow's bound)."""

    model: ModelSettings = field(default_factory=ModelSettings)
    targets: TargetSettings = field(default_factory=TargetSettings)
    methods: tuple[str, ...] = (DEFAULT_METHOD,)
    method_options: MethodOptions = field(default_factory=MethodOptions)
    outputs: OutputSettings = field(default_factory=OutputSettings)
    max_pixels: int | None = None
    depth: DepthSettings = field(default_factory=DepthSettings)

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            object.__setattr__(self, "methods", (self.methods,))
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must name each CAM method once, got {list(self.methods)}")

    @property
    def method(self) -> str:
        """The first method of this run (``Explanation.maps`` are its maps)."""
        return self.methods[0]

    def to_json(self) -> dict[str, Any]:
        """A flat JSON-able dict (``model.*`` keys for the model's settings, the other keys as
        ``_FLAT`` names them), as it reads back from disk."""
        flat: dict[str, Any] = {f"model.{f.name}": getattr(self.model, f.name) for f in fields(ModelSettings)
                                if f.name not in _LATE_MODEL}
        for key, path in _FLAT.items():
            flat[key] = _value_at(self, path)
        flat.update({f"model.{name}": getattr(self.model, name) for name in _LATE_MODEL})
        flat.update({key: _value_at(self, path) for key, path in _LATE_FLAT.items()})
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in flat.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSettings":
        """The settings a flat dict (:meth:`to_json`'s keys, any subset; the rest default) describes.
        An unknown key is a ``ValueError`` naming it."""
        known = {**_FLAT, **_LATE_FLAT}
        unknown = [k for k in data if k not in known and not (k.startswith("model.") and k[6:] in _MODEL_FIELDS)]
        if unknown:
            raise ValueError(f"unknown run setting {unknown[0]!r}; known: model.*, {', '.join(known)}")
        tuples = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731  (JSON lists are the records' tuples)
        settings = cls(model=ModelSettings(**{k[6:]: tuples(v) for k, v in data.items() if k.startswith("model.")}))
        for key, value in data.items():
            if key in known:
                settings = _replace_at(settings, known[key], tuples(value))
        return settings


_MODEL_FIELDS = {f.name for f in fields(ModelSettings)}
#: model fields added after the flat keys were fixed: written last, as the keys added since
_LATE_MODEL = ("token_grid", "prefix_tokens")
#: flat keys added after those model fields: written after them
_LATE_FLAT = {"centre_activations": ("method_options", "centre_activations"),
              "scorecam_baseline": ("method_options", "scorecam_baseline")}


def _value_at(record: Any, path: tuple[str, ...]) -> Any:
    """The field at ``path`` (names, outermost first) of ``record``."""
    for name in path:
        record = getattr(record, name)
    return record


def _replace_at(record: Any, path: tuple[str, ...], value: Any) -> Any:
    """``record`` with the field at ``path`` (names, outermost first) set to ``value``."""
    if len(path) == 1:
        return replace(record, **{path[0]: value})
    return replace(record, **{path[0]: _replace_at(getattr(record, path[0]), path[1:], value)})


@dataclass(frozen=True)
class EvalSettings:
    """What ``evaluate`` measures; recorded in ``evaluation.json`` and compared on ``--resume``.

    ``baselines``: maps scored beside the methods (:mod:`gradcam_cli.metrics.baselines`);
    ``metrics``: registered metric names (:mod:`gradcam_cli.metrics.registry`; the default is
    every metric that needs no boxes); ``classes``: explain this class for every image instead
    of its top-1; ``score``: ``probability`` or ``logit`` (before the head's activation);
    ``steps`` and the two baselines: deletion / insertion; ``boxes_csv`` and ``tolerance``: the
    pointing game and localisation; ``seed``: the random map, ROAD's noise, the bootstrap;
    ``layers``: a layer sweep's resolved layer paths (each method scored at each, columns
    ``method@layer``; empty: the model's one target layer, columns named by method)."""

    methods: tuple[str, ...] = (DEFAULT_METHOD,)
    baselines: tuple[str, ...] = ("random", "centre")
    metrics: tuple[str, ...] = ("deletion", "insertion", "confidence", "road")
    classes: tuple[str, ...] = ()
    score: str = "probability"
    steps: int = 20
    deletion_baseline: str = "black"
    insertion_baseline: str = "blur"
    boxes_csv: str | None = None
    tolerance: float = 15.0
    seed: int = 0
    max_pixels: int | None = None
    layers: tuple[str, ...] = ()
    method_options: MethodOptions = field(default_factory=MethodOptions)
    depth: DepthSettings = field(default_factory=DepthSettings)


@dataclass(frozen=True)
class RunOptions:
    """How a folder run goes (none of it changes the results)."""

    out_dir: str | os.PathLike
    batch_size: int = DEFAULT_BATCH
    resume: bool = False
    shard: tuple[int, int] | None = None  # (K, N): names the predictions files so shards can share --out
    workers: int | None = None  # decode and write threads (None: one per usable CPU, at least 2)


@dataclass(frozen=True)
class VideoSettings:
    """Which frames of a video are explained (from ``start`` to ``end`` seconds, every ``stride``-th,
    at most ``max_frames``) and ``smooth``: the weight a of the temporal exponential moving average
    of each class's map, S_t = a * M_t + (1 - a) * S_prev (None: no smoothing; docs/video.md)."""

    stride: int = 1
    max_frames: int | None = None
    start: float | None = None
    end: float | None = None
    smooth: float | None = None

    def __post_init__(self) -> None:
        if int(self.stride) < 1 or (self.max_frames is not None and int(self.max_frames) < 1):
            raise ValueError(f"stride and max_frames must be >= 1, got {self.stride!r}, {self.max_frames!r}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end} s) must come after start ({self.start} s)")
        if self.smooth is not None and not 0.0 < float(self.smooth) <= 1.0:
            raise ValueError(f"smooth must be in (0, 1], got {self.smooth!r}")

    def to_json(self) -> dict[str, Any]:
        return {f"video.{f.name}": getattr(self, f.name) for f in fields(self)}
