"""The library front end for targets beyond a classifier's class score (:mod:`gradcam_cli.targets`).

    from gradcam_cli.cam_targets import TargetCAM
    cam = TargetCAM(model="unet.keras", target="segmentation")
    [result] = cam.explain([rgb_uint8_array], top=2)      # the 2 classes covering most pixels
    result.details[0]["pixel_share"], result.maps.shape   # 0.31, (2, h, w)

    cam = TargetCAM(model="encoder.keras", target="similarity", reference="refs/")
    [result] = cam.explain([image])                       # one map per reference

    cam = TargetCAM(model="retinanet.keras", target="box", preprocessing="scale")
    [result] = cam.explain([image], top=3)                # the 3 highest-scoring detections
    result.details[0]["detection_box"], result.details[0]["score"]   # [x0, y0, x1, y1] image pixels, 0.97

:class:`TargetCAM` is a :class:`gradcam_cli.cam.GradCAM` (same loading, preprocessing,
records) whose model is tapped (:func:`gradcam_cli.models.tap.tap_model`) instead of split,
and whose maps come from :class:`gradcam_cli.engine.targeted.TargetExplainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from gradcam_cli.cam import GradCAM
from gradcam_cli.config import classes as class_names
from gradcam_cli.errors import OptionError
from gradcam_cli.results import Explanation, Prediction, rank_of
from gradcam_cli.settings import (
    DEFAULT_BATCH,
    DEFAULT_METHOD,
    DEFAULT_TOP,
    MethodOptions,
    ModelSettings,
    TargetSettings,
)
from gradcam_cli.targets import Target, check_methods, get_target
from gradcam_cli.targets.boxes import DEFAULT_BOX_THRESHOLD, box_explanation


@dataclass(frozen=True)
class TapSplit:
    """What a run reads of a cut model (:class:`gradcam_cli.models.split.Split`'s fields it uses)."""

    layer_name: str
    feature_shape: tuple
    num_classes: int
    output_name: str | None
    score_description: str
    head_type: str = "linear"  # record entries give each item's scalar as its ``value``
    activation: str = "linear"
    cut: bool = True
    heavy_head: bool = False
    tokens: Any = None  # a target's tap reads 4-D layers only: no token grid
    transformer: bool = False  # some target layer holds a transformer's features (maps centred under auto)
    attention_problem: str | None = ("attention rollout explains a class score; with --target segmentation, "
                                     "similarity or box use a gradient method")


#: how a target's maps are computed (:class:`gradcam_cli.engine.targeted.TargetExplainer`)
TARGET_ENGINE = "trunk once, tape on the target layer, N backward passes after it"

DESCRIPTIONS = {
    "class": "class logit, before softmax / sigmoid (a model with non-image inputs, fed from sidecars)",
    "segmentation": "class logits summed over the class's predicted region (or the given mask)",
    "similarity": "cosine similarity of the image's embedding with the reference's",
    "box": "the box's class logit at the anchor matched to it by IoU (before non-max suppression)",
}


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join(["batch", *("None" if d is None else str(d) for d in shape)]) + ")"


class TargetCAM(GradCAM):
    """A model explained through a target (``segmentation``, ``similarity``; see :mod:`gradcam_cli.targets`).

    ``reference`` (similarity): an image, a ``.npy`` embedding or a folder of them;
    ``embedding``: the output or layer read as the embedding (default: the features entering
    the classifier's last Dense, else the output); ``masks`` (segmentation): a
    :class:`gradcam_cli.io.target_files.Masks` (each image's mask found by its path), or True (given to
    :meth:`explain`); None: each class's predicted region. ``sidecar``: the model's non-image inputs
    come from a file beside each image (:mod:`gradcam_cli.io.sidecar`; the image input first);
    ``target="class"`` is taken for such models only. ``box_threshold`` (``box``, a keras-hub
    RetinaNet): explain detections scoring more than this (default 0.5; ``top`` is how many per image).
    The other arguments are :class:`GradCAM`'s.
    """

    def __init__(self, backbone: str | None = None, *, target: str = "segmentation", reference: str | None = None,
                 embedding: str | None = None, masks: Any = None, sidecar: bool = False,
                 box_threshold: float | None = None, **kwargs: Any):
        from gradcam_cli.io.target_files import reference_files

        self.target: Target = get_target(target)
        if self.target.name == "class" and not sidecar:
            raise OptionError("TargetCAM explains targets beyond a class score; use GradCAM for --target class")
        if self.target.name == "similarity" and reference is None:
            raise OptionError("--target similarity needs --reference IMAGE_OR_NPY (or a folder of them)")
        self.reference_paths = reference_files(reference) if reference is not None else []
        self.embedding, self.masks, self.sidecar = embedding, masks, sidecar
        self.box_threshold = DEFAULT_BOX_THRESHOLD if box_threshold is None else float(box_threshold)
        super().__init__(backbone, **kwargs)
        if self.target.name == "similarity":
            self.references = self._reference_embeddings()
            labels = tuple(p.stem for p in self.reference_paths)
            self.class_names = class_names.ClassNames(labels, tuple(None for _ in labels), tuple((n,) for n in labels))

    # -- the model, tapped -------------------------------------------------------
    def _cut(self, layer: str) -> TapSplit:
        from gradcam_cli.models.tap import tap_model
        from gradcam_cli.models.tokens import transformer_layer

        name = self.target.name
        if name == "box":
            return self._cut_detector(layer)
        embedding = (self.embedding or "auto") if name == "similarity" else None
        self.tap = tap_model(self.model, layer, output=self.profile.output, embedding=embedding)
        shape = self.tap.out_shape
        ranks = self.target.output_ranks
        if ranks is not None and len(shape) + 1 not in ranks:
            raise OptionError(
                f"--target {name} needs a model output of shape (batch, height, width, classes); output "
                f"'{self.tap.out_name}' of model '{self.model.name}' has shape {_shape_text(shape)}"
                + (": a classifier's, use --target class" if len(shape) == 1 else "; pick another with --output"))
        inputs = len(self.model.inputs)
        if len(self.tap.image_inputs) != 1 or self.tap.image_inputs != [0] or (inputs > 1) != self.sidecar:
            fix = ("pass --sidecar to read its non-image inputs from a file beside each image"
                   if len(self.tap.image_inputs) == 1 and self.tap.image_inputs == [0] and inputs > 1 else
                   "--sidecar is for a model whose one image input comes first, then non-image inputs"
                   if len(self.tap.image_inputs) == 1 and inputs > 1 else
                   "--sidecar is for models with non-image inputs" if inputs == 1 else
                   "explain it with gradcam_cli.cam_multi.MultiInputCAM (one map per image input)")
            raise OptionError(f"model '{self.model.name}' has {inputs} inputs ({len(self.tap.image_inputs)} of them "
                              f"images); {fix}")
        count = len(self.reference_paths) if name == "similarity" else int(shape[-1])
        self.profile = replace(self.profile, classes=self.profile.classes if name == "segmentation" else None)
        head = {"softmax": "softmax", "sigmoid": "multilabel"}.get(self.tap.removed, "linear") \
            if name == "class" else "linear"
        return TapSplit(self.tap.layer_names[0], self.tap.feature_shapes[0], count, self.tap.out_name,
                        DESCRIPTIONS[name], head, {"softmax": "softmax", "multilabel": "sigmoid"}.get(head, "linear"),
                        transformer=any(transformer_layer(self.tap.graph, k) for k in self.tap.layer_keys))

    def _cut_detector(self, layer: str) -> TapSplit:
        from gradcam_cli.models.detector import tap_detector

        if self.sidecar:
            raise OptionError("--sidecar is for models with non-image inputs; a detector takes images only")
        self.tap = tap_detector(self.model, layer)
        return TapSplit(self.tap.layer_names[0], self.tap.feature_shapes[0], int(self.model.num_classes),
                        "cls_logits", DESCRIPTIONS["box"])

    @property
    def geometry(self) -> Any:
        """:attr:`GradCAM.geometry`; with non-image inputs the walk from the image input is not made:
        the map is stretched onto the image."""
        if self._geometry is None and len(self.model.inputs) > 1:
            from gradcam_cli.models.geometry import stretch_geometry

            self._geometry = stretch_geometry(tuple(self.profile.input_size), tuple(self.split.feature_shape[:2]),
                                              "stretched: a model with non-image inputs")
        return GradCAM.geometry.fget(self)

    @property
    def needs_sources(self) -> bool:
        """Whether :meth:`explain_prepared` needs each image's path and size (its mask, its sidecar)."""
        return self.masks is not None or self.sidecar or self.target.name == "box"

    def _inputs(self, batch: np.ndarray, sources) -> list:
        """The model's inputs: the image batch first, then each non-image input read from the sidecars."""
        if not self.sidecar:
            return [batch]
        from gradcam_cli.cam_multi import input_names
        from gradcam_cli.io.sidecar import read_sidecar, sidecar_path

        if sources is None:
            raise OptionError("this TargetCAM reads sidecars: pass sources= (each image's path and size)")
        names = input_names(self.model)[1:]
        shapes = {n: tuple(int(d) for d in t.shape[1:]) for n, t in zip(names, self.model.inputs[1:])}
        read = [read_sidecar(sidecar_path(path), shapes) for path, _ in sources]
        return [batch, *(np.stack([values[n] for values in read]) for n in names)]

    def _embed(self):
        import tensorflow as tf

        tap = self.tap
        return tf.function(lambda x: tap.after(tap.before([x]), [tap.before([x])[k] for k in tap.layer_keys]))

    def _reference_embeddings(self) -> np.ndarray:
        """(R, D) unit-length embeddings of the references (images through the model, ``.npy`` read)."""
        from gradcam_cli.io.images import decode
        from gradcam_cli.io.target_files import IMAGE_EXTENSIONS, read_embedding

        shape = self.tap.out_shape
        size = int(shape[-1]) if len(shape) == 3 else int(np.prod(shape))
        embed, vectors = None, []
        for path in self.reference_paths:
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                vectors.append(read_embedding(path, size))
                continue
            embed = embed or self._embed()
            out = np.asarray(embed(self.prepare([decode(str(path))])), np.float32)
            vectors.append((out.mean(axis=(1, 2)) if out.ndim == 4 else out).reshape(-1))
        refs = np.stack(vectors)
        return refs / np.maximum(np.linalg.norm(refs, axis=1, keepdims=True), 1e-12)

    # -- explaining ----------------------------------------------------------------
    def explainer(self, top: int | None, classes: Sequence[int] | None, extra_class: bool = False,
                  method: str | Sequence[str] = DEFAULT_METHOD, options: MethodOptions | None = None):
        from gradcam_cli.engine.explainer import resolve_methods
        from gradcam_cli.engine.targeted import TargetExplainer
        from gradcam_cli.targets.kinds import Context

        methods = resolve_methods(method)
        check_methods(self.target, methods)
        options = options or MethodOptions()
        if self.target.name == "box" and (options.aug_smooth or classes is not None):
            raise OptionError("--target box explains the top detections (--boxes-top): leave out "
                              + ("--aug-smooth (a flipped image has other detections)" if options.aug_smooth
                                 else "--class"))
        if self.target.name == "similarity" and classes is None:
            classes = range(self.split.num_classes)  # every reference
        items = None if classes is None else tuple(int(c) for c in classes)
        count = self.tap.max_detections if self.target.name == "box" else self.split.num_classes
        top = None if items is not None else min(int(top or DEFAULT_TOP), count)
        key = (top, items, tuple(m.name for m in methods), options)
        if key not in self._explainers:
            mask_shape = tuple(self.tap.out_shape[:2]) if self.masks is not None else None
            context = Context(references=getattr(self, "references", None), box_threshold=self.box_threshold,
                              detector=self.tap if self.target.name == "box" else None)
            scalars = self.target.scalars
            self._explainers[key] = TargetExplainer(
                self.tap, lambda out, mask: scalars(out, replace(context, mask=mask)), top=top, items=items,
                method=methods, options=options, mask_shape=mask_shape)
        return self._explainers[key]

    def explain(self, images, *, top: int = DEFAULT_TOP, classes=None, batch_size: int = DEFAULT_BATCH,
                method=DEFAULT_METHOD, value_range=None, options: MethodOptions | None = None,
                masks: Sequence[np.ndarray] | None = None) -> list[Explanation]:
        """Explain images (see :meth:`GradCAM.explain`); ``masks``: one bool region per image (segmentation)."""
        from gradcam_cli.io.discover import batched

        indices = self.resolve_classes(classes) if classes else None
        images = list(images)
        regions = [None] * len(images) if masks is None else [np.asarray(m, bool) for m in masks]
        results: list[Explanation] = []
        for chunk in batched(list(zip(images, regions)), batch_size):
            sizes = {"sources": [(None, np.shape(image)[:2]) for image, _ in chunk]} \
                if self.target.name == "box" else {}  # each box's original pixels
            results.extend(self.explain_prepared(
                self.prepare([image for image, _ in chunk], value_range), top=top, indices=indices, method=method,
                options=options, regions=None if masks is None else [region for _, region in chunk], **sizes))
        return results

    def explain_prepared(self, batch: np.ndarray, *, top: int = DEFAULT_TOP, indices: Sequence[int] | None = None,
                         truth=None, threshold=None, method=DEFAULT_METHOD, options: MethodOptions | None = None,
                         sources: Sequence[tuple[str, tuple[int, int]]] | None = None,
                         regions: Sequence[np.ndarray] | None = None) -> list[Explanation]:
        """Explain a preprocessed batch. ``sources``: each image's (path, (height, width)), to find its
        mask; or ``regions``: the masks themselves. ``truth`` and ``threshold`` are class-score
        settings: refused (the CLI refuses them first)."""
        if truth is not None or threshold is not None:
            raise OptionError(f"--labels-csv and --threshold apply to --target class, not {self.target.name}")
        explainer = self.explainer(top, indices, method=method, options=options)
        mask = None
        if self.masks is not None:
            if regions is None and self.masks is True:
                raise OptionError("this TargetCAM takes masks: pass masks= (one per image) to explain")
            if regions is None:
                regions = [self.masks.read(path, size) for path, size in sources]
            mask = np.stack([_resized(r, self.tap.out_shape[:2]) for r in regions])
        elif regions is not None:
            raise OptionError("masks given to a TargetCAM built without masks=; build it with masks=")
        out = explainer(self._inputs(batch, sources), mask)
        names = [m.name for m in explainer.methods]
        by_rank = indices is None and self.target.name != "similarity"  # similarity: every reference, in order
        if self.target.name == "class":  # the probabilities of a softmax / sigmoid head, as GradCAM gives them
            out = _squashed(out, self.split.activation)
        if self.target.name == "box":
            size = self.profile.input_size
            return [box_explanation(out.values[b], out.aux[b], out.items[b], out.method_maps[b], names,
                                    self.class_names.label, size, tuple(sources[b][1]) if sources else size,
                                    self.box_threshold) for b in range(batch.shape[0])]
        return [self._target_explanation(out, b, by_rank, names, None if mask is None else mask[b])
                for b in range(batch.shape[0])]

    def _target_explanation(self, out: Any, b: int, by_rank: bool, methods: list, mask: np.ndarray | None):
        rank, values = out.rank[b], out.values[b]
        predictions, details, regions = [], [], []
        shape = self.tap.out_shape
        for n, item in enumerate(int(i) for i in out.items[b]):
            predictions.append(Prediction(
                rank=n + 1 if by_rank else rank_of(rank, item), class_index=item,
                class_id=self.class_names.class_id(item), label=self.class_names.label(item),
                probability=float(rank[item] if self.target.name == "class" else values[item])))
            if self.target.name == "class":
                continue
            if self.target.name == "similarity":
                details.append({"similarity": float(values[item]), "reference": str(self.reference_paths[item])})
                continue
            area = float(mask.sum()) if mask is not None else float(shape[0] * shape[1])
            share = float(rank[item]) / max(area, 1.0)
            present = rank[item] > 0
            details.append({"pixel_share": round(share, 6), "present": bool(present),
                            **({} if present else {"empty": "class absent from the region: its map is empty"})})
            regions.append(mask > 0 if mask is not None else out.aux[b] == item)
        maps = out.method_maps[b]  # (N, M, h, w)
        if self.target.name == "segmentation":
            maps = maps * np.array([d["present"] for d in details], np.float32)[:, None, None, None]
        by_method = {name: maps[:, i] for i, name in enumerate(methods)}
        return Explanation(predictions=predictions, maps=by_method[methods[0]], probabilities=rank.astype(np.float32),
                           maps_by_method=by_method, details=details or None,
                           regions=np.stack(regions) if regions else None)

    def describe(self) -> dict:
        info = super().describe()
        info.update(head="target", score=self.split.score_description, target=self.target.name,
                    engine=TARGET_ENGINE)
        info["output"] = self.tap.out_name
        if self.target.name == "similarity":
            info["references"] = [str(p) for p in self.reference_paths]
        if self.target.name == "box":
            info["box_score_threshold"] = self.box_threshold
        return info


def cam_for(settings: ModelSettings, targets: TargetSettings | None = None, profile: Any = None) -> GradCAM:
    """The front end the settings describe: a :class:`GradCAM` for class scores, else a :class:`TargetCAM`."""
    if targets is None or (targets.kind == "class" and not targets.sidecar):
        return GradCAM.from_settings(settings, profile=profile)
    from gradcam_cli.io.target_files import Masks

    s = settings
    return TargetCAM(
        s.backbone, target=targets.kind, reference=targets.reference, embedding=targets.embedding,
        masks=None if targets.mask is None else Masks(targets.mask), sidecar=targets.sidecar, profile=profile,
        box_threshold=targets.box_score_threshold,
        model=s.model,
        weights=s.weights, layer=s.layer, output=s.output, input_size=s.input_size, preprocessing=s.preprocessing,
        mean=s.mean, std=s.std, labels=s.labels, custom_objects=s.custom_objects, config_dirs=s.config_dirs,
        precision=s.precision)


def _squashed(out: Any, activation: str) -> Any:
    """A class target's batch with ``rank`` turned into probabilities (the order is the logits')."""
    from dataclasses import replace as with_field

    logits = out.values.astype(np.float64)
    if activation == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return with_field(out, rank=(e / e.sum(axis=1, keepdims=True)).astype(np.float32))
    if activation == "sigmoid":
        return with_field(out, rank=(1 / (1 + np.exp(-logits))).astype(np.float32))
    return out


def _resized(region: np.ndarray, size: tuple) -> np.ndarray:
    """A bool region resized (nearest) to the model output's (height, width), as float32 0/1."""
    import cv2

    h, w = int(size[0]), int(size[1])
    return cv2.resize(region.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float32)
