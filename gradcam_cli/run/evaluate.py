"""`evaluate`: score every method's maps on a folder with faithfulness and localisation metrics.

Per batch of images (decoded by the same step as ``explain``): the explained class
(top-1, or the given class), each method's map for it (the compiled explainer) and
the baseline maps (``random``, ``centre``), all upsampled to the model input as the
overlays are; then every metric of :mod:`gradcam_cli.metrics` on the resized image,
with one compiled forward function scoring all perturbed inputs in chunks. One JSON
line per image as it is done (so a killed run resumes), ``evaluation.json`` with the
per-image records, the aggregates (mean and 95% bootstrap interval) and the settings
at the end, and plots of the mean deletion / insertion curves and of the sanity cascade.
"""

from __future__ import annotations

import os
import pathlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from gradcam_cli._version import __version__
from gradcam_cli.io import writers
from gradcam_cli.metrics import MetricBatch, get_metric, metric_names
from gradcam_cli.metrics.baselines import baseline_maps
from gradcam_cli.metrics.recommend import recommend
from gradcam_cli.metrics.registry import better, curve_axes, curve_kinds, dataset_fields
from gradcam_cli.render.plots import curves_png, sanity_png
from gradcam_cli.results import Explanation
from gradcam_cli.run.folder import io_threads, run_pipeline
from gradcam_cli.run.journal import JournalFiles, RunJournal, Summary
from gradcam_cli.run.layer_maps import LayerMaps, candidate_columns
from gradcam_cli.run.step import Item, decode_item, ok_record
from gradcam_cli.settings import EvalSettings

if TYPE_CHECKING:
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.io.discover import InputRef

EVAL_JSON = "evaluation.json"
EVAL_JSONL = "evaluation.jsonl"
EVAL_FILES = JournalFiles(EVAL_JSON, EVAL_JSONL, ".gradcam-evaluate.json")


def read_boxes(path: str, class_names: Any, num_classes: int) -> dict[str, list]:
    """``--boxes-csv``: real image path -> its boxes, labels resolved to class indices (as strings)."""
    from dataclasses import replace

    from gradcam_cli.metrics.pointing import read_boxes_csv

    base = pathlib.Path(path).parent
    out: dict[str, list] = {}
    for image, boxes in read_boxes_csv(path).items():
        where = pathlib.Path(image)
        if not where.is_absolute() and (base / where).exists():
            where = base / where
        resolved = [replace(b, label=str(class_names.resolve(b.label, num_classes))) for b in boxes]
        out.setdefault(os.path.realpath(where), []).extend(resolved)
    return out


class Evaluator:
    """The metrics of one batch of decoded images (see the module docstring). ``index``: each
    input's position in the run (it seeds the random map and ROAD's noise, whatever the batching)."""

    def __init__(self, cam: GradCAM, settings: EvalSettings, boxes: dict[str, list] | None = None,
                 index: dict[str, int] | None = None):
        from gradcam_cli.io.preprocess import normalise
        from gradcam_cli.metrics.scoring import make_score_fn

        self.cam, self.settings, self.boxes, self.index = cam, settings, boxes or {}, index or {}
        self.indices = cam.resolve_classes(settings.classes) if settings.classes else None
        activation = "logit" if settings.score == "logit" else cam.split.activation
        profile = cam.profile
        self.score_fn = make_score_fn(lambda x: cam.split.full(x)[1], lambda p: normalise(p, profile),
                                      activation=activation, chunk=32)
        self.size = tuple(profile.input_size)
        self.metrics = [get_metric(name) for name in metric_names() if name in settings.metrics]
        self.sweep = LayerMaps(cam, settings, self.indices) if settings.layers else None

    def maps(self, batch: np.ndarray, method: str, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list]:
        """(explained classes (B,), maps at the target layer (B, h, w), explanations) for one method."""
        if method in self.settings.baselines:
            h, w = self.cam.split.feature_shape[:2]
            maps = [baseline_maps(method, 1, (h, w), seed=self.settings.seed, start=i)[0] for i in ids]
            return None, np.stack(maps), None
        found = self.cam.explain_prepared(batch, top=1, indices=self.indices, method=method,
                                          options=self.settings.method_options)
        return np.array([e.predictions[0].class_index for e in found]), np.stack([e.maps[0] for e in found]), found

    def __call__(self, items: Sequence[Item], submit: Callable | None = None) -> list[dict]:
        """One record per item: its class and, per column (method, ``method@layer``, baseline), every
        metric (and the curves)."""
        if not items:  # every image of the batch was kept from the previous run, or failed to decode
            return []
        ids = [self.index.get(item.ref.key, i) for i, item in enumerate(items)]
        batch = np.stack([item.model_input for item in items])
        pixels = np.stack([item.pixels for item in items])  # the model input's own pixels
        classes, probs, columns = self._columns(batch, ids)
        records = [self._record(item, int(c), float(p[c])) for item, c, p in zip(items, classes, probs)]
        boxes = [self.boxes.get(os.path.realpath(item.ref.path)) for item in items]
        for name, (small, upsampler) in columns.items():
            maps = np.stack([upsampler(cam, self.size) for cam in small])
            scored = MetricBatch(pixels, maps, small, classes, [item.image.shape[:2] for item in items], boxes, ids,
                                 upsampler)
            for record, values in zip(records, self._metrics(scored)):
                record["metrics"][name] = values
        return records

    def _columns(self, batch: np.ndarray, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, dict]:
        """(explained classes (B,), probabilities (B, C), column -> (maps at its layer (B, h, w), upsampler)):
        every method (at every swept layer), then the baselines at the target layer."""
        if self.sweep is not None:
            classes, probs, columns = self.sweep(batch)
        else:
            classes, first, explained = self.maps(batch, self.settings.methods[0], ids)  # the class is the first's
            probs = np.stack([e.probabilities for e in explained])
            columns = {self.settings.methods[0]: (first, self.cam.upsampler)}
            for method in self.settings.methods[1:]:
                columns[method] = (self.maps(batch, method, ids)[1], self.cam.upsampler)
        for name in self.settings.baselines:
            columns[name] = (self.maps(batch, name, ids)[1], self.cam.upsampler)
        return classes, probs, columns

    def _record(self, item: Item, class_index: int, probability: float) -> dict:
        height, width = item.image.shape[:2]
        return {**ok_record(item, width, height), "class_index": class_index,
                "label": self.cam.class_names.label(class_index), "probability": probability, "metrics": {}}

    def _metrics(self, batch: MetricBatch) -> list[dict]:
        """Per image, every asked metric's fields (in registration order); a metric that needs
        boxes runs only when some image of the batch has them."""
        out: list[dict] = [{} for _ in batch.classes]
        for metric in self.metrics:
            if metric.needs_boxes and not batch.with_boxes():
                continue
            for name, values in metric.fn(batch, self.score_fn, self.settings).items():
                for record, value in zip(out, values):
                    if value is not None:
                        record[name] = np.asarray(value).tolist() if np.ndim(value) else float(value)
        return out


def aggregate(records: Sequence[dict], settings: EvalSettings) -> dict:
    """method -> tabled field -> {mean, low, high, n} (95% bootstrap, seeded), over the ok records."""
    from gradcam_cli.metrics.stats import bootstrap, bootstrap_statistic

    whole_run = dataset_fields()
    table: dict = {}
    for method in (*candidate_columns(settings), *settings.baselines):
        row = {}
        for field in better():
            source, statistic = whole_run.get(field, (field, None))
            values = [r["metrics"][method][source] for r in records
                      if r.get("status") == "ok" and source in r["metrics"].get(method, {})]
            if values and statistic is not None:
                row[field] = asdict(bootstrap_statistic(values, statistic, seed=settings.seed))
            elif values:
                row[field] = asdict(bootstrap(values, seed=settings.seed))
        table[method] = row
    return table


def mean_curves(records: Sequence[dict], settings: EvalSettings) -> dict:
    """method -> curve name (``deletion``, ``insertion``) -> the mean curve."""
    curves: dict = {}
    for method in (*candidate_columns(settings), *settings.baselines):
        for field, kind in curve_kinds().items():
            rows = [r["metrics"][method][field] for r in records
                    if r.get("status") == "ok" and field in r["metrics"].get(method, {})]
            if rows:
                curves.setdefault(method, {})[kind] = np.mean(np.asarray(rows), axis=0).tolist()
    return curves


def evaluate_folder(cam: GradCAM, refs: Sequence[InputRef], settings: EvalSettings, out_dir: str | os.PathLike, *,
                    batch_size: int = 16, resume: bool = False, boxes: dict | None = None, sanity_images: int = 0,
                    on_record: Callable[[dict], None] | None = None, stop: Callable[[], bool] | None = None,
                    workers: int | None = None) -> tuple[dict, Summary]:
    """Evaluate every input of ``refs`` into ``out_dir`` on the shared run journal (folder lock,
    torn-line repair, ``--resume``), decoding in I/O threads one batch ahead, as ``explain``
    does; then the sanity check, ``evaluation.json`` and the plots. ``stop()`` -> True ends the
    run between batches (no sanity check then). Returns the document (without the per-image
    records) and the journal's summary."""
    stop = stop or (lambda: False)
    index = {ref.key: i for i, ref in enumerate(refs)}
    evaluator = Evaluator(cam, settings, boxes, index)
    resolved = cam.resolved(settings.method_options, settings.methods)  # what the auto options resolved to
    if evaluator.sweep is not None:  # each swept layer resolves them on its own
        resolved["resolved_by_layer"] = {layer: evaluator.sweep.cams[layer].resolved(settings.method_options, settings.methods)
                                         for layer in evaluator.sweep.layers}
    recorded = {**_json(asdict(settings)), "model": cam.describe(), **resolved}
    complete = lambda record, _: record.get("status") == "ok" and isinstance(record.get("metrics"), dict)  # noqa: E731
    with RunJournal(out_dir, EVAL_FILES, recorded, resume=resume, complete=complete, on_record=on_record,
                    total=len(refs)) as journal, \
            ThreadPoolExecutor(io_threads(workers), thread_name_prefix="gradcam-io") as pool:
        def start_decoding(chunk: list) -> list:
            return [journal.lookup(ref.key) or pool.submit(decode_item, ref, cam.profile, settings.max_pixels,
                                                            depth=settings.depth)
                    for ref in chunk]

        run_pipeline(refs, batch_size, evaluator, pool, start_decoding, journal.add, stop)
        checked = sanity(cam, refs[:sanity_images], settings) if sanity_images and not stop() else None
        found: dict = {}

        def header(counts: Summary, records: Callable[[], Iterator[dict]]) -> dict:
            found.update(_document(cam, settings, counts, list(records()), resolved))
            if checked is not None:
                found["sanity"] = checked
            return found

        summary = journal.write_document(refs, header)
        for name, png in (("curves.png", curves_png(found.get("mean_curves", {}), curve_axes(),
                                                    settings.baselines)),
                          ("sanity.png", sanity_png(found.get("sanity", {})))):
            if png is not None:
                writers.write_bytes(journal.out_dir / name, png)
    return found, summary


def _json(value):
    import json

    return json.loads(json.dumps(value))


def _document(cam: GradCAM, settings: EvalSettings, counts: Summary, records: list[dict], resolved: dict) -> dict:
    """``evaluation.json``'s header; ``resolved``: what the auto options resolved to, shown beside the settings."""
    table = aggregate(records, settings)
    return {
        "tool": "gradcam-cli", "version": __version__, **cam.describe(), "settings": {**_json(asdict(settings)), **resolved},
        "summary": {"images": counts.records, "done": counts.done, "failed": counts.failed},
        "better": better(), "aggregate": table, "recommendation": recommend(table, better(), candidate_columns(settings),
                                                                          settings.baselines),
        "mean_curves": mean_curves(records, settings),
    }


def sanity(cam: GradCAM, refs: Sequence[InputRef], settings: EvalSettings) -> dict:
    """Cascading randomisation (Adebayo et al. 2018) of each method on the first images: rank correlation
    and SSIM of the randomised models' maps with the original maps, block by block from the top. Each
    randomised model is explained through the front door (:class:`GradCAM` on the same layer and
    profile), with the run's method options."""
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.metrics.sanity import cascading_randomisation

    items = [d for d in (decode_item(ref, cam.profile, depth=settings.depth) for ref in refs) if isinstance(d, Item)]
    batch = np.stack([item.model_input for item in items])
    classes = [e.predictions[0].class_index for e in cam.explain_prepared(batch, top=1)]
    size = tuple(cam.profile.input_size)
    out = {}
    for method in settings.methods:
        def maps_fn(model, method=method):
            randomised = GradCAM(model=model, layer=cam.layer, profile=cam.profile)
            found = randomised.explain_prepared(batch, top=1, truth=classes, method=method,
                                                options=settings.method_options)
            return np.stack([randomised.upsampler(_map_of(e, c), size) for e, c in zip(found, classes)])

        result = cascading_randomisation(cam.model, maps_fn, seed=settings.seed)
        out[method] = {"blocks": [list(b) for b in result.blocks], "spearman": result.mean_spearman.tolist(),
                       "ssim": result.mean_ssim.tolist(), "failed": bool(result.failed)}
    return out


def _map_of(explanation: Explanation, class_index: int) -> np.ndarray:
    """The map of ``class_index`` in an explanation (top-1 and the true class: the true class's map
    is last, or the top-1 map when it is the same class)."""
    return explanation.maps[[p.class_index for p in explanation.predictions].index(class_index)]
