"""Output plug-ins: what is written for each explained image.

An output gets one :class:`ImageResult` (the original image, its maps, the names
of its maps' files and the record being built), writes its files through
:mod:`gradcam_cli.io.writers`, and notes them in the record. It declares the
files a record says it wrote (:meth:`Output.files`), so ``--resume`` can check
that an image is complete. Adding an output adds a class here, not a parameter
to the per-image writer.

Several methods in one run (``Explanation.maps_by_method`` holds more than one):
a per-map output writes one file per method, named ``NAME.METHOD.ext``, and notes
them as a dict under its plural key, ``"overlays": {"gradcam": ..., "layercam": ...}``;
with one method it keeps the single ``"overlay": ...`` field.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from gradcam_cli.engine.cam import Explanation
from gradcam_cli.run.naming import method_name

GUIDED = "guided"  # Guided Grad-CAM: an image at the input's resolution, not a heat map


@dataclass
class ImageResult:
    """One explained image, as the outputs see it."""

    image: np.ndarray  # original resolution, RGB uint8
    explanation: Explanation
    names: list[str]  # per map: the base name of its files, relative to the output folder (no extension)
    entries: list[dict]  # per map: its entry in the record's "predictions" (outputs add file fields)
    record: dict  # the image's record (outputs may add image-level fields)


class Output:
    """Base class. ``key``: the record field naming the file (per map, or per image);
    ``key + "s"`` holds a dict method -> file when a run asks several methods."""

    key: str = ""
    per_map: bool = True

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        raise NotImplementedError

    def files(self, record: dict) -> list[str]:
        """The files (relative to the output folder) that ``record`` says this output wrote;
        a missing field counts as a missing file."""
        holders = record.get("predictions", []) if self.per_map else [record]
        files: list[str] = []
        for holder in holders:
            several = holder.get(f"{self.key}s")
            files.extend(several.values() if isinstance(several, dict) and several else [holder.get(self.key, "")])
        return files

    def each_map(self, result: ImageResult, ext: str):
        """Per map and heat-map method: (the file's name, its map (h, w)); each name is noted in the
        record. ``guided``'s map slot (the Grad-CAM it multiplies) is not a file of its own."""
        by_method = result.explanation.maps_by_method
        several = len(by_method) > 1
        for method, maps in by_method.items():
            if method == GUIDED:
                continue
            for name, entry, cam in zip(result.names, result.entries, maps):
                file = f"{method_name(name, method, several)}.{ext}"
                if several:
                    entry.setdefault(f"{self.key}s", {})[method] = file
                else:
                    entry[self.key] = file
                yield file, cam

    def file_complete(self, path: pathlib.Path) -> bool:
        return path.is_file()

    def complete(self, record: dict, out_dir: pathlib.Path) -> bool:
        return all(name and self.file_complete(out_dir / name) for name in self.files(record))


def jpeg_complete(path: pathlib.Path) -> bool:
    """A JPEG that starts with SOI and ends with EOI (written whole)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
            handle.seek(-2, 2)
            return head == b"\xff\xd8" and handle.read(2) == b"\xff\xd9"
    except OSError:
        return False


class OverlayOutput(Output):
    """The heatmap blended over the original image, one JPEG per map (``overlay``)."""

    key = "overlay"

    def __init__(self, alpha: float, colormap: str, quality: int):
        from gradcam_cli.render.overlay import colormap_id

        self.alpha, self.colormap, self.quality = alpha, colormap_id(colormap), quality

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        from gradcam_cli.io import writers
        from gradcam_cli.render.overlay import encode_jpeg, overlays

        for file, cam in self.each_map(result, "jpg"):
            [picture] = overlays(result.image, cam[None], alpha=self.alpha, colormap=self.colormap)
            writers.write_bytes(out_dir / file, encode_jpeg(picture, self.quality))

    def file_complete(self, path: pathlib.Path) -> bool:
        return jpeg_complete(path)


class RawOutput(Output):
    """Each map as float32 ``.npy`` at the target layer's resolution (``raw``)."""

    key = "raw"

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        from gradcam_cli.io import writers

        for file, raw in self.each_map(result, "npy"):
            writers.write_npy(out_dir / file, raw)


class GuidedOutput(Output):
    """Guided Grad-CAM at the model input's resolution, one PNG per map (``guided``)."""

    key = GUIDED

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        from gradcam_cli.io import writers
        from gradcam_cli.render.overlay import encode_png, guided_bgr

        several = len(result.explanation.maps_by_method) > 1
        for name, entry, image in zip(result.names, result.entries, result.explanation.guided):
            file = f"{method_name(name, GUIDED, several)}.png"
            writers.write_bytes(out_dir / file, encode_png(guided_bgr(image)))
            entry[self.key] = file


def outputs_for(settings: Any) -> list[Output]:
    """The outputs a run's settings ask for, in the order they write."""
    outputs: list[Output] = []
    if any(m != GUIDED for m in settings.methods):  # heat maps to overlay
        outputs.append(OverlayOutput(settings.alpha, settings.colormap, settings.quality))
        if settings.save_raw:
            outputs.append(RawOutput())
    if GUIDED in settings.methods:
        outputs.append(GuidedOutput())
    return outputs


def record_complete(record: dict, outputs: Sequence[Output], out_dir: pathlib.Path) -> bool:
    """An ``ok`` record whose every output file is there and whole."""
    if record.get("status") != "ok" or not record.get("predictions"):
        return False
    return all(output.complete(record, out_dir) for output in outputs)
