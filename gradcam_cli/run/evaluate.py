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
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from gradcam_cli._version import __version__
from gradcam_cli.io import writers
from gradcam_cli.io.discover import batched
from gradcam_cli.io.preprocess import resize
from gradcam_cli.run.step import Item, decode_item

EVAL_JSON = "evaluation.json"
EVAL_JSONL = "evaluation.jsonl"
BASELINE_METHODS = ("random", "centre")
#: metric -> (record fields, True when higher is better) for the table
METRICS = {
    "deletion": (("deletion",), False),
    "insertion": (("insertion",), True),
    "confidence": (("average_drop", "increase"), None),
    "road": (("road_morf", "road_lerf", "road_combined"), None),
    "pointing": (("pointing",), True),
    "localisation": (("localisation_error",), False),
}
BETTER = {"deletion": "lower", "insertion": "higher", "average_drop": "lower", "increase": "higher",
          "road_morf": "lower", "road_lerf": "higher", "road_combined": "higher", "pointing": "higher",
          "localisation_error": "lower"}


@dataclass(frozen=True)
class EvalSettings:
    """What ``evaluate`` measures; recorded in ``evaluation.json`` and compared on ``--resume``."""

    methods: tuple[str, ...] = ("gradcam",)
    baselines: tuple[str, ...] = BASELINE_METHODS
    metrics: tuple[str, ...] = ("deletion", "insertion", "confidence", "road")
    classes: tuple[str, ...] = ()  # explain this class for every image instead of the top-1
    score: str = "probability"  # or "logit": the pre-activation score
    steps: int = 20
    deletion_baseline: str = "black"
    insertion_baseline: str = "blur"
    boxes_csv: str | None = None
    tolerance: float = 15.0
    seed: int = 0
    max_pixels: int | None = None


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
    """The metrics of one batch of decoded images (see the module docstring)."""

    def __init__(self, cam: Any, settings: EvalSettings, boxes: dict[str, list] | None = None):
        from gradcam_cli.io.preprocess import normalise
        from gradcam_cli.metrics.scoring import make_score_fn

        self.cam, self.settings, self.boxes = cam, settings, boxes or {}
        self.indices = cam.resolve_classes(settings.classes) if settings.classes else None
        activation = "logit" if settings.score == "logit" else cam.split.activation
        profile = cam.profile
        self.score_fn = make_score_fn(lambda x: cam.split.full(x)[1], lambda p: normalise(p, profile),
                                      activation=activation, chunk=32)
        self.size = tuple(profile.input_size)

    def maps(self, batch: np.ndarray, method: str, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list]:
        """(explained classes (B,), maps at the target layer (B, h, w), explanations) for one method."""
        from gradcam_cli.metrics.baselines import baseline_maps

        if method in BASELINE_METHODS:
            h, w = self.cam.split.feature_shape[:2]
            maps = [baseline_maps(method, 1, (h, w), seed=self.settings.seed, start=i)[0] for i in ids]
            return None, np.stack(maps), None
        found = self.cam.explain_prepared(batch, top=1, indices=self.indices, method=method)
        return np.array([e.predictions[0].class_index for e in found]), np.stack([e.maps[0] for e in found]), found

    def __call__(self, items: Sequence[Item], ids: Sequence[int]) -> list[dict]:
        """One record per item: its class and, per method, every metric (and the curves). ``ids``: each
        item's index in the run (it seeds the random map and ROAD's noise, whatever the batching)."""
        batch = np.stack([item.model_input for item in items])
        pixels = np.stack([resize(item.image, self.size) for item in items])
        classes, first, explained = self.maps(batch, self.settings.methods[0], ids)  # the class is the first's
        records = [self._record(item, e) for item, e in zip(items, explained)]
        for m, method in enumerate((*self.settings.methods, *self.settings.baselines)):
            small = first if m == 0 else self.maps(batch, method, ids)[1]
            maps = np.stack([self.cam.upsampler(m, self.size) for m in small])
            scores = self._metrics(pixels, maps, classes, small, items, ids)
            for record, values in zip(records, scores):
                record["metrics"][method] = values
        return records

    def _record(self, item: Item, explanation: Any) -> dict:
        p = explanation.predictions[0]
        height, width = item.image.shape[:2]
        return {"path": item.ref.path, "status": "ok", "width": width, "height": height,
                "class_index": p.class_index, "label": p.label, "probability": p.probability, "metrics": {}}

    def _metrics(self, pixels, maps, classes, small, items, ids) -> list[dict]:
        from gradcam_cli.metrics import confidence, perturbation, road

        s, n = self.settings, len(items)
        out: list[dict] = [{} for _ in range(n)]
        if "deletion" in s.metrics:
            curves = perturbation.deletion(pixels, maps, classes, self.score_fn, baseline=s.deletion_baseline,
                                           steps=s.steps)
            _fill(out, deletion=curves.auc, deletion_curve=curves.scores)
        if "insertion" in s.metrics:
            curves = perturbation.insertion(pixels, maps, classes, self.score_fn, baseline=s.insertion_baseline,
                                            steps=s.steps)
            _fill(out, insertion=curves.auc, insertion_curve=curves.scores)
        if "confidence" in s.metrics:
            conf = confidence.confidence(pixels, maps, classes, self.score_fn)
            _fill(out, average_drop=100.0 * conf.drop, increase=100.0 * conf.increase)
        if "road" in s.metrics:
            result = road.road(pixels, maps, classes, self.score_fn, seed=s.seed, image_ids=list(ids))
            _fill(out, road_morf=result.morf.mean(axis=1), road_lerf=result.lerf.mean(axis=1),
                  road_combined=result.combined)
        if self.boxes and ({"pointing", "localisation"} & set(s.metrics)):
            self._localisation(out, small, classes, items)
        return out

    def _localisation(self, out: list[dict], small, classes, items) -> None:
        from gradcam_cli.metrics import pointing

        keep = [i for i, item in enumerate(items) if os.path.realpath(item.ref.path) in self.boxes]
        if not keep:
            return
        sizes = [items[i].image.shape[:2] for i in keep]
        boxes = [self.boxes[os.path.realpath(items[i].ref.path)] for i in keep]
        labels = [str(int(classes[i])) for i in keep]
        kwargs = dict(tolerance=self.settings.tolerance, upsample=self.cam.upsampler)
        if "pointing" in self.settings.metrics:
            hits = pointing.pointing_game(small[keep], sizes, boxes, labels, **kwargs)
            for i, hit in zip(keep, hits):
                out[i]["pointing"] = 100.0 * float(hit)
        if "localisation" in self.settings.metrics:
            errors = pointing.localisation_error(small[keep], sizes, boxes, labels, upsample=self.cam.upsampler)
            for i, error in zip(keep, errors):
                out[i]["localisation_error"] = 100.0 * float(error)


def _fill(out: list[dict], **columns) -> None:
    for name, values in columns.items():
        for record, value in zip(out, values):
            record[name] = np.asarray(value).tolist() if np.ndim(value) else float(value)


def aggregate(records: Sequence[dict], settings: EvalSettings) -> dict:
    """method -> metric -> {mean, low, high, n} (95% bootstrap, seeded), over the ok records."""
    from gradcam_cli.metrics.stats import bootstrap

    table: dict = {}
    for method in (*settings.methods, *settings.baselines):
        row = {}
        for metric, (fields, _) in METRICS.items():
            for field in fields:
                values = [r["metrics"][method][field] for r in records
                          if r.get("status") == "ok" and field in r["metrics"].get(method, {})]
                if values:
                    row[field] = asdict(bootstrap(values, seed=settings.seed))
        table[method] = row
    return table


def mean_curves(records: Sequence[dict], settings: EvalSettings) -> dict:
    """method -> {"deletion": mean curve, "insertion": mean curve}."""
    curves: dict = {}
    for method in (*settings.methods, *settings.baselines):
        for kind in ("deletion", "insertion"):
            rows = [r["metrics"][method][f"{kind}_curve"] for r in records
                    if r.get("status") == "ok" and f"{kind}_curve" in r["metrics"].get(method, {})]
            if rows:
                curves.setdefault(method, {})[kind] = np.mean(np.asarray(rows), axis=0).tolist()
    return curves


def evaluate_folder(cam: Any, refs: Sequence[Any], settings: EvalSettings, out_dir: str | os.PathLike, *,
                    batch_size: int = 16, resume: bool = False, boxes: dict | None = None,
                    sanity_images: int = 0, on_record: Callable[[dict], None] | None = None) -> dict:
    """Evaluate every input of ``refs``; write the JSON Lines log, ``evaluation.json`` and the plots.
    Returns the evaluation document (without the per-image records)."""
    from gradcam_cli.run.resume import check_same_settings, previous_records

    out_dir = writers.check_writable(out_dir)
    recorded = {**_json(asdict(settings)), "model": cam.describe()}
    run_file = out_dir / ".gradcam-evaluate.json"
    log_path = out_dir / EVAL_JSONL
    previous = {}
    if resume:
        check_same_settings(run_file, {"settings": recorded})
        previous = previous_records(log_path)
    writers.write_json(run_file, {"settings": {"settings": recorded}})
    evaluator = Evaluator(cam, settings, boxes)
    offsets: dict[str, int] = {}
    with writers.JsonLines(log_path, append=resume) as log:
        for start, chunk in _chunks(refs, batch_size):
            todo = [ref for ref in chunk if ref.path not in previous]
            for ref in chunk:
                if ref.path in previous:
                    offsets[ref.path] = previous[ref.path]
                    if on_record:
                        on_record(writers.read_record_at(log_path, previous[ref.path]))
            decoded = [decode_item(ref, cam.profile, settings.max_pixels) for ref in todo]
            good = [d for d in decoded if isinstance(d, Item)]
            index = {ref.path: start + i for i, ref in enumerate(chunk)}
            records = {r["path"]: r for r in (evaluator(good, [index[g.ref.path] for g in good]) if good else [])}
            for value in decoded:
                record = value if isinstance(value, dict) else records[value.ref.path]
                offsets[record["path"]] = log.write(record)
                if on_record:
                    on_record(record)
    ordered = list(writers.read_records_at(log_path, [offsets[r.path] for r in refs if r.path in offsets]))
    document = _document(cam, settings, recorded, ordered)
    if sanity_images:
        document["sanity"] = sanity(cam, refs[:sanity_images], settings)
    writers.write_json_document(out_dir / EVAL_JSON, document, iter(ordered))
    plot(document, out_dir)
    return document


def _chunks(refs, size):
    start = 0
    for chunk in batched(refs, size):
        yield start, chunk
        start += len(chunk)


def _json(value):
    import json

    return json.loads(json.dumps(value))


def _document(cam: Any, settings: EvalSettings, recorded: dict, records: list[dict]) -> dict:
    ok = [r for r in records if r.get("status") == "ok"]
    return {
        "tool": "gradcam-cli", "version": __version__, **cam.describe(), "settings": _json(asdict(settings)),
        "summary": {"images": len(records), "done": len(ok), "failed": len(records) - len(ok)},
        "better": BETTER, "aggregate": aggregate(records, settings), "mean_curves": mean_curves(records, settings),
    }


def sanity(cam: Any, refs: Sequence[Any], settings: EvalSettings) -> dict:
    """Cascading randomisation (Adebayo et al. 2018) of each method on the first images: rank correlation
    and SSIM of the randomised models' maps with the original maps, block by block from the top."""
    from gradcam_cli.engine.explainer import Explainer
    from gradcam_cli.metrics.sanity import cascading_randomisation
    from gradcam_cli.models.split import split_model

    items = [d for d in (decode_item(ref, cam.profile) for ref in refs) if isinstance(d, Item)]
    batch = np.stack([item.model_input for item in items])
    classes = np.array([e.predictions[0].class_index for e in cam.explain_prepared(batch, top=1)], np.int32)
    size = tuple(cam.profile.input_size)
    out = {}
    for method in settings.methods:
        def maps_fn(model, method=method):
            split = split_model(model, cam.layer, output=cam.profile.output)
            result = Explainer(split, top=1, extra_class=True, method=method)(batch, classes)
            return np.stack([cam.upsampler(m, size) for m in result.maps[:, -1]])

        result = cascading_randomisation(cam.model, maps_fn, seed=settings.seed)
        out[method] = {"blocks": [list(b) for b in result.blocks], "spearman": result.mean_spearman.tolist(),
                       "ssim": result.mean_ssim.tolist(), "failed": bool(result.failed)}
    return out


def plot(document: dict, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """``curves.png`` (mean deletion / insertion curves per method) and ``sanity.png`` (the cascade)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    curves = document.get("mean_curves", {})
    kinds = [k for k in ("deletion", "insertion") if any(k in by_kind for by_kind in curves.values())]
    if kinds:  # one panel per curve measured (an empty one would warn that its legend has no lines)
        fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), constrained_layout=True, squeeze=False)
        for ax, kind in zip(axes[0], kinds):
            for method, by_kind in curves.items():
                if kind in by_kind:
                    y = by_kind[kind]
                    ax.plot(np.linspace(0, 1, len(y)), y, label=method, linestyle="--" if method in BASELINE_METHODS else "-")
            ax.set(title=f"{kind} (mean over images)", xlabel="fraction of pixels", ylabel="score")
            ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / "curves.png", plt, io))
    if document.get("sanity"):
        fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
        for method, result in document["sanity"].items():
            ax.plot(range(1, len(result["spearman"]) + 1), result["spearman"], marker="o", label=f"{method} Spearman")
            ax.plot(range(1, len(result["ssim"]) + 1), result["ssim"], marker="x", linestyle=":", label=f"{method} SSIM")
        ax.axhline(0.5, color="grey", linewidth=0.8)
        ax.set(title="sanity check: layers randomised from the top", xlabel="blocks randomised", ylabel="similarity")
        ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / "sanity.png", plt, io))
    return written


def _save(fig, path: pathlib.Path, plt, io) -> pathlib.Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    writers.write_bytes(path, buffer.getvalue())
    return path


def table(document: dict) -> list[str]:
    """The aggregate as text rows: methods x metrics, mean [95% interval]."""
    fields = [f for f in BETTER if any(f in row for row in document["aggregate"].values())]
    head = ["method"] + [f"{f} ({BETTER[f]})" for f in fields]
    rows = [head]
    for method, row in document["aggregate"].items():
        cells = [method]
        for f in fields:
            v = row.get(f)
            cells.append("-" if v is None else f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
