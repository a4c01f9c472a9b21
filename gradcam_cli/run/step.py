"""The per-batch step: decoded images in, records and written files out.

:class:`BatchStep` is resolved once per run (model, targets, outputs); calling it
on a list of :class:`Item` explains the batch in one compiled call and writes
every output of every image. The folder runner calls it with a thread pool's
``submit`` so that writing overlaps with the next batch; ``evaluate`` and the
Ray engine call it plainly and get the records back.
"""

from __future__ import annotations

import math
import pathlib
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from gradcam_cli.errors import ImageError
from gradcam_cli.methods import get_method
from gradcam_cli.run.naming import map_name
from gradcam_cli.results import Explanation, Prediction
from gradcam_cli.run.outputs import ImageResult, Output, outputs_for
from gradcam_cli.settings import DepthSettings, RunSettings

if TYPE_CHECKING:
    from gradcam_cli.config.profiles import Profile
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.io.discover import InputRef


@dataclass(frozen=True)
class Item:
    """One decoded image, ready for the model."""

    ref: InputRef  # .path (as given), .out_stem (unique relative output stem), .frame (a DICOM stack's)
    image: np.ndarray  # original resolution, RGB uint8 (a grey model's: its grey, three equal channels;
    #                    a full-depth input's: its windowed 8-bit view)
    model_input: np.ndarray  # resized and normalised: float32 (H, W, C), C = profile.channels
    true_class: int | None = None  # test-set mode: its true label's class index
    size: tuple[int, int] | None = None  # the file's full (height, width) when ``image`` was decoded reduced
    pixels: np.ndarray | None = None  # the model input before normalising: RGB uint8 (H, W, 3); a full-depth
    #                                   input's: float32 on the model's scale (io/depth.py), three equal channels
    warnings: tuple[str, ...] = ()  # what the decoder warned (libjpeg's "Corrupt JPEG data: ...")
    full_depth: dict | None = None  # a full-depth input's record fields (format, modality, geometry, window)

    @property
    def full_size(self) -> tuple[int, int]:
        return tuple(self.size) if self.size is not None else self.image.shape[:2]


def _entry(prediction: Prediction, head_type: str) -> dict:
    """A prediction as the record lists it; a regression (linear) output's score is a ``value``,
    not a probability."""
    entry = asdict(prediction)
    if head_type == "linear":
        entry["value"] = entry.pop("probability")
    return entry


def error_record(path: str, exc: ImageError, frame: int | None = None) -> dict:
    return {"path": path, **({} if frame is None else {"frame": frame}), "status": "error", "kind": exc.kind,
            "message": exc.message}


def decode_item(ref: InputRef, profile: Profile, max_pixels: int | None = None, true_class: int | None = None,
                at_least: Callable | None = None, depth: DepthSettings | None = None) -> Item | dict:
    """Decode, resize and normalise one image (in an I/O thread); an error record if it cannot be used.
    ``at_least`` (:func:`decode_floor`) sizes only ``Item.image``, the pictures' decode: the model
    input always comes from the decode reduced to the model input
    (:func:`gradcam_cli.io.images.decode_pair`), so no picture option changes what the model sees.
    A DICOM file, and a grey PNG / TIFF of more than 8 bits, is kept at full depth
    (:func:`full_depth_item`, ``depth``: its intensity rule and view window)."""
    from gradcam_cli.io import depth as full, dicom, images, volume

    limit = {"max_pixels": max_pixels} if max_pixels else {}
    notes: list = []
    try:
        if ref.frame is not None and depth is not None and depth.slice_axis is not None and volume.is_nifti(ref.path):
            return full_depth_item(ref, volume.slice_scan(ref.path, depth.slice_axis, ref.frame), profile, depth,
                                   true_class)
        if dicom.is_dicom(ref.path):
            read = dicom.read_dicom(ref.path, ref.frame, **limit)
            if isinstance(read, full.Scan):
                return full_depth_item(ref, read, profile, depth, true_class)
            return _item(ref, read, read, None, profile, true_class, ())  # 8-bit colour
        scan = full.read_depth(ref.path, max_pixels or images.DEFAULT_MAX_PIXELS) \
            if full.depth_candidate(ref.path) else None
        if scan is not None:
            return full_depth_item(ref, scan, profile, depth, true_class)
        image, small, size = images.decode_pair(ref.path, at_least=at_least, model=tuple(profile.input_size),
                                                notes=notes, **limit)
    except ImageError as exc:
        return error_record(ref.path, exc, ref.frame)
    return _item(ref, image, small, size, profile, true_class, tuple(notes))


def full_depth_item(ref: InputRef, scan, profile: Profile, depth: DepthSettings | None = None,
                    true_class: int | None = None) -> Item:
    """A full-depth input (:class:`gradcam_cli.io.depth.Scan`) as an :class:`Item`: the model input from
    its values on the model's scale, resized in float32 and normalised, never through 8 bits; the
    pictures on its windowed 8-bit view (:func:`gradcam_cli.io.depth.prepare`)."""
    from gradcam_cli.io.depth import prepare
    from gradcam_cli.io.preprocess import normalise_values, resize

    values, view, fields = prepare(scan, depth)
    resized = resize(values, tuple(profile.input_size))
    pixels = np.ascontiguousarray(np.repeat(resized[..., None], 3, axis=2))
    return Item(ref, view, normalise_values(resized, profile), true_class, None, pixels, (), fields)


def _item(ref: InputRef, image: np.ndarray, small: np.ndarray, size, profile: Profile, true_class: int | None,
          notes: tuple[str, ...]) -> Item:
    """An 8-bit RGB decode (``small``: the model's, when it is another array) as an :class:`Item`."""
    from gradcam_cli.io.preprocess import as_model_sees, normalise, resize

    same = small is image
    image = as_model_sees(image, profile)  # a grey model's overlays are drawn on its grey image
    pixels = resize(image if same else as_model_sees(small, profile), profile.input_size)
    return Item(ref, image, normalise(pixels, profile), true_class,
                None if size is None or size == image.shape[:2] else size, pixels, notes)


def decode_floor(outputs: Sequence[Output], input_size: tuple[int, int]) -> Callable | None:
    """How small a JPEG may be decoded for the pictures and lose nothing the run draws: the longest
    side any output asks of its pictures (:meth:`Output.picture_side`), and at least the model input
    on each side (then the pictures' decode is the model's, one decode); None (full size) when one
    asks for the original size. The model input is made from its own decode, always reduced to the
    model input (:func:`decode_item`), whatever this floor is.

    libjpeg's reduced decode is itself an averaging shrink: resized on to the model input from
    there, the input differs from the full decode's by 0.2-0.4 grey levels on average (99th
    percentile <= 3) even when the reduced image is only 1.07x the input, less than the resize's
    own difference to one exact area average (0.5-1.6); tests/io/test_feed.py holds it to that."""
    sides = [output.picture_side() for output in outputs]
    if None in sides:
        return None
    side = max(sides, default=0)

    def floor(height: int, width: int) -> tuple[int, int]:
        scale = min(1.0, side / max(height, width))
        return max(input_size[0], math.ceil(height * scale)), max(input_size[1], math.ceil(width * scale))

    return floor


def ok_record(item: Item, width: int, height: int) -> dict:
    """The head of an image's ``ok`` record: its path (and frame), size, the decoder's warnings, and
    a full-depth input's ``full_depth`` fields (format, modality, geometry, intensity, window)."""
    return {"path": item.ref.path, **({} if item.ref.frame is None else {"frame": item.ref.frame}), "status": "ok",
            "width": width, "height": height, **({"warnings": list(item.warnings)} if item.warnings else {}),
            **({"full_depth": item.full_depth} if item.full_depth else {})}


class BatchStep:
    """Explain batches of :class:`Item` and write their outputs into ``out_dir``.

    ``truth`` maps
    real paths to true labels (test-set mode), already checked against the classes.
    ``test_set``: test-set mode without the mapping (each :class:`Item` carries its
    true class; the Ray engine's workers); default: whether ``truth`` is given.
    """

    def __init__(self, cam: GradCAM, settings: RunSettings, out_dir: str | pathlib.Path,
                 outputs: Sequence[Output] | None = None, truth: Mapping[str, int] | None = None,
                 test_set: bool | None = None):
        self.cam, self.settings, self.out_dir = cam, settings, pathlib.Path(out_dir)
        targets = settings.targets
        self.indices = cam.resolve_classes(targets.classes) if targets.classes else None
        every = targets.kind == "similarity"  # each image against every reference, whatever --top
        self.n = len(self.indices) if self.indices else min(cam.split.num_classes if every else targets.top,
                                                            cam.split.num_classes)
        self.outputs = list(outputs) if outputs is not None else outputs_for(settings)
        self.truth = dict(truth or {})
        self.test_set = bool(self.truth) if test_set is None else test_set
        self.upsample = cam.upsampler
        self.decode_floor = decode_floor(self.outputs, tuple(cam.profile.input_size))
        #: the asked methods whose map is the same for every class (each map entry lists them)
        self.class_agnostic = [m for m in settings.methods if get_method(m).class_agnostic]

    def true_class(self, path: str) -> int | None:
        import os

        return self.truth.get(os.path.realpath(path)) if self.truth else None

    def __call__(self, items: Sequence[Item], submit: Callable[..., Future] | None = None) -> list:
        """One record per item, in order; with ``submit`` (an executor's), futures of records."""
        if not items:
            return []
        s = self.settings
        truth = [item.true_class for item in items] if self.test_set else None
        batch = np.stack([item.model_input for item in items])
        sources = {"sources": [(item.ref.path, item.full_size) for item in items]} \
            if getattr(self.cam, "needs_sources", False) else {}  # each image's mask or sidecar, by its path
        results = self.cam.explain_prepared(batch, top=s.targets.top, indices=self.indices, truth=truth,
                                            threshold=s.targets.threshold, method=s.methods, options=s.method_options,
                                            **sources)
        if submit is None:
            return [self.write(item, result) for item, result in zip(items, results)]
        return [submit(self.write, item, result) for item, result in zip(items, results)]

    def write(self, item: Item, result: Explanation) -> dict:
        """Write every output of one explained image; return its record."""
        height, width = item.full_size
        names = [
            map_name(item.ref.out_stem, p.label, p.rank, slot, self.n, bool(self.indices))
            for slot, p in enumerate(result.predictions, start=1)
        ]
        entries = [_entry(p, self.cam.split.head_type) for p in result.predictions]
        for entry, detail in zip(entries, result.details or ()):  # a target's own fields (pixel share, ...)
            entry.update(detail)
        record = ok_record(item, width, height)
        true = item.true_class
        if true is not None:
            record["true_label"] = {"class_index": true, "label": self.cam.class_names.label(true),
                                    "rank": result.true_rank}
        if item.size is not None:
            record["decoded_size"] = [item.image.shape[1], item.image.shape[0]]
        image_result = ImageResult(item.image, result, names, entries, record, stem=item.ref.out_stem,
                                   upsample=self.upsample, size=(height, width))
        for output in self.outputs:
            output.write(image_result, self.out_dir)
        if true is not None:
            for entry in entries:
                entry["true_class"] = entry["class_index"] == true
        if self.class_agnostic:
            for entry in entries:
                entry["class_agnostic"] = list(self.class_agnostic)
        record["predictions"] = entries
        for key in ("grid", "gif"):  # per-image files after the predictions, as the JSON reads best
            if key in record:
                record[key] = record.pop(key)
        return record
