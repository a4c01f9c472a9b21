"""The per-batch step: decoded images in, records and written files out.

:class:`BatchStep` is resolved once per run (model, targets, outputs); calling it
on a list of :class:`Item` explains the batch in one compiled call and writes
every output of every image. The folder runner calls it with a thread pool's
``submit`` so that writing overlaps with the next batch; ``evaluate`` and the
Ray engine call it plainly and get the records back.
"""

from __future__ import annotations

import pathlib
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from gradcam_cli.errors import ImageError
from gradcam_cli.methods import get_method
from gradcam_cli.run.naming import map_name
from gradcam_cli.run.outputs import ImageResult, Output, outputs_for


@dataclass(frozen=True)
class Item:
    """One decoded image, ready for the model."""

    ref: Any  # InputRef: .path (as given) and .out_stem (unique relative output stem)
    image: np.ndarray  # original resolution, RGB uint8
    model_input: np.ndarray  # resized and normalised: float32 (H, W, 3)
    true_class: int | None = None  # test-set mode: its true label's class index


def error_record(path: str, exc: ImageError) -> dict:
    return {"path": path, "status": "error", "kind": exc.kind, "message": exc.message}


def decode_item(ref: Any, profile: Any, max_pixels: int | None = None, true_class: int | None = None) -> Item | dict:
    """Decode, resize and normalise one image (in an I/O thread); an error record if it cannot be used."""
    from gradcam_cli.io import images
    from gradcam_cli.io.preprocess import normalise, resize

    try:
        image = images.decode(ref.path, **({"max_pixels": max_pixels} if max_pixels else {}))
    except ImageError as exc:
        return error_record(ref.path, exc)
    return Item(ref, image, normalise(resize(image, profile.input_size), profile), true_class)


class BatchStep:
    """Explain batches of :class:`Item` and write their outputs into ``out_dir``.

    ``settings`` is a :class:`gradcam_cli.run.settings.RunSettings`; ``truth`` maps
    real paths to true labels (test-set mode), already checked against the classes.
    """

    def __init__(self, cam: Any, settings: Any, out_dir: str | pathlib.Path,
                 outputs: Sequence[Output] | None = None, truth: Mapping[str, int] | None = None):
        self.cam, self.settings, self.out_dir = cam, settings, pathlib.Path(out_dir)
        self.indices = cam.resolve_classes(settings.classes) if settings.classes else None
        self.n = len(self.indices) if self.indices else min(settings.top, cam.split.num_classes)
        self.outputs = list(outputs) if outputs is not None else outputs_for(settings)
        self.truth = dict(truth or {})
        self.options = settings.method_options()
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
        truth = [item.true_class for item in items] if self.truth else None
        batch = np.stack([item.model_input for item in items])
        results = self.cam.explain_prepared(batch, top=s.top, indices=self.indices, truth=truth,
                                            threshold=s.threshold, method=s.methods, options=self.options)
        if submit is None:
            return [self.write(item, result) for item, result in zip(items, results)]
        return [submit(self.write, item, result) for item, result in zip(items, results)]

    def write(self, item: Item, result: Any) -> dict:
        """Write every output of one explained image; return its record."""
        height, width = item.image.shape[:2]
        names = [
            map_name(item.ref.out_stem, p.label, p.rank, slot, self.n, bool(self.indices))
            for slot, p in enumerate(result.predictions, start=1)
        ]
        entries = [asdict(p) for p in result.predictions]
        record: dict = {"path": item.ref.path, "status": "ok", "width": width, "height": height}
        true = item.true_class
        if true is not None:
            probs = result.probabilities
            record["true_label"] = {
                "class_index": true,
                "label": self.cam.class_names.label(true),
                "rank": int(np.count_nonzero(probs > probs[true])) + 1,
            }
        image_result = ImageResult(item.image, result, names, entries, record)
        for output in self.outputs:
            output.write(image_result, self.out_dir)
        if true is not None:
            for entry in entries:
                entry["true_class"] = entry["class_index"] == true
        if self.class_agnostic:
            for entry in entries:
                entry["class_agnostic"] = list(self.class_agnostic)
        record["predictions"] = entries
        return record
