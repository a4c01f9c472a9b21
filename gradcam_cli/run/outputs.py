"""Output plug-ins: what is written for each explained image.

An output gets one :class:`ImageResult` (the original image, its maps, the names
of its maps' files and the record being built), writes its files through
:mod:`gradcam_cli.io.writers`, and notes them in the record. It declares the
files a record says it wrote (:meth:`Output.files`), so ``--resume`` can check
that an image is complete. Adding an output adds a class here, not a parameter
to the per-image writer.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from gradcam_cli.engine.cam import Explanation


@dataclass
class ImageResult:
    """One explained image, as the outputs see it."""

    image: np.ndarray  # original resolution, RGB uint8
    explanation: Explanation
    names: list[str]  # per map: the base name of its files, relative to the output folder (no extension)
    entries: list[dict]  # per map: its entry in the record's "predictions" (outputs add file fields)
    record: dict  # the image's record (outputs may add image-level fields)


class Output:
    """Base class. ``key``: the record field naming the file (per map, or per image)."""

    key: str = ""
    per_map: bool = True

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        raise NotImplementedError

    def files(self, record: dict) -> list[str]:
        """The files (relative to the output folder) that ``record`` says this output wrote;
        a missing field counts as a missing file."""
        holders = record.get("predictions", []) if self.per_map else [record]
        return [holder.get(self.key, "") for holder in holders]

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

        pictures = overlays(result.image, result.explanation.maps, alpha=self.alpha, colormap=self.colormap)
        for name, entry, picture in zip(result.names, result.entries, pictures):
            writers.write_bytes(out_dir / f"{name}.jpg", encode_jpeg(picture, self.quality))
            entry[self.key] = f"{name}.jpg"

    def file_complete(self, path: pathlib.Path) -> bool:
        return jpeg_complete(path)


class RawOutput(Output):
    """Each map as float32 ``.npy`` at the target layer's resolution (``raw``)."""

    key = "raw"

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        from gradcam_cli.io import writers

        for name, entry, raw in zip(result.names, result.entries, result.explanation.maps):
            writers.write_npy(out_dir / f"{name}.npy", raw)
            entry[self.key] = f"{name}.npy"


def outputs_for(settings: Any) -> list[Output]:
    """The outputs a run's settings ask for, in the order they write."""
    outputs: list[Output] = [OverlayOutput(settings.alpha, settings.colormap, settings.quality)]
    if settings.save_raw:
        outputs.append(RawOutput())
    return outputs


def record_complete(record: dict, outputs: Sequence[Output], out_dir: pathlib.Path) -> bool:
    """An ``ok`` record whose every output file is there and whole (``--threshold`` may have kept no
    label: an empty ``predictions`` list is complete, with no file to check)."""
    if record.get("status") != "ok" or not isinstance(record.get("predictions"), list):
        return False
    return all(output.complete(record, out_dir) for output in outputs)
