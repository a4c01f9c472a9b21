"""The metric registry, filled by :func:`register_metric` where each metric is defined.

A metric is one function with one signature, ``fn(batch, score_fn, settings) -> columns``:

- ``batch``: a :class:`MetricBatch` (the images at the model input, each method's maps there
  and at the target layer, the explained classes, the original sizes, the ground-truth boxes);
- ``score_fn(pixels, classes) -> scores``: the compiled scorer (see :mod:`gradcam_cli.metrics`);
- ``settings``: the run's :class:`gradcam_cli.settings.EvalSettings`;
- ``columns``: record field -> one value per image (a number, a curve, or None where the
  metric does not apply to that image, e.g. one without a box).

The registration says which record fields it fills and which way each is better, which of
them are curves (plotted, not tabled) and whether it needs ``--boxes-csv``. ``evaluate``'s
``--metrics`` choices, its table's columns, the "better" row and the plots all derive from
here, as ``--method`` derives from the method registry.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from gradcam_cli.render.resample import Upsampler


@dataclass(frozen=True)
class MetricBatch:
    """One batch of images and one method's maps, as every metric sees them.

    ``pixels`` RGB uint8 (B, H, W, 3) at the model input; ``maps`` float32 (B, H, W) in [0, 1]
    there; ``small`` the same maps at the target layer (h, w); ``classes`` int (B,), the
    explained class; ``sizes`` each image's original (height, width); ``boxes`` each image's
    ground-truth boxes (:class:`gradcam_cli.metrics.pointing.Box`; None: the image has none in
    the CSV, or no CSV); ``ids`` each image's index in the run (it seeds noise);
    ``upsample`` how a map reaches an original image."""

    pixels: np.ndarray
    maps: np.ndarray
    small: np.ndarray
    classes: np.ndarray
    sizes: Sequence[tuple[int, int]]
    boxes: Sequence[list | None]
    ids: Sequence[int]
    upsample: Upsampler

    def with_boxes(self) -> list[int]:
        """The images that have ground-truth boxes."""
        return [i for i, boxes in enumerate(self.boxes) if boxes is not None]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable
    better: dict[str, str]  # record field -> "higher" / "lower": the fields the table shows
    curves: tuple[str, ...] = ()  # record fields that hold curves (the mean curves are plotted)
    needs_boxes: bool = False  # only measured with --boxes-csv (not in the default --metrics)
    default: bool = True  # measured without --metrics (False: costly, asked for by name or 'all')
    #: tabled fields computed over the whole run, not per image: field -> (curve field, statistic of
    #: the per-image curves (N, K) -> float), e.g. MaxBoxAcc, the best threshold's mean box accuracy
    dataset: dict[str, tuple[str, Callable]] = field(default_factory=dict)
    curve_axis: str = "fraction of pixels"  # what its curves run over (the plot's x axis, 0 .. 1)

    @property
    def fields(self) -> tuple[str, ...]:
        return (*self.better, *self.curves)


METRICS: dict[str, Metric] = {}
BETTER_CHOICES = ("higher", "lower")


def register_metric(name: str, *, better: dict[str, str], curves: Sequence[str] = (),
                    needs_boxes: bool = False, default: bool = True,
                    dataset: dict[str, tuple[str, Callable]] | None = None,
                    curve_axis: str = "fraction of pixels") -> Callable:
    """Decorator: register ``fn`` as the metric ``name`` (a second registration of a name, or a
    field another metric fills, is an error). ``dataset``: tabled fields (keys of ``better``)
    that are a statistic of a curve field over all images rather than a mean of per-image values."""
    if not better or any(v not in BETTER_CHOICES for v in better.values()):
        raise ValueError(f"metric {name!r}: better must map each field to one of {', '.join(BETTER_CHOICES)}")
    dataset = dict(dataset or {})
    if any(f not in better or curve not in curves for f, (curve, _) in dataset.items()):
        raise ValueError(f"metric {name!r}: each dataset field must be a tabled field computed from one of its curves")

    def add(fn: Callable) -> Callable:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        metric = Metric(name, fn, dict(better), tuple(curves), needs_boxes, default, dataset, curve_axis)
        taken = {field for other in METRICS.values() for field in other.fields}
        if taken.intersection(metric.fields):
            raise ValueError(f"metric {name!r} fills fields another metric fills: {sorted(taken & set(metric.fields))}")
        METRICS[name] = metric
        return fn

    return add


def unregister_metric(name: str) -> None:
    """Remove a metric (tests register temporary ones)."""
    METRICS.pop(name, None)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; ValueError with the list and a close match otherwise."""
    if name in METRICS:
        return METRICS[name]
    close = difflib.get_close_matches(name, list(METRICS), n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(f"unknown metric '{name}'{hint}; choose 'all' or a comma-separated list of: {', '.join(METRICS)}")


def metric_names() -> list[str]:
    """Every registered metric, in registration order (``--metrics all``)."""
    return list(METRICS)


def default_metric_names() -> tuple[str, ...]:
    """The metrics measured without ``--metrics``: every one that needs no boxes and is not costly."""
    return tuple(name for name, metric in METRICS.items() if metric.default and not metric.needs_boxes)


def better() -> dict[str, str]:
    """Every tabled field -> which way is better, in registration order (the document's ``better``)."""
    return {field: way for metric in METRICS.values() for field, way in metric.better.items()}


def dataset_fields() -> dict[str, tuple[str, Callable]]:
    """Tabled field -> (curve field, statistic) for the fields computed over the whole run."""
    return {f: spec for metric in METRICS.values() for f, spec in metric.dataset.items()}


def curve_kinds() -> dict[str, str]:
    """Curve field -> the curve's name in the plots and ``mean_curves`` (``deletion_curve`` -> ``deletion``)."""
    return {field: field.removesuffix("_curve") for metric in METRICS.values() for field in metric.curves}


def curve_axes() -> dict[str, str]:
    """Curve name -> what it runs over (the plots' x axis)."""
    return {kind: metric.curve_axis for metric in METRICS.values() for kind in
            (f.removesuffix("_curve") for f in metric.curves)}
