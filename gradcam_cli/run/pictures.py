"""After a run: its grids and GIFs, made from the files it wrote, without the model (``gradcam pictures``).

Per image, from its record in ``predictions.json``:

- its ``--save-raw`` maps and its original image, when both are there: the overlays are drawn
  again exactly as the run drew them (its alpha, colormap, boxes, ``--overlay-max-side``, the
  upsampling of its header's ``geometry``, a grey model's grey picture), so the grid and GIF
  are what ``explain --grid --gif`` writes;
- else its overlay JPEGs and its original: the overlays, decoded (the strips of ``--caption`` /
  ``--colorbar`` cut off), are the tiles and frames, one JPEG generation further from the maps.

An image whose original cannot be read, or that has neither maps nor overlays, is passed over
with one warning; the others go on. The grid and GIF outputs of :mod:`gradcam_cli.run.outputs`
write the files (atomically, through :mod:`gradcam_cli.io.writers`). ``predictions.json`` is
read, never changed.
"""

from __future__ import annotations

import copy
import pathlib
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from gradcam_cli.errors import ImageError, InputError
from gradcam_cli.io import writers
from gradcam_cli.results import Explanation
from gradcam_cli.run.merge import load_predictions
from gradcam_cli.run.naming import JSON_NAME
from gradcam_cli.run.outputs import GUIDED, GifOutput, GridOutput, ImageResult, OverlayOutput, Output, plural
from gradcam_cli.settings import RunSettings

_SHARD_FILE = re.compile(r"^predictions\.(\d+-of-\d+)\.json$")


@dataclass(frozen=True)
class PictureRequest:
    """What to add: a grid and / or a GIF, their settings (None: the run's), the pictures' long side."""

    grid: bool = False
    gif: bool = False
    columns: int | None = None
    tile: int | None = None
    ms: int | None = None
    max_side: int | None = None  # None: the run's --overlay-max-side


@dataclass
class PictureSummary:
    images: int = 0  # records in the predictions file
    from_maps: int = 0  # images whose pictures were drawn from their maps
    from_overlays: int = 0  # from their overlay JPEGs
    skipped: int = 0  # passed over with a warning
    failed_in_run: int = 0  # error records: nothing to draw
    files: list[str] = field(default_factory=list)


def run_settings(document: dict, path: pathlib.Path) -> RunSettings:
    """The settings a predictions document's header records; InputError when it records none or
    ones this version does not know."""
    options = document.get("options")
    if not isinstance(options, dict) or not isinstance(document.get("input_size"), list):
        raise InputError(f"{path} records no run settings (written by an older gradcam-cli?): rerun `gradcam "
                         "explain` with --grid / --gif instead")
    try:
        return RunSettings.from_json({k: v for k, v in options.items() if k not in ("batch_size", "shard", "centred", "masked_toward")})
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path} was written by another version of gradcam-cli ({exc}); rerun `gradcam explain` "
                         "with --grid / --gif, or use that version") from None


def picture_outputs(settings: RunSettings, request: PictureRequest) -> tuple[OverlayOutput, list[Output]]:
    """The run's overlay (as it drew them, at ``request.max_side`` when given) and the asked outputs."""
    o = settings.outputs
    side = o.overlay.max_side if request.max_side is None else request.max_side
    overlay = OverlayOutput(o.overlay.alpha, o.overlay.colormap, o.overlay.quality, boxes=o.boxes.enabled,
                            max_side=side, enabled=False)
    outputs: list[Output] = []
    if request.grid:
        outputs.append(GridOutput(overlay, request.columns or o.grid.columns, request.tile or o.grid.tile,
                                  o.overlay.quality))
    if request.gif:
        outputs.append(GifOutput(overlay, request.ms or o.gif.ms))
    return overlay, outputs


def _files(entry: dict, key: str, methods: list[str], several: bool) -> list[str] | None:
    """An entry's file for ``key`` (``raw``, ``overlay``) of each method, or None when one is not named."""
    found = [(entry.get(plural(key)) or {}).get(m) if several else entry.get(key) for m in methods]
    return None if not all(isinstance(f, str) and f for f in found) else found


def image_stem(record: dict, methods: list[str], several: bool) -> str | None:
    """The image's output stem (``cats/chelsea``): from its grid or GIF, else its first map's file name
    (``STEM.top1-LABEL[.METHOD].EXT``; a label holds no dot)."""
    for key, suffix in (("grid", ".grid.jpg"), ("gif", ".gif")):
        if str(record.get(key, "")).endswith(suffix):
            return record[key][: -len(suffix)]
    for entry in record.get("predictions") or []:
        for key in ("raw", "overlay"):
            files = _files(entry, key, methods, several)
            if files:
                base = files[0].rsplit(".", 1)[0]
                base = base[: -len(methods[0]) - 1] if several else base
                return base.rsplit(".", 1)[0]
    return None


class PictureMaker:
    """Makes one image's grid and GIF from a run's files (see the module docstring)."""

    def __init__(self, out_dir: pathlib.Path, document: dict, settings: RunSettings, request: PictureRequest,
                 warn: Callable[[str], None] = lambda line: None):
        from gradcam_cli.cam import upsampler_of
        from gradcam_cli.models.geometry import geometry_from_json
        from gradcam_cli.render.resample import upsample_linear
        from gradcam_cli.run.step import decode_floor

        self.out_dir, self.settings, self.warn = out_dir, settings, warn
        self.overlay, self.outputs = picture_outputs(settings, request)
        self.floor = decode_floor(self.outputs, tuple(document["input_size"]))
        geometry = document.get("geometry")
        self.upsample = upsampler_of(geometry_from_json(geometry)) if geometry else upsample_linear
        self.grey = (document.get("preprocessing") or {}).get("channels") == 1
        self.methods = list(settings.methods)
        self.heat = [m for m in self.methods if m != GUIDED] or ["gradcam"]  # outputs.heat_maps' rule
        self.several = len(self.methods) > 1

    def original(self, record: dict) -> np.ndarray:
        """The image as the run decoded it for its pictures (ImageError when it cannot be read)."""
        from gradcam_cli.io.images import decode_sized
        from gradcam_cli.io.preprocess import grey

        limit = {"max_pixels": self.settings.max_pixels} if self.settings.max_pixels else {}
        image, _ = decode_sized(record["path"], at_least=self.floor, notes=[], **limit)
        return grey(image) if self.grey else image

    def maps(self, entries: list[dict]) -> dict[str, np.ndarray] | None:
        """Each heat method's saved maps (N, h, w) float32, or None when one is missing or unreadable."""
        found: dict[str, list] = {m: [] for m in self.heat}
        for entry in entries:
            files = _files(entry, "raw", self.heat, self.several)
            if files is None:
                return None
            for method, name in zip(self.heat, files):
                try:
                    cam = np.load(self.out_dir / name, allow_pickle=False)
                except (OSError, ValueError, EOFError):
                    return None
                if cam.ndim != 2:
                    return None
                found[method].append(cam.astype(np.float32, copy=False))
        return {m: np.stack(maps) if maps else np.zeros((0, 1, 1), np.float32) for m, maps in found.items()}

    def overlays(self, entries: list[dict], size: tuple[int, int], base: np.ndarray) -> dict | None:
        """Each heat method's overlay JPEGs (BGR, cut to the run's overlay ``size`` and brought to
        ``base``'s), or None when one is missing or unreadable."""
        from gradcam_cli.io.images import decode
        from gradcam_cli.io.preprocess import resize

        found: dict[str, list] = {m: [] for m in self.heat}
        for entry in entries:
            files = _files(entry, "overlay", self.heat, self.several)
            if files is None:
                return None
            for method, name in zip(self.heat, files):
                try:
                    picture = decode(str(self.out_dir / name))[: size[0], : size[1]]
                except ImageError:
                    return None
                picture = resize(np.ascontiguousarray(picture), base.shape[:2])
                found[method].append(np.ascontiguousarray(picture[..., ::-1]))
        return found

    def __call__(self, record: dict) -> tuple[str, list[str]]:
        """Write one ``ok`` record's pictures; (how: ``maps`` or ``overlays``, the files written).
        Raises :class:`InputError` saying why an image is passed over."""
        entries = copy.deepcopy(record.get("predictions") or [])
        if not entries:
            raise InputError("no class was kept for it (--threshold): no map to show")
        stem = image_stem(record, self.heat, self.several)
        if stem is None:
            raise InputError("its record names no map file to place its pictures by")
        try:
            image = self.original(record)
        except ImageError as exc:
            raise InputError(f"its original (the first tile and frame) cannot be read: {exc.message}") from None
        full = (int(record["height"]), int(record["width"]))
        maps = self.maps(entries)
        result = ImageResult(image, self._explanation(maps), [], entries, copy.deepcopy(record), stem=stem,
                             upsample=self.upsample, size=full)
        how = "maps"
        if maps is None:
            width, height = record.get("overlay_size") or [full[1], full[0]]
            result.pictures = self.overlays(entries, (height, width), self.overlay.base(result))
            if result.pictures is None:
                raise InputError("neither its --save-raw maps nor its overlays are in the folder")
            how = "overlays"
            if self.settings.outputs.raw:
                self.warn(f"{record['path']}: its --save-raw maps are not all in the folder: its tiles are its "
                          "overlay JPEGs")
        for output in self.outputs:
            output.write(result, self.out_dir)
        return how, [result.record[output.key] for output in self.outputs]

    def _explanation(self, maps: dict[str, np.ndarray] | None) -> Explanation:
        """An explanation holding the maps under every method of the run (``guided`` too, as in a run:
        its slot is never drawn), so the outputs name and title the tiles as the run did."""
        first = next(iter(maps.values())) if maps else np.zeros((0, 1, 1), np.float32)
        by_method = {m: (maps or {}).get(m, first) for m in self.methods}
        return Explanation(predictions=[], maps=first, probabilities=np.zeros(0, np.float32),
                           maps_by_method=by_method)


def open_run(out_dir, predictions: str = JSON_NAME) -> tuple[dict, RunSettings]:
    """A finished run's predictions document and settings; InputError (one line) when it is missing,
    not a run's, or kept nothing to draw pictures from."""
    out = pathlib.Path(out_dir)
    document = load_predictions(out, predictions)
    settings = run_settings(document, out / predictions)
    o = settings.outputs
    if (not o.raw and not o.overlay.enabled) or all(m == GUIDED for m in settings.methods):
        raise InputError(f"the run in {out} kept neither its maps (--save-raw) nor overlays: nothing to draw the "
                         "pictures from; rerun `gradcam explain` with --grid / --gif")
    return document, settings


def add_pictures(out_dir, document: dict, settings: RunSettings, request: PictureRequest,
                 predictions: str = JSON_NAME, warn: Callable[[str], None] = lambda line: None,
                 progress: Callable[[int], None] = lambda n: None) -> PictureSummary:
    """Write the grid and / or GIF of every explained image of the run in ``out_dir`` (see the module
    docstring; ``document`` and ``settings`` from :func:`open_run`, ``predictions`` the file's
    name); ``warn(line)`` for each image passed over or drawn from its overlays although the run
    saved maps, ``progress(1)`` after each record. Holds the folder's lock while it writes."""
    out = pathlib.Path(out_dir)
    maker = PictureMaker(out, document, settings, request, warn)
    summary = PictureSummary(images=len(document["images"]))
    shard = _SHARD_FILE.match(predictions)
    with writers.FolderLock(writers.check_writable(out), shard[1] if shard else None):
        for record in document["images"]:
            if not isinstance(record, dict) or record.get("status") != "ok":
                summary.failed_in_run += 1
            else:
                try:
                    how, files = maker(record)
                except InputError as exc:
                    summary.skipped += 1
                    warn(f"passed over {record.get('path')}: {exc}")
                else:
                    summary.files += files
                    summary.from_maps += how == "maps"
                    summary.from_overlays += how == "overlays"
            progress(1)
    return summary
