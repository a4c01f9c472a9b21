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
from gradcam_cli.settings import RunSettings

if TYPE_CHECKING:
    from gradcam_cli.config.profiles import Profile
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.io.discover import InputRef


@dataclass(frozen=True)
class Item:
    """One decoded image, ready for the model."""

    ref: InputRef  # .path (as given) and .out_stem (unique relative output stem)
    image: np.ndarray  # original resolution, RGB uint8 (a grey model's: its grey, three equal channels)
    model_input: np.ndarray  # resized and normalised: float32 (H, W, C), C = profile.channels
    true_class: int | None = None  # test-set mode: its true label's class index
    size: tuple[int, int] | None = None  # the file's full (height, width) when ``image`` was decoded reduced
    pixels: np.ndarray | None = None  # the model input before normalising: RGB uint8 (H, W, 3)
    warnings: tuple[str, ...] = ()  # what the decoder warned (libjpeg's "Corrupt JPEG data: ...")

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


def error_record(path: str, exc: ImageError) -> dict:
    return {"path": path, "status": "error", "kind": exc.kind, "message": exc.message}


def decode_item(ref: InputRef, profile: Profile, max_pixels: int | None = None, true_class: int | None = None,
                at_least: Callable | None = None) -> Item | dict:
    """Decode, resize and normalise one image (in an I/O thread); an error record if it cannot be used.
    ``at_least`` (:func:`decode_floor`) sizes only ``Item.image``, the pictures' decode: the model
    input always comes from the decode reduced to the model input
    (:func:`gradcam_cli.io.images.decode_pair`), so no picture option changes what the model sees."""
    from gradcam_cli.io import images
    from gradcam_cli.io.preprocess import as_model_sees, normalise, resize

    notes: list = []
    try:
        image, small, size = images.decode_pair(ref.path, at_least=at_least, model=tuple(profile.input_size),
                                                notes=notes, **({"max_pixels": max_pixels} if max_pixels else {}))
    except ImageError as exc:
        return error_record(ref.path, exc)
    same = small is image
    image = as_model_sees(image, profile)  # a grey model's overlays are drawn on its grey image
    pixels = resize(image if same else as_model_sees(small, profile), profile.input_size)
    return Item(ref, image, normalise(pixels, profile), true_class, None if size == image.shape[:2] else size, pixels,
                tuple(notes))


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
        self.n = len(self.indices) if self.indices else min(targets.top, cam.split.num_classes)
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
        results = self.cam.explain_prepared(batch, top=s.targets.top, indices=self.indices, truth=truth,
                                            threshold=s.targets.threshold, method=s.methods, options=s.method_options)
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
        record: dict = {"path": item.ref.path, "status": "ok", "width": width, "height": height,
                        **({"warnings": list(item.warnings)} if item.warnings else {})}
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
