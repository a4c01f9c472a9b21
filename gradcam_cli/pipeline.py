"""The library API and the folder pipeline: discover -> decode -> batch -> CAMs -> render -> write.

No Click, no printing: progress and per-image results go to callbacks.

    from gradcam_cli.pipeline import GradCAM
    cam = GradCAM("efficientnet_lite0")
    [result] = cam.explain([rgb_uint8_array], top=3)
    result.predictions[0].label, result.maps.shape     # 'tiger_cat', (3, 7, 7)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pathlib
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from . import __version__, classes as class_names
from .errors import ImageError, ResumeError
from .profiles import DEFAULT_BACKBONE, PREPROCESSING, Profile, get_profile, load_registry

DEFAULT_TOP = 3
DEFAULT_BATCH = 16
DEFAULT_ALPHA = 0.4
DEFAULT_QUALITY = 90
JSONL_NAME = "predictions.jsonl"
JSON_NAME = "predictions.json"


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


PRECISIONS = ("float32", "mixed")


def engine_description(split: Any) -> str:
    """How the maps are computed (see cams.Explainer)."""
    if not split.cut:
        return "full model on tiled input (a skip connection crosses the target layer)"
    if split.heavy_head:
        return "trunk once + head once, N backward passes (batch Jacobian)"
    return "trunk once + head on tiled activations"


def own_model_profile(path: str | os.PathLike | Any) -> Profile:
    """The profile of a saved model given without one: layer ``auto``, input size from the
    model, preprocessing ``none`` (raw 0..255: most Keras models rescale inside), generic labels."""
    name = pathlib.Path(path).stem if isinstance(path, (str, os.PathLike)) else getattr(path, "name", "model")
    return Profile(
        name=name,
        builder=None,
        model=str(path) if isinstance(path, (str, os.PathLike)) else None,
        input_size=None,
        target_layer="auto",
        preprocessing="none",
        classes=None,
        weights="saved",
    )


def _override(profile: Profile, input_size, preprocessing, mean, std, labels, output) -> Profile:
    """Apply per-run flags on top of a profile, validated like the TOML fields."""
    from .profiles import profile_from_mapping

    changes: dict[str, Any] = {}
    if input_size is not None:
        size = [input_size, input_size] if isinstance(input_size, int) else list(input_size)
        changes["input_size"] = size
    if preprocessing is not None:
        changes["preprocessing"] = preprocessing
        if preprocessing != "mean_std":
            changes["mean"] = changes["std"] = None
    if mean is not None:
        changes["mean"] = list(mean)
    if std is not None:
        changes["std"] = list(std)
    if labels is not None:
        changes["classes"] = str(labels)
    if output is not None:
        changes["output"] = str(output)
    if not changes:
        return profile
    fields = {k: v for k, v in asdict(profile).items() if v not in (None, "") and k != "source"}
    if "builder" not in fields and "model" not in fields:
        fields["model"] = "<in-memory model>"  # a keras.Model object; restored below
    fields.update({k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        fields.pop(key, None)
    for key in ("input_size", "mean", "std"):
        if isinstance(fields.get(key), tuple):
            fields[key] = list(fields[key])
    checked = profile_from_mapping(fields, "the command-line options")
    return replace(checked, source=profile.source, model=profile.model,
                   classes=changes.get("classes", profile.classes))


def _model_input_size(model: Any) -> tuple[int, int]:
    from .errors import OptionError

    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise OptionError(
            f"model '{model.name}' takes inputs of shape {shape}, without a fixed height and width; "
            "pass --input-size"
        )
    return int(shape[1]), int(shape[2])


@contextlib.contextmanager
def _dtype_policy(name: str | None):
    """Build under a Keras dtype policy (e.g. ``mixed_float16``), then restore the previous one."""
    if name is None:
        yield
        return
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def auto_batch_size() -> int:
    """``--batch-size auto``: 256 on a GPU (halved on out-of-memory until it fits), 16 on the CPU."""
    import tensorflow as tf

    return 256 if tf.config.list_physical_devices("GPU") else DEFAULT_BATCH


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class GradCAM:
    """A loaded model, cut at its target layer, ready to explain images.

    Either ``backbone``, a profile name (``gradcam backbones``), with ``weights``
    ``"imagenet"``, ``"none"`` (random) or a path; or ``model``, a saved
    ``.keras`` / ``.h5`` file (or a ``keras.Model``) of your own. The other
    arguments override the profile for this run: ``layer`` (a name, a nested
    path ``inner/layer``, or ``"auto"``), ``output`` (multi-output models),
    ``input_size``, ``preprocessing`` (with ``mean`` / ``std``), ``labels`` (a
    class names file). Build once, call :meth:`explain` many times: the compiled
    gradient function is kept per target mode.
    """

    def __init__(
        self,
        backbone: str | None = None,
        *,
        model: Any = None,
        weights: str | None = "imagenet",
        layer: str | None = None,
        output: str | int | None = None,
        input_size: int | tuple[int, int] | None = None,
        preprocessing: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        labels: str | None = None,
        custom_objects: str | None = None,
        config_dirs: Sequence[str] = (),
        profile: Profile | None = None,
        precision: str = "float32",
    ):
        from .backbones import build_model, load_user_model, split_model

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if profile is None:
            if model is not None and backbone is None:
                profile = own_model_profile(model)
            else:
                profile = get_profile(load_registry(config_dirs), backbone or DEFAULT_BACKBONE)
        self.profile = _override(profile, input_size, preprocessing, mean, std, labels, output)
        self.weights = "none" if weights in (None, "none") else str(weights)
        if precision == "mixed" and (model is not None or self.profile.model is not None):
            from .errors import OptionError

            raise OptionError("--precision mixed applies to registry backbones; a saved model keeps its own dtypes")
        self.precision = precision
        with _dtype_policy("mixed_float16" if precision == "mixed" else None):
            if model is not None and not isinstance(model, (str, pathlib.Path)):
                self.model = model
            elif self.profile.model is not None:
                self.model = load_user_model(self.profile.model, custom_objects)
            else:
                self.model = build_model(self.profile, self.weights)
        self.split = split_model(self.model, layer or self.profile.target_layer, output=self.profile.output)
        self.layer = self.split.layer_name
        if self.profile.input_size is None:
            self.profile = replace(self.profile, input_size=_model_input_size(self.model))
        base = pathlib.Path(self.profile.source).parent if self.profile.source else None
        self.class_names = class_names.for_model(self.profile.classes, base, self.split.num_classes, self.split.head_type)
        self._explainers: dict[Any, Any] = {}
        #: the largest batch the model ran without running out of memory (None: not limited yet)
        self.max_batch: int | None = None

    # -- targets ---------------------------------------------------------------
    def resolve_classes(self, tokens: Sequence[str | int]) -> list[int]:
        """Class indices from indices or names (case-insensitive); TargetError otherwise."""
        return [self.class_names.resolve(t, self.split.num_classes) for t in tokens]

    def _explainer(self, top: int | None, classes: Sequence[int] | None, extra: bool = False):
        from .cams import Explainer

        key = (("top", top) if classes is None else ("classes", tuple(classes)), extra)
        if key not in self._explainers:
            self._explainers[key] = Explainer(
                self.split, top=top if classes is None else None, classes=classes, extra=extra
            )
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

    def _run_model(self, batch: np.ndarray, top: int, indices: Sequence[int] | None, extra: np.ndarray | None):
        """Run the compiled explainer, halving the batch on out-of-memory without losing images."""
        import tensorflow as tf

        from .cams import CamBatch
        from .errors import ModelError

        explainer = self._explainer(top, indices, extra is not None)
        parts, start = [], 0
        while start < len(batch):
            size = min(self.max_batch or len(batch), len(batch) - start)
            part = slice(start, start + size)
            try:
                parts.append(explainer(batch[part], None if extra is None else extra[part]))
            except tf.errors.ResourceExhaustedError:
                if size == 1:
                    raise ModelError(
                        f"out of memory with a batch of 1 image on backbone '{self.profile.name}'; "
                        "free accelerator memory or use a smaller input size"
                    ) from None
                self.max_batch = size // 2
                continue
            start += size
        if len(parts) == 1:
            return parts[0]
        return CamBatch(*(np.concatenate([getattr(p, f) for p in parts]) for f in CamBatch.__dataclass_fields__))

    def _explain_batch(
        self,
        batch: np.ndarray,
        top: int,
        indices: Sequence[int] | None,
        truth: Sequence[int | None] | None = None,
        threshold: float | None = None,
    ) -> list[Explanation]:
        """Explain a preprocessed batch. ``truth``: per image, a class that must also get a map
        (its true label; None for none). ``threshold``: keep only targets at least this probable."""
        extra = None if truth is None else np.array([-1 if t is None else t for t in truth], np.int32)
        out = self._run_model(batch, top, indices, None if extra is None else np.maximum(extra, 0))
        explanations = []
        for b in range(batch.shape[0]):
            probs, scores = out.probs[b], out.scores[b]
            targets = [int(c) for c in out.classes[b]]
            maps = list(out.maps[b])
            if extra is not None:  # the true class's map comes last; drop it if absent or already there
                if extra[b] < 0 or extra[b] in targets[:-1]:
                    targets, maps = targets[:-1], maps[:-1]
            predictions = [
                Prediction(
                    # top-N: the position in top_k's order; otherwise 1 + classes scored higher
                    rank=slot if indices is None and slot <= top else int(np.count_nonzero(scores > scores[c])) + 1,
                    class_index=c,
                    class_id=self.class_names.class_id(c),
                    label=self.class_names.label(c),
                    probability=float(probs[c]),
                )
                for slot, c in enumerate(targets, start=1)
            ]
            if threshold is not None:
                true = None if extra is None else int(extra[b])
                keep = [i for i, p in enumerate(predictions) if p.probability >= threshold or p.class_index == true]
                predictions, maps = [predictions[i] for i in keep], [maps[i] for i in keep]
            shape = out.maps.shape[2:]
            stacked = np.stack(maps) if maps else np.zeros((0, *shape), np.float32)
            explanations.append(Explanation(predictions=predictions, maps=stacked, probabilities=probs))
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
        if p.model is not None:
            weights = f"saved model {p.model}"
        header = {
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
            "precision": self.precision,
            "head": self.split.head_type,
            "score": self.split.score_description,
            "engine": engine_description(self.split),
            "options": options or {},
        }
        if len(self.model.outputs) > 1:
            header["output"] = self.split.output_name
        return header


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
    resume: bool = False
    threshold: float | None = None  # keep only targets at least this probable (multi-label)
    truth: dict[str, str] | None = None  # test-set mode: real path -> true label (name or index)
    shard: tuple[int, int] | None = None  # (K, N): names the predictions files so shards can share --out
    workers: int = 2  # decode and write threads; they overlap with the model


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    resumed: int = 0
    records: int = 0
    out_dir: str = ""
    labelled: int = 0
    top1: int = 0
    top5: int = 0
    misclassified: list[str] = field(default_factory=list)

    def accuracy(self) -> dict | None:
        if not self.labelled:
            return None
        return {
            "labelled": self.labelled,
            "top1": self.top1 / self.labelled,
            "top5": self.top5 / self.labelled,
            "misclassified": self.misclassified,
        }


RUN_FILE = ".gradcam-run.json"
#: batches whose overlays may still be being written while the model runs (bounds memory)
WRITE_DEPTH = 2
#: options that change what is written; --resume refuses a folder made with others
RESULT_OPTIONS = ("backbone", "model_path", "weights", "layer", "output", "input_size", "preprocess", "mean", "std",
                  "labels", "top", "classes", "target_unit", "threshold", "precision", "alpha", "colormap", "quality",
                  "save_raw", "max_pixels")


def safe_label(label: str) -> str:
    """A class label made safe for a file name (``tiger cat`` -> ``tiger_cat``)."""
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", label).strip("_") or "class"


def overlay_name(stem: str, prediction: Prediction, slot: int, n: int, by_class: bool) -> str:
    """``cats/chelsea.top1-tiger_cat`` (top-N) or ``cats/chelsea.class1-tabby`` (--class)."""
    kind = "class" if by_class else "top"
    number = str(slot if by_class else prediction.rank).zfill(len(str(n)))
    return f"{stem}.{kind}{number}-{safe_label(prediction.label)}"


def _jpeg_complete(path: pathlib.Path) -> bool:
    """A JPEG that starts with SOI and ends with EOI (written whole)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
            handle.seek(-2, 2)
            return head == b"\xff\xd8" and handle.read(2) == b"\xff\xd9"
    except OSError:
        return False


def _outputs_complete(record: dict, out_dir: pathlib.Path, save_raw: bool) -> bool:
    if record.get("status") != "ok" or not record.get("predictions"):
        return False
    for p in record["predictions"]:
        if not _jpeg_complete(out_dir / p["overlay"]):
            return False
        if save_raw and not ("raw" in p and (out_dir / p["raw"]).is_file()):
            return False
    return True


def _previous_records(jsonl_path: pathlib.Path) -> dict[str, int]:
    """path -> byte offset of its last record in an existing JSON Lines log."""
    index: dict[str, int] = {}
    if not jsonl_path.exists():
        return index
    from .writers import read_json_lines_with_offsets

    for offset, record in read_json_lines_with_offsets(jsonl_path):
        if isinstance(record, dict) and "path" in record:
            index[record["path"]] = offset
    return index


def run_folder(
    cam: GradCAM,
    refs: Sequence[Any],
    options: RunOptions,
    *,
    header_options: dict | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> Summary:
    """Explain every input of ``refs`` (``InputRef``: ``.path``, ``.out_stem``) into ``options.out_dir``.

    Writes one JPEG per image and target, appends each image's record to
    ``predictions.jsonl`` as soon as its files are written, and writes
    ``predictions.json`` (records in input order) at the end. A bad image
    becomes an error record; the run goes on. Decoding of the next batch and
    writing of the previous one overlap with the model. With ``resume``,
    images whose outputs are complete are not computed again.
    """
    from concurrent.futures import ThreadPoolExecutor

    from . import render, writers

    out_dir = writers.check_writable(options.out_dir)
    colormap = render.colormap_id(options.colormap)
    indices = cam.resolve_classes(options.classes) if options.classes else None
    n = len(indices) if indices else min(options.top, cam.split.num_classes)
    truth = {path: cam.class_names.resolve(label, cam.split.num_classes) for path, label in (options.truth or {}).items()}
    summary = Summary(out_dir=str(out_dir))
    names = _result_names(options.shard)
    jsonl_path = out_dir / names[JSONL_NAME]
    settings = {k: (header_options or {}).get(k) for k in RESULT_OPTIONS}
    settings["backbone"] = cam.profile.name
    settings = json.loads(json.dumps(settings))  # as it reads back from disk (tuples -> lists)

    previous: dict[str, int] = {}
    if options.resume:
        _check_same_settings(out_dir / names[RUN_FILE], settings)
        previous = _previous_records(jsonl_path)
        writers.remove_stale_temps(out_dir)
    writers.write_json(out_dir / names[RUN_FILE], {"settings": settings})
    offsets: dict[str, int] = {}

    def emit(record: dict, offset: int | None = None) -> None:
        if offset is None:
            offset = log.write(record)
        else:
            summary.resumed += 1
        offsets[record["path"]] = offset
        summary.records += 1
        if "true_label" in record:
            summary.labelled += 1
            summary.top1 += record["true_label"]["rank"] == 1
            summary.top5 += record["true_label"]["rank"] <= 5
            if record["true_label"]["rank"] != 1:
                summary.misclassified.append(record["path"])
        if record["status"] == "ok":
            summary.done += 1
        else:
            summary.failed += 1
        if on_record is not None:
            on_record(record)

    def decode(ref):
        return _decode_and_prepare(ref, cam.profile, options.max_pixels)

    def true_class(ref) -> int | None:
        return truth.get(os.path.realpath(ref.path)) if truth else None

    def finish(ref, image, result):
        true = true_class(ref)
        label = None if true is None else cam.class_names.label(true)
        return _write_image(ref, image, result, options, out_dir, colormap, n, bool(indices), true, label)

    def compute(items):
        return _compute(cam, items, options, indices, true_class if truth else None, pool, finish)

    with writers.JsonLines(jsonl_path, append=options.resume) as log, \
            ThreadPoolExecutor(options.workers, thread_name_prefix="gradcam-io") as pool:
        chunks = _batched(refs, options.batch_size)
        pending: list = []  # per batch, in order: list of (ref, record | future)
        ahead = None
        for chunk in itertools.chain(chunks, [None]):
            # prefetch: decode this chunk while the model works on the previous one
            current, ahead = ahead, (None if chunk is None else _submit_chunk(pool, decode, chunk, previous,
                                                                                 jsonl_path, out_dir, options))
            if current is not None:
                pending.append(compute(current))
            while len(pending) > (WRITE_DEPTH if chunk is not None else 0):
                for ref, item in pending.pop(0):
                    _emit_item(item, emit)

    header = cam.header(header_options)
    header["summary"] = {"images": summary.records, "done": summary.done, "failed": summary.failed}
    if summary.accuracy() is not None:
        header["summary"]["accuracy"] = summary.accuracy()
    if cam.max_batch is not None:  # the model ran out of memory and the batch was halved
        header["summary"]["batch_size_after_out_of_memory"] = cam.max_batch
    ordered = (offsets[ref.path] for ref in refs if ref.path in offsets)
    writers.write_json_document(out_dir / names[JSON_NAME], header, writers.read_records_at(jsonl_path, ordered))
    return summary


def _result_names(shard: tuple[int, int] | None) -> dict[str, str]:
    """``predictions.json`` etc., or ``predictions.2-of-4.json`` for shard 2/4."""
    if shard is None:
        return {name: name for name in (JSON_NAME, JSONL_NAME, RUN_FILE)}
    tag = f"{shard[0]}-of-{shard[1]}"
    return {name: name.replace(".json", f".{tag}.json") for name in (JSON_NAME, JSONL_NAME, RUN_FILE)}


def _check_same_settings(run_file: pathlib.Path, settings: dict) -> None:
    if not run_file.exists():
        return
    try:
        before = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
    except (OSError, ValueError):
        return
    changed = [k for k in settings if k in before and before[k] != settings[k]]
    if changed:
        what = ", ".join(f"{k} {before[k]!r} -> {settings[k]!r}" for k in changed)
        raise ResumeError(
            f"cannot --resume in {run_file.parent}: it was made with other settings ({what}); "
            "use the same options, or another --out folder"
        )


@dataclass(frozen=True)
class _Decoded:
    image: np.ndarray  # original resolution, RGB uint8
    small: np.ndarray  # resized to the model's input size and normalised: float32 model input


@dataclass(frozen=True)
class _Resumed:
    offset: int  # of its record in predictions.jsonl
    record: dict


def _decode_and_prepare(ref, profile: Profile, max_pixels) -> _Decoded | dict:
    """In an I/O thread: decode, resize and normalise one image (off the model's thread)."""
    from . import images
    from .preprocess import normalise, resize

    try:
        image = images.decode(ref.path, **({"max_pixels": max_pixels} if max_pixels else {}))
    except ImageError as exc:
        return {"path": ref.path, "status": "error", "kind": exc.kind, "message": exc.message}
    return _Decoded(image, normalise(resize(image, profile.input_size), profile))


def _submit_chunk(pool, decode, chunk, previous, jsonl_path, out_dir, options):
    """Per input: a :class:`_Resumed` when its outputs are complete, else a decode future."""
    from .writers import read_record_at

    items = []
    for ref in chunk:
        offset = previous.get(ref.path)
        if offset is not None:
            record = read_record_at(jsonl_path, offset)
            if _outputs_complete(record, out_dir, options.save_raw):
                items.append((ref, _Resumed(offset, record)))
                continue
        items.append((ref, pool.submit(decode, ref)))
    return items


def _compute(cam, items, options, indices, true_class, pool, finish):
    """Wait for the chunk's decodes, run the model on the good images, submit their writes."""
    from concurrent.futures import Future

    resolved = [(ref, item.result() if isinstance(item, Future) else item) for ref, item in items]
    good = [(i, ref, value) for i, (ref, value) in enumerate(resolved) if isinstance(value, _Decoded)]
    out = list(resolved)
    if good:
        batch = np.stack([value.small for _, _, value in good])
        truth = None if true_class is None else [true_class(ref) for _, ref, _ in good]
        results = cam._explain_batch(batch, options.top, indices, truth, options.threshold)
        for (i, ref, value), result in zip(good, results):
            out[i] = (ref, pool.submit(finish, ref, value.image, result))
    return out


def _emit_item(item, emit) -> None:
    from concurrent.futures import Future

    if isinstance(item, Future):
        emit(item.result())  # an OutputError from a write surfaces here and stops the run
    elif isinstance(item, _Resumed):
        emit(item.record, offset=item.offset)
    else:
        emit(item)  # an error record


def _write_image(ref, image, result: Explanation, options: RunOptions, out_dir, colormap, n, by_class,
                 true_class: int | None = None, true_label: str | None = None) -> dict:
    from . import render, writers

    height, width = image.shape[:2]
    blended = render.overlays(image, result.maps, alpha=options.alpha, colormap=colormap)
    entries = []
    for slot, (prediction, picture, raw) in enumerate(zip(result.predictions, blended, result.maps), start=1):
        if slot > n:  # the true class's extra map (test-set mode), outside the top N
            name = f"{ref.out_stem}.true-{safe_label(prediction.label)}"
        else:
            name = overlay_name(ref.out_stem, prediction, slot, n, by_class)
        writers.write_bytes(out_dir / f"{name}.jpg", render.encode_jpeg(picture, options.quality))
        entry = asdict(prediction)
        entry["overlay"] = f"{name}.jpg"
        if options.save_raw:
            writers.write_npy(out_dir / f"{name}.npy", raw)
            entry["raw"] = f"{name}.npy"
        if true_class is not None:
            entry["true_class"] = prediction.class_index == true_class
        entries.append(entry)
    record = {"path": ref.path, "status": "ok", "width": width, "height": height}
    if true_class is not None:
        probs = result.probabilities
        record["true_label"] = {
            "class_index": true_class,
            "label": true_label,
            "rank": int(np.count_nonzero(probs > probs[true_class])) + 1,
        }
    record["predictions"] = entries
    return record


def load_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """``path,label`` rows (an optional ``path,label`` header) -> {real path: label}.

    Relative image paths are taken from the CSV's folder when they exist there,
    else from the current folder.
    """
    import csv

    from .errors import ProfileError

    path = pathlib.Path(path)
    truth: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or not "".join(row).strip():
                    continue
                if number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise ProfileError(f"{path}:{number}: expected 'path,label', got {','.join(row)!r}")
                image = pathlib.Path(row[0].strip())
                if not image.is_absolute() and (path.parent / image).exists():
                    image = path.parent / image
                truth[os.path.realpath(image)] = row[1].strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"labels CSV {path} cannot be read: {exc}") from None
    return truth
