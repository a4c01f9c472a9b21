"""`evaluate` on volumes with a 3-D model: deletion and insertion in 3-D (:mod:`gradcam_cli.metrics.volumes`).

One volume at a time: read and brought to the model's size as ``explain`` feeds it
(:func:`~gradcam_cli.run.volumes.volume_values`), explained for its top-1 class (or the first
``--class``) by every method in one compiled call (:class:`~gradcam_cli.engine.volume.VolumeExplainer`),
each map and the random / centre reference maps placed on the model input trilinearly, then each
asked metric's curve scored by one compiled forward pass on the perturbed volumes in chunks
(``--preprocess`` applied to each, as to the volume itself). Records, ``--resume`` and the
document go through the shared run journal into ``evaluation.json`` / ``.jsonl``, with the same
fields as a 2-D evaluation (``aggregate``, ``mean_curves``, ``curves.png``), keyed by path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from gradcam_cli._version import __version__
from gradcam_cli.errors import ImageError
from gradcam_cli.io import writers
from gradcam_cli.io.discover import InputRef
from gradcam_cli.io.volume import read_volume
from gradcam_cli.methods.registry import masks_input
from gradcam_cli.metrics.registry import better
from gradcam_cli.metrics.volumes import VOLUME_AXIS, volume_baseline_map, volume_curves
from gradcam_cli.render.plots import curves_png
from gradcam_cli.render.resample import upsample_trilinear
from gradcam_cli.run.evaluate import EVAL_FILES, aggregate, mean_curves
from gradcam_cli.run.journal import RunJournal, Summary
from gradcam_cli.run.volumes import VolumeModel, preprocess_volume, volume_values
from gradcam_cli.settings import EvalSettings, RunSettings

#: the perturbed volumes of one forward call hold at most about this many bytes
CHUNK_BYTES = 1 << 27


class VolumeEvaluator:
    """The record of one volume: its class and, per method and reference map, each asked metric."""

    def __init__(self, vm: VolumeModel, settings: EvalSettings, run: RunSettings, index: dict[str, int]):
        from gradcam_cli.engine.volume import VolumeExplainer
        from gradcam_cli.metrics.scoring import make_score_fn

        self.vm, self.settings, self.run, self.index = vm, settings, run, index
        classes = [vm.names.resolve(c, vm.split.num_classes) for c in settings.classes][:1] or None
        self.explainer = VolumeExplainer(vm.split, top=None if classes else 1, classes=classes,
                                         method=settings.methods, options=settings.method_options)
        activation = "logit" if settings.score == "logit" else vm.split.activation
        shape = (*vm.size, vm.channels)
        voxels = int(np.prod([n or 64 for n in vm.size])) * vm.channels * 4
        self.chunk = max(1, min(32, CHUNK_BYTES // voxels))
        self.score_fn = make_score_fn(lambda x: vm.split.full(x)[1], lambda v: preprocess_volume(v, run),
                                      activation=activation, chunk=self.chunk, shape=shape)

    def __call__(self, ref: InputRef) -> dict:
        try:
            volume = read_volume(ref.path)
            values = volume_values(volume, self.vm, self.run, ref.path)
        except ImageError as exc:
            where = "" if exc.path == ref.path else f"slice {os.path.basename(exc.path)}: "
            return {"path": ref.path, "status": "error", "kind": exc.kind, "message": where + exc.message}
        out = self.explainer(preprocess_volume(values[None], self.run))
        c = int(out.classes[0, 0])
        grid = values.shape[:3]
        small = out.method_maps[0, 0]  # (M, h, w, d)
        maps = {m: small[i] for i, m in enumerate(self.settings.methods)}
        i = self.index.get(ref.key, 0)
        for name in self.settings.baselines:
            maps[name] = volume_baseline_map(name, small.shape[1:], seed=self.settings.seed, index=i)
        record = {"path": ref.path, "status": "ok", "volume": volume.info, "class_index": c,
                  "label": self.vm.names.label(c), "probability": float(out.probs[0, c]), "metrics": {}}
        for method, cam in maps.items():
            record["metrics"][method] = self.metrics(values, upsample_trilinear(cam, grid), c)
        return record

    def metrics(self, values: np.ndarray, cam: np.ndarray, c: int) -> dict:
        s, fields = self.settings, {}
        for metric in ("deletion", "insertion"):
            if metric in s.metrics:
                insert = metric == "insertion"
                curves = volume_curves(values[None], cam[None], [c], self.score_fn, insert=insert, steps=s.steps,
                                       baseline=s.insertion_baseline if insert else s.deletion_baseline,
                                       chunk=self.chunk)
                fields[metric] = float(curves.auc[0])
                fields[f"{metric}_curve"] = curves.scores[0].tolist()
        return fields


def evaluate_volumes(vm: VolumeModel, refs: Sequence[InputRef], settings: EvalSettings, run: RunSettings,
                     out_dir: str | os.PathLike, *, resume: bool = False,
                     on_record: Callable[[dict], None] | None = None, stop: Any = None) -> tuple[dict, Summary]:
    """Evaluate every volume of ``refs`` into ``out_dir``; ``stop.signum`` set ends the run between
    volumes. Returns the document (without the records) and the journal's summary."""
    resolved = settings.method_options.resolved(vm.split.transformer, masks_input(settings.methods))
    recorded = {**_json(asdict(settings)), "model": run.model.model, "layer": vm.split.layer_name,
                "preprocessing": run.model.preprocessing, "volumes": True, **resolved}
    evaluator = VolumeEvaluator(vm, settings, run, {ref.key: i for i, ref in enumerate(refs)})
    complete = lambda record, _: record.get("status") == "ok" and isinstance(record.get("metrics"), dict)  # noqa: E731
    found: dict = {}
    with RunJournal(out_dir, EVAL_FILES, recorded, resume=resume, complete=complete, on_record=on_record,
                    total=len(refs)) as journal:
        for ref in refs:
            if stop is not None and getattr(stop, "signum", None) is not None:
                break
            kept = journal.lookup(ref.key)
            journal.add(kept if kept is not None else evaluator(ref))

        def header(counts: Summary, records) -> dict:
            done = list(records())
            fields = {f: way for f, way in better().items() if f in settings.metrics}
            found.update({
                "tool": "gradcam-cli", "version": __version__, "model": run.model.model,
                "target_layer": vm.split.layer_name, "input_shape": [*vm.size, vm.channels], "volumes": True,
                "settings": {**_json(asdict(settings)), **resolved},
                "summary": {"images": counts.records, "done": counts.done, "failed": counts.failed},
                "better": fields, "aggregate": aggregate(done, settings), "mean_curves": mean_curves(done, settings)})
            return found

        summary = journal.write_document(refs, header)
        png = curves_png(found["mean_curves"], {m: VOLUME_AXIS for m in ("deletion", "insertion")}, settings.baselines)
        if png is not None:
            writers.write_bytes(journal.out_dir / "curves.png", png)
    return found, summary


def run_settings_for(settings: EvalSettings, model: Any) -> RunSettings:
    """The :class:`RunSettings` a volume's input is made with (the model's preprocessing, the depth rules)."""
    return replace(RunSettings(), model=model, methods=settings.methods, method_options=settings.method_options,
                   depth=settings.depth)


def _json(value):
    import json

    return json.loads(json.dumps(value))
