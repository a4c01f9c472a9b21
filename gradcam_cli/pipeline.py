"""The library API and the folder pipeline: discover -> decode -> batch -> CAMs -> render -> write.

No Click, no printing: progress and per-image results go to callbacks.

    from gradcam_cli.pipeline import GradCAM
    cam = GradCAM("efficientnet_lite0")
    [result] = cam.explain([rgb_uint8_array], top=3)
    result.predictions[0].label, result.maps.shape     # 'tiger_cat', (3, 7, 7)
"""

from __future__ import annotations

import itertools
import pathlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from . import __version__, classes as class_names
from .errors import GradcamError, ImageError
from .profiles import PREPROCESSING, Profile, get_profile, load_registry

DEFAULT_TOP = 3
DEFAULT_BATCH = 16
DEFAULT_ALPHA = 0.4
DEFAULT_QUALITY = 90
JSONL_NAME = "predictions.jsonl"
JSON_NAME = "predictions.json"

_SCORE = {
    "softmax": "class logit, before softmax",
    "sigmoid": "class logit, before sigmoid",
    "linear": "model output (no final softmax or sigmoid found)",
}


@dataclass(frozen=True)
class Prediction:
    rank: int  # 1 = most probable
    class_index: int
    class_id: str | None  # WordNet id for ImageNet
    label: str
    probability: float


@dataclass
class Explanation:
    """One image: the explained targets (in map order) and their maps (N, h, w) in [0, 1]."""

    predictions: list[Prediction]
    maps: np.ndarray
    probabilities: np.ndarray  # (C,) after the final softmax / sigmoid


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class GradCAM:
    """A loaded backbone, cut at its target layer, ready to explain images.

    ``backbone``: a profile name (``gradcam backbones``). ``weights``:
    ``"imagenet"``, ``"none"`` (random) or a path. ``layer`` overrides the
    profile's target layer. Build once, call :meth:`explain` many times: the
    compiled gradient function is kept per target mode.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        *,
        weights: str | None = "imagenet",
        layer: str | None = None,
        config_dirs: Sequence[str] = (),
        profile: Profile | None = None,
    ):
        from .backbones import build_model, split_model

        self.profile = profile or get_profile(load_registry(config_dirs), backbone)
        self.weights = "none" if weights in (None, "none") else str(weights)
        self.layer = layer or self.profile.target_layer
        base = pathlib.Path(self.profile.source).parent if self.profile.source else None
        self.class_names = class_names.load(self.profile.classes, base)
        self.model = build_model(self.profile, self.weights)
        self.split = split_model(self.model, self.layer)
        self._explainers: dict[Any, Any] = {}

    # -- targets ---------------------------------------------------------------
    def resolve_classes(self, tokens: Sequence[str | int]) -> list[int]:
        """Class indices from indices or names (case-insensitive); TargetError otherwise."""
        return [self.class_names.resolve(t, self.split.num_classes) for t in tokens]

    def _explainer(self, top: int | None, classes: Sequence[int] | None):
        from .cams import Explainer

        key = ("top", top) if classes is None else ("classes", tuple(classes))
        if key not in self._explainers:
            self._explainers[key] = Explainer(self.split, top=top if classes is None else None, classes=classes)
        return self._explainers[key]

    # -- arrays in, arrays out -------------------------------------------------
    def prepare(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 images of any size -> the model's float32 input batch."""
        from .preprocess import normalise, resize

        return normalise(np.stack([resize(img, self.profile.input_size) for img in images]), self.profile)

    def explain(
        self,
        images: Sequence[np.ndarray],
        *,
        top: int = DEFAULT_TOP,
        classes: Sequence[str | int] | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> list[Explanation]:
        """Explain RGB uint8 (H, W, 3) arrays: top-N classes, or the given ``classes``."""
        indices = self.resolve_classes(classes) if classes else None
        results: list[Explanation] = []
        for chunk in _batched(images, batch_size):
            results.extend(self._explain_batch(self.prepare(chunk), top, indices))
        return results

    def _explain_batch(self, batch: np.ndarray, top: int, indices: Sequence[int] | None) -> list[Explanation]:
        out = self._explainer(top, indices)(batch)
        explanations = []
        for b in range(batch.shape[0]):
            probs, scores = out.probs[b], out.scores[b]
            predictions = [
                Prediction(
                    # top-N: the position in top_k's order; --class: 1 + classes scored higher
                    rank=slot if indices is None else int(np.count_nonzero(scores > scores[c])) + 1,
                    class_index=int(c),
                    class_id=self.class_names.class_id(int(c)),
                    label=self.class_names.label(int(c)),
                    probability=float(probs[c]),
                )
                for slot, c in enumerate(out.classes[b], start=1)
            ]
            explanations.append(Explanation(predictions=predictions, maps=out.maps[b], probabilities=probs))
        return explanations

    # -- provenance --------------------------------------------------------------
    def header(self, options: dict | None = None) -> dict:
        p = self.profile
        prep = {"mode": p.preprocessing, "description": PREPROCESSING[p.preprocessing]}
        if p.preprocessing == "mean_std":
            prep.update(mean=list(p.mean), std=list(p.std))
        if self.weights == "none":
            weights = "none (random initialisation: maps and predictions are meaningless)"
        elif self.weights == "imagenet":
            weights = f"imagenet ({p.weights_source()})"
        else:
            weights = str(self.weights)
        return {
            "tool": "gradcam-cli",
            "version": __version__,
            "backbone": p.name,
            "model": self.model.name,
            "target_layer": self.layer,
            "target_layer_shape": list(self.split.feature_shape),
            "input_size": list(p.input_size),
            "preprocessing": prep,
            "weights": weights,
            "method": "gradcam",
            "score": _SCORE[self.split.activation],
            "engine": "trunk once + head on tiled activations" if self.split.cut else "full model on tiled input",
            "options": options or {},
        }


# ---------------------------------------------------------------------------
# folders


@dataclass
class RunOptions:
    out_dir: str
    top: int = DEFAULT_TOP
    classes: Sequence[str | int] = ()
    batch_size: int = DEFAULT_BATCH
    alpha: float = DEFAULT_ALPHA
    colormap: str = "jet"
    quality: int = DEFAULT_QUALITY
    save_raw: bool = False
    max_pixels: int | None = None


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    records: int = 0
    out_dir: str = ""
    failures: list[dict] = field(default_factory=list)


def safe_label(label: str) -> str:
    """A class label made safe for a file name (``tiger cat`` -> ``tiger_cat``)."""
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", label).strip("_") or "class"


def overlay_name(stem: str, prediction: Prediction, slot: int, n: int, by_class: bool) -> str:
    """``cats/chelsea.top1-tiger_cat`` (top-N) or ``cats/chelsea.class1-tabby`` (--class)."""
    kind = "class" if by_class else "top"
    number = str(slot if by_class else prediction.rank).zfill(len(str(n)))
    return f"{stem}.{kind}{number}-{safe_label(prediction.label)}"


def run_folder(
    cam: GradCAM,
    refs: Iterable[Any],
    options: RunOptions,
    *,
    header_options: dict | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> Summary:
    """Explain every input of ``refs`` (``InputRef``: ``.path``, ``.out_stem``) into ``options.out_dir``.

    Writes one JPEG per image and target, appends each image's record to
    ``predictions.jsonl`` as soon as it is done, and writes ``predictions.json``
    from it at the end. A bad image becomes an error record; the run goes on.
    """
    from . import images, render, writers

    out_dir = writers.check_writable(options.out_dir)
    colormap = render.colormap_id(options.colormap)
    indices = cam.resolve_classes(options.classes) if options.classes else None
    n = len(indices) if indices else min(options.top, cam.split.num_classes)
    decode_kwargs = {"max_pixels": options.max_pixels} if options.max_pixels else {}
    summary = Summary(out_dir=str(out_dir))
    jsonl_path = out_dir / JSONL_NAME

    def emit(record: dict) -> None:
        log.write(record)
        summary.records += 1
        if record["status"] == "ok":
            summary.done += 1
        else:
            summary.failed += 1
            summary.failures.append(record)
        if on_record is not None:
            on_record(record)

    with writers.JsonLines(jsonl_path) as log:
        for chunk in _batched(refs, options.batch_size):
            decoded = []
            for ref in chunk:
                try:
                    decoded.append((ref, images.decode(ref.path, **decode_kwargs)))
                except ImageError as exc:
                    emit({"path": ref.path, "status": "error", "kind": exc.kind, "message": exc.message})
            if not decoded:
                continue
            results = cam._explain_batch(cam.prepare([img for _, img in decoded]), options.top, indices)
            for (ref, image), result in zip(decoded, results):
                emit(_write_image(ref, image, result, options, out_dir, colormap, n, by_class=bool(indices)))

    header = cam.header(header_options)
    header["summary"] = {"images": summary.records, "done": summary.done, "failed": summary.failed}
    writers.write_json_document(out_dir / JSON_NAME, header, writers.read_json_lines(jsonl_path))
    return summary


def _write_image(ref, image, result: Explanation, options: RunOptions, out_dir, colormap, n, by_class) -> dict:
    from . import render, writers

    height, width = image.shape[:2]
    blended = render.overlays(image, result.maps, alpha=options.alpha, colormap=colormap)
    entries = []
    for slot, (prediction, picture, raw) in enumerate(zip(result.predictions, blended, result.maps), start=1):
        name = overlay_name(ref.out_stem, prediction, slot, n, by_class)
        writers.write_bytes(out_dir / f"{name}.jpg", render.encode_jpeg(picture, options.quality))
        entry = asdict(prediction)
        entry["overlay"] = f"{name}.jpg"
        if options.save_raw:
            writers.write_npy(out_dir / f"{name}.npy", raw)
            entry["raw"] = f"{name}.npy"
        entries.append(entry)
    return {"path": ref.path, "status": "ok", "width": width, "height": height, "predictions": entries}
