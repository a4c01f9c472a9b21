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
with one method it keeps the single ``"overlay": ...`` field. Boxes follow the same rule
(``"box"``, or ``"boxes": {method: box}``); grids and GIFs show every method's maps, method by
method, each titled with its method (a grid gives each method its own rows).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from gradcam_cli.render.resample import Upsampler, upsample_linear
from gradcam_cli.results import Explanation
from gradcam_cli.run.naming import gif_name, grid_name, method_name
from gradcam_cli.settings import OutputSettings, RunSettings

GUIDED = "guided"  # Guided Grad-CAM: an image at the input's resolution, not a heat map


@dataclass
class ImageResult:
    """One explained image, as the outputs see it."""

    image: np.ndarray  # original resolution, RGB uint8
    explanation: Explanation
    names: list[str]  # per map: the base name of its files, relative to the output folder (no extension)
    entries: list[dict]  # per map: its entry in the record's "predictions" (outputs add file fields)
    record: dict  # the image's record (outputs may add image-level fields)
    stem: str = ""  # the image's output stem (per-image files: ``stem.grid.jpg``)
    pictures: dict | None = None  # method -> its overlays (BGR uint8), once the overlay output has made them
    base: np.ndarray | None = None  # the image the overlays are drawn on (RGB uint8), once it is made
    upsample: Upsampler = upsample_linear  # how a map reaches the image (GradCAM.upsampler)
    size: tuple[int, int] | None = None  # the file's full (height, width): records and boxes are in its pixels


class Output:
    """Base class. ``key``: the record field naming the file (per map, or per image);
    ``plural(key)`` holds a dict method -> file when a run asks several methods."""

    key: str = ""
    per_map: bool = True

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        raise NotImplementedError

    def picture_side(self) -> int | None:
        """The longest side this output's pictures of an image need: 0 when it makes none from the
        image, None for the original size (the image is then decoded whole)."""
        return 0

    def files(self, record: dict) -> list[str]:
        """The files (relative to the output folder) that ``record`` says this output wrote;
        a missing field counts as a missing file."""
        holders = record.get("predictions", []) if self.per_map else [record]
        files: list[str] = []
        for holder in holders:
            several = holder.get(plural(self.key))
            files.extend(several.values() if isinstance(several, dict) and several else [holder.get(self.key, "")])
        return files

    def each_map(self, result: ImageResult, ext: str):
        """Per heat-map method and map: (the file's name, its map (h, w), the method, the map's
        position); each name is noted in the record. ``guided``'s map slot (the Grad-CAM it
        multiplies) is not a file of its own."""
        several = several_methods(result)
        for method, maps in heat_maps(result).items():
            for i, (name, entry, cam) in enumerate(zip(result.names, result.entries, maps)):
                file = f"{method_name(name, method, several)}.{ext}"
                note(entry, self.key, method, file, several)
                yield file, cam, method, i

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

    def __init__(self, alpha: float, colormap: str, quality: int, boxes: bool = False, max_side: int | None = None,
                 enabled: bool = True, caption: bool = False, colorbar: bool = False):
        from gradcam_cli.render.overlay import colormap_id

        self.alpha, self.colormap, self.quality, self.boxes = alpha, colormap_id(colormap), quality, boxes
        self.max_side, self.enabled, self.caption, self.colorbar = max_side, enabled, caption, colorbar

    def picture_side(self) -> int | None:
        return self.max_side if self.enabled else 0

    def base(self, result: ImageResult) -> np.ndarray:
        """The image the overlays are blended on, and the grid's and GIF's original: the decoded
        image, shrunk (area-averaged, by the model input's resize: within a grey level of one
        INTER_AREA on average, in half its time) to ``max_side`` on its long side when it is longer.
        Made once per image (kept in ``result.base``)."""
        from gradcam_cli.io.preprocess import resize

        if result.base is None:
            image = result.image
            height, width = image.shape[:2]
            if self.max_side is not None and max(height, width) > self.max_side:
                scale = self.max_side / max(height, width)
                image = resize(image, (max(1, round(height * scale)), max(1, round(width * scale))))
            result.base = image
        return result.base

    def tile(self, tile: int) -> int:
        """A grid's tile side: ``tile``, at most ``max_side`` (capped pictures are not upscaled)."""
        return tile if self.max_side is None else min(tile, self.max_side)

    def pictures(self, result: ImageResult) -> dict:
        """Each heat-map method's overlays (BGR, with its boxes when asked), made once per image and
        shared with the grid and GIF outputs."""
        from gradcam_cli.render.boxes import draw_box
        from gradcam_cli.render.detections import draw_detection
        from gradcam_cli.render.outline import draw_outline
        from gradcam_cli.render.overlay import overlays

        if result.pictures is None:
            base = self.base(result)
            full = result.size or result.image.shape[:2]
            sy, sx = base.shape[0] / full[0], base.shape[1] / full[1]
            result.pictures = {}
            for method, maps in heat_maps(result).items():
                pictures = overlays(base, maps, alpha=self.alpha, colormap=self.colormap, upsample=result.upsample)
                if self.boxes:
                    pictures = [draw_box(p, _scaled(box_of(e, method), sx, sy)) for p, e in zip(pictures,
                                                                                              result.entries)]
                if result.explanation.regions is not None:  # a segmentation target's regions
                    pictures = [draw_outline(p, r) for p, r in zip(pictures, result.explanation.regions)]
                if any("detection_box" in e for e in result.entries):  # a box target's detections
                    pictures = [draw_detection(p, _scaled_box(e.get("detection_box"), sx, sy),
                                               f"{e['label']} {e.get('score') or 0:.2f}")
                                for p, e in zip(pictures, result.entries)]
                result.pictures[method] = pictures
            if base.shape[:2] != tuple(full):
                result.record["overlay_size"] = [base.shape[1], base.shape[0]]
        return result.pictures

    def files(self, record: dict) -> list[str]:
        return super().files(record) if self.enabled else []

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        from gradcam_cli.io import writers
        from gradcam_cli.render.legend import decorated, overlay_caption
        from gradcam_cli.render.overlay import encode_jpeg

        if not self.enabled:
            return
        pictures = self.pictures(result)
        for file, _, method, i in self.each_map(result, "jpg"):
            picture = pictures[method][i]  # the grid's and GIF's tile: the strips go on the file only
            if self.caption or self.colorbar:
                picture = decorated(picture, overlay_caption(result.entries[i], method) if self.caption else None,
                                    self.colormap if self.colorbar else None)
            writers.write_bytes(out_dir / file, encode_jpeg(picture, self.quality))

    def file_complete(self, path: pathlib.Path) -> bool:
        return jpeg_complete(path)


class RawOutput(Output):
    """Each map as float32 ``.npy`` at the target layer's resolution (``raw``)."""

    key = "raw"

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        from gradcam_cli.io import writers

        for file, raw, _, _ in self.each_map(result, "npy"):
            writers.write_npy(out_dir / file, raw)


class GuidedOutput(Output):
    """Guided Grad-CAM at the model input's resolution, one PNG per map (``guided``)."""

    key = GUIDED

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        from gradcam_cli.io import writers
        from gradcam_cli.render.channels import deprocess
        from gradcam_cli.render.overlay import encode_png

        several = len(result.explanation.maps_by_method) > 1
        for name, entry, image in zip(result.names, result.entries, result.explanation.guided):
            file = f"{method_name(name, GUIDED, several)}.png"
            writers.write_bytes(out_dir / file, encode_png(deprocess(image, nearest=True)))
            entry[self.key] = file


class BoxOutput(Output):
    """The Grad-CAM paper's localisation box of each map, in original pixels (``box``, or ``boxes``
    by method; no file). Runs before the overlays, which draw it."""

    key = "box"

    def __init__(self, threshold: float):
        self.threshold = threshold

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        from gradcam_cli.render.boxes import map_box

        size = result.size or result.image.shape[:2]
        several = several_methods(result)
        for method, maps in heat_maps(result).items():
            for entry, cam in zip(result.entries, maps):
                note(entry, self.key, method, map_box(cam, size, self.threshold, upsample=result.upsample), several)

    def files(self, record: dict) -> list[str]:
        return []

    def complete(self, record: dict, out_dir: pathlib.Path) -> bool:
        return all(self.key in entry or plural(self.key) in entry for entry in record.get("predictions", []))


class GridOutput(Output):
    """One JPEG per image: the original alone in the first row, then a row (or rows, past ``columns``
    maps) per method of its maps' overlays, titled (``grid``)."""

    key = "grid"
    per_map = False

    def __init__(self, overlay: OverlayOutput, columns: int, tile: int, quality: int):
        self.overlay, self.columns, self.tile, self.quality = overlay, columns, tile, quality

    def picture_side(self) -> int | None:
        return self.overlay.max_side  # its tiles are the overlays

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        from gradcam_cli.io import writers
        from gradcam_cli.render.grid import grid_image, tile_title
        from gradcam_cli.render.overlay import encode_jpeg

        several = several_methods(result)
        tiles, titles, groups = [], [], []
        for method, pictures in self.overlay.pictures(result).items():
            tiles += pictures
            titles += [tile_title(entry, method if several else None) for entry in result.entries]
            groups.append(len(pictures))
        picture = grid_image(self.overlay.base(result), tiles, titles, columns=self.columns,
                             tile=self.overlay.tile(self.tile), groups=groups)
        name = grid_name(result.stem)
        writers.write_bytes(out_dir / name, encode_jpeg(np.ascontiguousarray(picture[..., ::-1]), self.quality))
        result.record[self.key] = name

    def file_complete(self, path: pathlib.Path) -> bool:
        return jpeg_complete(path)


class GifOutput(Output):
    """One animated GIF per image: original -> each method's overlay of each map, captioned, looping (``gif``)."""

    key = "gif"
    per_map = False

    def __init__(self, overlay: OverlayOutput, ms: int):
        self.overlay, self.ms = overlay, ms

    def picture_side(self) -> int | None:
        return self.overlay.max_side  # its frames are the overlays

    def write(self, result: ImageResult, out_dir: pathlib.Path) -> None:
        from gradcam_cli.io import writers
        from gradcam_cli.render.gif import gif_bytes

        several = several_methods(result)
        frames, captions = [self.overlay.base(result)], ["original"]  # the overlays' size
        for method, pictures in self.overlay.pictures(result).items():
            frames += [np.ascontiguousarray(p[..., ::-1]) for p in pictures]
            captions += [_caption(entry, method if several else None) for entry in result.entries]
        name = gif_name(result.stem)
        writers.write_bytes(out_dir / name, gif_bytes(frames, captions, ms=self.ms))
        result.record[self.key] = name


def _scaled(box: list | None, sx: float, sy: float) -> list | None:
    """A box in full-image pixels, in the pixels of a picture scaled by (sx, sy)."""
    if box is None or (sx == 1 and sy == 1):
        return box
    return [int(box[0] * sx), int(box[1] * sy), max(int(box[0] * sx) + 1, round(box[2] * sx)),
            max(int(box[1] * sy) + 1, round(box[3] * sy))]


def _caption(entry: dict, method: str | None = None) -> str:
    score = f"p {entry['probability']:.3f}" if "probability" in entry else f"value {entry.get('value', 0):.3g}"
    caption = f"{entry['rank']}. {entry['label']} ({entry['class_index']}) {score}"
    return f"{caption} · {method}" if method else caption


def several_methods(result: ImageResult) -> bool:
    """Does the run ask more than one method (files and titles then name the method)?"""
    return len(result.explanation.maps_by_method) > 1


def heat_maps(result: ImageResult) -> dict[str, np.ndarray]:
    """The heat-map methods' maps, in the asked order: every method but ``guided`` (whose slot
    holds the Grad-CAM it multiplies; a run of ``guided`` alone shows those Grad-CAM maps)."""
    by_method = result.explanation.maps_by_method
    heat = {method: maps for method, maps in by_method.items() if method != GUIDED}
    return heat or {"gradcam": result.explanation.maps}


def note(entry: dict, key: str, method: str, value: Any, several: bool) -> None:
    """``entry[key] = value`` for a one-method run, ``entry[plural(key)][method] = value`` for several."""
    if several:
        entry.setdefault(plural(key), {})[method] = value
    else:
        entry[key] = value


def plural(key: str) -> str:
    """The record field of a per-method dict: ``overlays``, ``raws``, ``boxes``."""
    return f"{key}es" if key.endswith("x") else f"{key}s"


def _scaled_box(box: list | None, sx: float, sy: float) -> list | None:
    """A detection's [x0, y0, x1, y1] (original pixels, floats) in a picture scaled by ``sx``, ``sy``."""
    return None if box is None else [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


def box_of(entry: dict, method: str) -> list | None:
    """A map's box for ``method`` from its entry (either form of :func:`note`)."""
    boxes = entry.get("boxes")
    return boxes.get(method) if isinstance(boxes, dict) else entry.get("box")


def outputs_for(settings: RunSettings) -> list[Output]:
    """The outputs a run's settings ask for, in the order they write (boxes before the overlays
    that draw them; grid and GIF reuse the overlays)."""
    o: OutputSettings = settings.outputs
    heat_maps = any(m != GUIDED for m in settings.methods)
    overlay = OverlayOutput(o.overlay.alpha, o.overlay.colormap, o.overlay.quality, boxes=o.boxes.enabled,
                            max_side=o.overlay.max_side, enabled=o.overlay.enabled and heat_maps,
                            caption=o.overlay.caption, colorbar=o.overlay.colorbar)
    outputs: list[Output] = [BoxOutput(o.boxes.threshold)] if o.boxes.enabled else []
    outputs.append(overlay)
    if o.raw and heat_maps:
        outputs.append(RawOutput())
    if GUIDED in settings.methods:
        outputs.append(GuidedOutput())
    if o.grid.enabled:
        outputs.append(GridOutput(overlay, o.grid.columns, o.grid.tile, o.overlay.quality))
    if o.gif.enabled:
        outputs.append(GifOutput(overlay, o.gif.ms))
    return outputs


def record_complete(record: dict, outputs: Sequence[Output], out_dir: pathlib.Path) -> bool:
    """An ``ok`` record whose every output file is there and whole (``--threshold`` may have kept no
    label: an empty ``predictions`` list is complete, with no file to check)."""
    if record.get("status") != "ok" or not isinstance(record.get("predictions"), list):
        return False
    return all(output.complete(record, out_dir) for output in outputs)
