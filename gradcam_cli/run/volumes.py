"""`explain` on volumes with a 3-D model: NIfTI files and DICOM series in, 3-D maps out.

One volume at a time (a 256^3 float32 volume is 64 MiB; docs/medical.md states the peak): read
(:mod:`gradcam_cli.io.volume`), fed to the model at its input size (trilinear,
:func:`~gradcam_cli.render.resample.upsample_trilinear`), explained by the compiled
:class:`~gradcam_cli.engine.volume.VolumeExplainer`; each map, placed back on the volume
(trilinear), is written as a float32 NIfTI with the input's affine and header, a PNG montage of
slices and a GIF through them. Records and ``predictions.json`` go through the shared
:class:`~gradcam_cli.run.journal.RunJournal`, so ``--resume`` and ``--shard`` work as for images
(records keyed by path: a NIfTI file or a series folder).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcam_cli._version import __version__
from gradcam_cli.errors import ImageError, OptionError
from gradcam_cli.io import writers
from gradcam_cli.io.discover import InputRef, in_shard
from gradcam_cli.io.volume import Volume, is_nifti, read_volume
from gradcam_cli.methods.registry import masks_input
from gradcam_cli.render.resample import upsample_trilinear
from gradcam_cli.run.journal import JournalFiles, RunJournal
from gradcam_cli.run.naming import (
    JSON_NAME,
    JSONL_NAME,
    RUN_FILE,
    map_name,
    result_names,
)
from gradcam_cli.settings import RunOptions, RunSettings

#: preprocessings defined on one channel of any meaning (per-RGB ones are refused for volumes)
VOLUME_PREPROCESSING = ("none", "scale", "tf", "mean_std")


def volume_refs(inputs: Sequence[str], recursive: bool = True, shard: tuple[int, int] | None = None) -> list[InputRef]:
    """Each NIfTI file (named, or found in a folder) and each folder that directly holds DICOM files
    (a series) is one input; ``out_stem``: its path below the argument's folder, without ``.nii(.gz)``."""
    from gradcam_cli.io.dicom import is_dicom

    refs, seen = [], set()

    def add(path: str, base: str) -> None:
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        rel = os.path.relpath(path, base).replace(os.sep, "/")
        stem = rel[:-7] if rel.lower().endswith(".nii.gz") else rel[:-4] if rel.lower().endswith(".nii") else rel
        refs.append(InputRef(path, stem if stem not in (".", "") else os.path.basename(os.path.abspath(path))))

    for arg in inputs:
        if not os.path.isdir(arg):
            add(arg, os.path.dirname(arg) or ".")
            continue
        base = os.path.dirname(os.path.abspath(arg).rstrip(os.sep))
        for root, dirs, files in os.walk(arg):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
            files = sorted(f for f in files if not f.startswith("."))
            paths = [os.path.join(root, f) for f in files]
            if any(not is_nifti(p) and is_dicom(p) for p in paths):
                add(root, base)
            for p in paths:
                if is_nifti(p):
                    add(p, base)
    return [ref for ref in refs if shard is None or in_shard(ref, *shard)]


@dataclass(frozen=True)
class VolumeModel:
    """A 3-D model cut at its target layer: its input (H, W, D) and channels C, the class names."""

    model: Any
    split: Any
    size: tuple  # (H, W, D), None where the model takes any
    channels: int
    names: Any


def load_volume_model(settings: RunSettings) -> VolumeModel:
    from gradcam_cli.config import classes as class_names
    from gradcam_cli.models.load import load_user_model
    from gradcam_cli.models.split import split_model

    s = settings.model
    model = load_user_model(s.model, s.custom_objects)
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 5:
        raise OptionError(f"model '{model.name}' takes inputs of shape {shape}, not volumes (batch, h, w, d, channels)")
    split = split_model(model, s.layer or "auto", output=s.output)
    names = class_names.for_model(s.labels, None, split.num_classes, split.head_type)
    return VolumeModel(model, split, shape[1:4], int(shape[4] or 1), names)


def model_input(volume: Volume, vm: VolumeModel, settings: RunSettings, path: str) -> np.ndarray:
    """(1, H, W, D, C) float32: :func:`volume_values` through ``--preprocess`` (one channel's formula)."""
    return preprocess_volume(volume_values(volume, vm, settings, path)[None], settings)


def volume_values(volume: Volume, vm: VolumeModel, settings: RunSettings, path: str) -> np.ndarray:
    """(H, W, D, C) float32 on the model's scale: the values (``--intensity``: raw by default,
    ``window`` / ``range`` onto 0..255; a MONOCHROME1 series inverted: ``lo + hi - v`` raw,
    ``255 - x`` else), resized trilinearly to the model's size."""
    from gradcam_cli.io.depth import windowed

    values = volume.values
    if values.ndim == 3:
        values = values[..., None]
    if values.shape[3] != vm.channels:
        raise ImageError(path, "unsupported",
                         f"volume of shape {tuple(volume.values.shape)} has {values.shape[3]} channel(s) (its 4th "
                         f"dimension), the model takes {vm.channels}: give a volume whose 4th dimension is "
                         f"{vm.channels}" if vm.channels > 1 else
                         f"volume of shape {tuple(volume.values.shape)} has a 4th dimension of {values.shape[3]}; the "
                         "model takes one channel: give a 3-D volume (one frame of it)")
    rule = "raw" if settings.depth.intensity == "auto" else settings.depth.intensity
    if rule == "window":
        values = windowed(values, view_window(volume, settings))
    elif rule == "range":
        lo, hi = float(values.min()), float(values.max())
        values = (values - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
    if volume.invert:  # MONOCHROME1: bright is dense again, as for single files (io/depth.py)
        values = np.float32(sum(volume.value_range)) - values if rule == "raw" else 255.0 - values
    size = tuple(n if n is not None else values.shape[a] for a, n in enumerate(vm.size))
    values = upsample_trilinear(values, size) if size != values.shape[:3] else values
    return np.asarray(values, np.float32)


def preprocess_volume(values: np.ndarray, settings: RunSettings) -> np.ndarray:
    """(B, H, W, D, C) values on the model's scale -> float32 model inputs through ``--preprocess``
    (one channel's formula): what a 3-D model is fed, and what ``evaluate``'s perturbed volumes go through."""
    mode, mean, std = (settings.model.preprocessing or "none"), settings.model.mean, settings.model.std
    if mode == "scale":
        values = values / 255.0
    elif mode == "tf":
        values = values / 127.5 - 1.0
    elif mode == "mean_std":
        values = (values - np.float32(np.ravel([mean])[0])) / np.float32(np.ravel([std])[0])
    return np.ascontiguousarray(values, np.float32)


def view_window(volume: Volume, settings: RunSettings) -> tuple[float, float]:
    """``--window``, a series' own, else the 1st-99th percentiles of (a sub-grid of) the volume."""
    if settings.depth.window is not None:
        return settings.depth.window
    if volume.window is not None:
        return volume.window
    step = max(1, int(np.ceil((volume.values.size / (1 << 18)) ** (1 / 3))))
    lo, hi = (float(v) for v in np.percentile(volume.values[::step, ::step, ::step], (1.0, 99.0)))
    return (lo + hi) / 2.0, (hi - lo) if hi > lo else 1.0


class VolumeStep:
    """Explain one volume and write its files; returns its record (an error record for a bad input)."""

    def __init__(self, vm: VolumeModel, settings: RunSettings, out_dir: pathlib.Path):
        from gradcam_cli.engine.volume import VolumeExplainer

        self.vm, self.settings, self.out_dir = vm, settings, out_dir
        t = settings.targets
        classes = [vm.names.resolve(c, vm.split.num_classes) for c in t.classes] or None
        self.by_class = classes is not None
        self.n = len(classes) if classes else min(t.top, vm.split.num_classes)
        self.explainer = VolumeExplainer(vm.split, top=None if classes else t.top, classes=classes,
                                         method=settings.methods, options=settings.method_options)

    def __call__(self, ref: InputRef) -> dict:
        try:
            volume = read_volume(ref.path)
            x = model_input(volume, self.vm, self.settings, ref.path)
        except ImageError as exc:
            where = "" if exc.path == ref.path else f"slice {os.path.basename(exc.path)}: "  # a series' file
            return {"path": ref.path, "status": "error", "kind": exc.kind, "message": where + exc.message}
        out = self.explainer(x)
        return self.write(ref, volume, out)

    def write(self, ref: InputRef, volume: Volume, out) -> dict:
        from gradcam_cli.io.depth import windowed
        from gradcam_cli.render.montage import montage_png, slices_gif
        from gradcam_cli.render.overlay import colormap_id

        o = self.settings.outputs
        grid = volume.values.shape[:3]
        shown = volume.values if volume.values.ndim == 3 else volume.values[..., 0]
        window = view_window(volume, self.settings)
        view = np.empty(shown.shape, np.uint8)
        for k in range(shown.shape[2]):  # slice by slice: no float64 copy of the whole volume
            view[:, :, k] = np.rint(windowed(shown[:, :, k], window))
        if volume.invert:  # MONOCHROME1: the view inverted, as a single file's
            np.subtract(255, view, out=view)
        colormap = colormap_id(o.overlay.colormap)
        predictions = []
        for j in range(self.n):
            c = int(out.classes[0, j])
            label = self.vm.names.label(c)
            base = map_name(ref.out_stem, label, j + 1, j + 1, self.n, self.by_class)
            files = {}
            for m, method in enumerate(self.settings.methods):
                name = f"{base}.{method}" if len(self.settings.methods) > 1 else base
                cam = upsample_trilinear(out.method_maps[0, j, m], grid)
                writers.write_nifti(self.out_dir / f"{name}.nii.gz", cam, volume.affine, volume.header)
                writers.write_bytes(self.out_dir / f"{name}.montage.png",
                                    montage_png(view, cam, alpha=o.overlay.alpha, colormap=colormap))
                writers.write_bytes(self.out_dir / f"{name}.gif",
                                    slices_gif(view, cam, f"{label} {method}", alpha=o.overlay.alpha,
                                               colormap=colormap))
                peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
                files[method] = {"nifti": f"{name}.nii.gz", "montage": f"{name}.montage.png", "gif": f"{name}.gif",
                                 "peak_voxel": [int(v) for v in peak]}
            predictions.append({"rank": j + 1, "class_index": c, "label": label,
                                "probability": float(out.probs[0, c]), "score": float(out.scores[0, c]),
                                "maps": files})
        return {"path": ref.path, "status": "ok", "volume": volume.info, "map_shape": list(out.method_maps.shape[3:]),
                "predictions": predictions}


def record_files(record: dict) -> list[str]:
    return [name for entry in record.get("predictions") or [] for files in entry.get("maps", {}).values()
            for key, name in files.items() if key != "peak_voxel"]


def _complete(record: dict, out_dir: pathlib.Path) -> bool:
    return record.get("status") == "ok" and all((out_dir / name).is_file() for name in record_files(record))


def volume_journal(vm: VolumeModel, settings: RunSettings, options: RunOptions, *,
                   on_record: Callable[[dict], None] | None = None, total: int = 0) -> RunJournal:
    """The run journal of a volume run (either engine): records keyed by path, complete when every file is there."""
    names = result_names(options.shard)
    part = None if options.shard is None else f"{options.shard[0]}-of-{options.shard[1]}"
    return RunJournal(options.out_dir, JournalFiles(names[JSON_NAME], names[JSONL_NAME], names[RUN_FILE]),
                      volume_recorded(vm, settings), resume=options.resume, complete=_complete, files=record_files,
                      part=part, on_record=on_record, total=total)


def volume_recorded(vm: VolumeModel, settings: RunSettings) -> dict:
    """The settings a volume run's file records, with what the ``auto`` options resolved to at its layer."""
    return {**settings.to_json(), "model.backbone": "volume", "volumes": True,
            **settings.method_options.resolved(vm.split.transformer, masks_input(settings.methods))}


def volume_header(vm: VolumeModel, settings: RunSettings) -> Callable:
    """The ``predictions.json`` header of a volume run, for :meth:`RunJournal.finish`."""
    def header(counts, records) -> dict:
        split = vm.split
        return {"tool": "gradcam-cli", "version": __version__, "model": settings.model.model,
                "target_layer": split.layer_name, "target_layer_shape": list(split.feature_shape),
                "input_shape": [n for n in vm.size] + [vm.channels], "head": split.head_type,
                "method": list(settings.methods), "options": volume_recorded(vm, settings),
                "summary": {"images": counts.records, "done": counts.done, "failed": counts.failed}}

    return header


def run_volumes(vm: VolumeModel, refs: Sequence[InputRef], settings: RunSettings, options: RunOptions, *,
                on_record: Callable[[dict], None] | None = None, stop: Any = None):
    """Explain every volume into ``options.out_dir``; returns the journal's summary."""
    step = VolumeStep(vm, settings, pathlib.Path(options.out_dir))
    with volume_journal(vm, settings, options, on_record=on_record, total=len(refs)) as journal:
        for ref in refs:
            if stop is not None and getattr(stop, "signum", None) is not None:
                break
            kept = journal.lookup(ref.key)
            journal.add(kept if kept is not None else step(ref))
        return journal.finish(refs, volume_header(vm, settings))
