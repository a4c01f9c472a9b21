"""The library front end: a loaded model, cut at its target layer, that explains arrays.

No Click, no printing, no files (the folder runner in :mod:`gradcam_cli.run` does those).

    from gradcam_cli import GradCAM
    cam = GradCAM("efficientnet_lite0")
    [result] = cam.explain([rgb_uint8_array], top=3)
    result.predictions[0].label, result.maps.shape     # 'tiger_cat', (3, 7, 7)
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from gradcam_cli.config import classes as class_names
from gradcam_cli.config.profiles import (
    DEFAULT_BACKBONE,
    PREPROCESSING,
    Profile,
    get_profile,
    load_registry,
    override_profile,
    own_model_profile,
)
from gradcam_cli.errors import ModelError, OptionError
from gradcam_cli.io.discover import batched
from gradcam_cli.models.geometry import STRETCH, Geometry, upsample
from gradcam_cli.models.inputs import model_channels, model_input_size
from gradcam_cli.models.layer_walk import layer_geometry
from gradcam_cli.render.resample import Upsampler, upsample_linear
from gradcam_cli.results import Explanation, Prediction, explained_targets, rank_of
from gradcam_cli.settings import DEFAULT_BATCH, DEFAULT_METHOD, DEFAULT_TOP, PRECISIONS, MethodOptions, ModelSettings


def method_tuple(method: str | Sequence[str]) -> tuple[str, ...]:
    """``method=`` as the library takes it (one name or several) -> a tuple of names."""
    return (method,) if isinstance(method, str) else tuple(method)


def engine_description(split: Any) -> str:
    """How the maps are computed (see :class:`gradcam_cli.engine.explainer.Explainer`)."""
    if not split.cut:
        return "full model on tiled input (a skip connection crosses the target layer)"
    if split.heavy_head:
        return "trunk once + head once, N backward passes (batch Jacobian)"
    return "trunk once + head on tiled activations"


def weights_description(profile: Profile, weights: str) -> str:
    """What the header and ``--dry-run`` say about the weights in use."""
    if profile.model is not None:
        return f"saved model {profile.model}"
    if weights == "none":
        return "none (random initialisation: maps and predictions are meaningless)"
    if weights == "imagenet":
        return f"imagenet ({profile.weights_source()})"
    return str(weights)


def preprocessing_description(profile: Profile) -> dict:
    prep = {"mode": profile.preprocessing, "description": PREPROCESSING[profile.preprocessing]}
    if profile.preprocessing == "mean_std":
        prep.update(mean=list(profile.mean), std=list(profile.std))
    if profile.channels == 1:
        prep.update(channels=1, grey="ITU-R BT.601 luma of the RGB image (0.299 R + 0.587 G + 0.114 B)")
    return prep


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


def _image_list(images: Any) -> list:
    """A list of images; an ndarray must be an (N, H, W, C) batch (one (H, W, C) image is ambiguous)."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"images must be a list of images or an (N, H, W, C) batch; got one array of shape "
                             f"{tuple(images.shape)} and dtype {images.dtype}: pass [image] for one image")
        return list(images)
    return list(images)


def _placed(cam: np.ndarray, size: tuple[int, int], *, geometry: Geometry) -> np.ndarray:
    cam = np.asarray(cam)
    return upsample(cam if cam.dtype == np.uint8 else cam.astype(np.float32, copy=False), geometry, size)


def upsampler_of(geometry: Geometry) -> Upsampler:
    """How maps of a layer with this ``geometry`` reach an image whose resize fed the model: the
    bilinear stretch ('same'-padded models), else each cell at its receptive field's centre."""
    return upsample_linear if geometry.kind == STRETCH else functools.partial(_placed, geometry=geometry)


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
        token_grid: tuple[int, int] | None = None, prefix_tokens: int | None = None,
    ):
        from gradcam_cli.models.build import build_model
        from gradcam_cli.models.hub import adopt_hub
        from gradcam_cli.models.load import load_user_model

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if profile is None:
            if model is not None and backbone is None:
                profile = own_model_profile(model)
            else:
                profile = get_profile(load_registry(config_dirs), backbone or DEFAULT_BACKBONE)
        self.profile = override_profile(profile, input_size=input_size, preprocessing=preprocessing, mean=mean, std=std,
                                        labels=labels, output=output)
        self.weights = "none" if weights in (None, "none") else str(weights)
        if precision == "mixed" and (model is not None or self.profile.model is not None):
            raise OptionError("--precision mixed applies to registry backbones; a saved model keeps its own dtypes")
        self.precision = precision
        with _dtype_policy("mixed_float16" if precision == "mixed" else None):
            if model is not None and not isinstance(model, (str, pathlib.Path)):
                self.model = model
            elif self.profile.model is not None:
                self.model = load_user_model(self.profile.model, custom_objects)
            else:
                self.model = build_model(self.profile, self.weights)
        self.hub, self.model, self.profile = adopt_hub(self.model, self.profile, converter=preprocessing is None and (
            not profile.source or profile.preprocessing == "converter"))  # a keras-hub classifier: its view, converter
        self.profile = replace(self.profile, input_size=model_input_size(self.model, self.profile.input_size),
                               channels=model_channels(self.model, self.profile))
        self._tokens = (token_grid or self.profile.token_grid,
                        self.profile.prefix_tokens if prefix_tokens is None else prefix_tokens)
        self.split = self._cut(layer or self.profile.target_layer)
        self.layer = self.split.layer_name
        base = pathlib.Path(self.profile.source).parent if self.profile.source else None
        self.class_names = class_names.for_model(self.profile.classes, base, self.split.num_classes, self.split.head_type)
        self._explainers: dict[Any, Any] = {}
        self._geometry: Geometry | None = None
        #: the largest batch the model ran without running out of memory (None: not limited yet)
        self.max_batch: int | None = None

    @property
    def token_settings(self) -> tuple:
        """(token grid, prefix tokens) as given (flags or profile; None: found from the model)."""
        return self._tokens

    def _cut(self, layer: str) -> Any:
        """The model cut at its target layer; other targets cut it their way (:mod:`gradcam_cli.cam_targets`)."""
        from gradcam_cli.models.split import split_model

        grid, prefix = self._tokens
        return split_model(self.model, layer, output=self.profile.output, token_grid=grid, prefix_tokens=prefix,
                           input_size=self.profile.input_size)

    # -- targets ---------------------------------------------------------------
    def resolve_classes(self, tokens: Sequence[str | int]) -> list[int]:
        """Class indices from indices or names (case-insensitive); TargetError otherwise."""
        return [self.class_names.resolve(t, self.split.num_classes) for t in tokens]

    @classmethod
    def from_settings(cls, settings: ModelSettings, profile: Profile | None = None) -> "GradCAM":
        """Build from a :class:`gradcam_cli.settings.ModelSettings` (what the CLI does)."""
        s = settings
        return cls(
            s.backbone, profile=profile, model=s.model, weights=s.weights, layer=s.layer, output=s.output,
            input_size=s.input_size, preprocessing=s.preprocessing, mean=s.mean, std=s.std, labels=s.labels,
            custom_objects=s.custom_objects, config_dirs=s.config_dirs, precision=s.precision,
            token_grid=s.token_grid, prefix_tokens=s.prefix_tokens,
        )

    def explainer(self, top: int | None, classes: Sequence[int] | None, extra_class: bool = False,
                  method: str | Sequence[str] = DEFAULT_METHOD, options: MethodOptions | None = None):
        """The compiled explainer for these targets, method(s) and method options, built once and kept."""
        from gradcam_cli.engine.explainer import Explainer

        method, options = method_tuple(method), options or MethodOptions()
        key = (("top", top) if classes is None else ("classes", tuple(classes)), extra_class, method, options)
        if key not in self._explainers:
            self._explainers[key] = Explainer(
                self.split, top=top if classes is None else None, classes=classes, extra_class=extra_class,
                method=method, options=options,
            )
        return self._explainers[key]

    def resolved(self, options: MethodOptions, methods: Sequence[str]) -> dict:
        """What ``options``' ``auto`` values resolve to at this model's layer for ``methods``, as run files
        record it (:meth:`MethodOptions.resolved`: ``centred``, ``masked_toward``)."""
        from gradcam_cli.methods.registry import masks_input

        return options.resolved(self.split.transformer, masks_input(methods))

    # -- arrays in, arrays out -------------------------------------------------
    def prepare(self, images: Sequence[np.ndarray], value_range: tuple[float, float] | None = None) -> np.ndarray:
        """Images of any size (see :meth:`explain` for what is accepted) -> the model's float32 input batch
        (N, H, W, C): C = 1 (the BT.601 luma) for a grey model."""
        from gradcam_cli.io.pixels import to_rgb_uint8
        from gradcam_cli.io.preprocess import normalise, resize

        rgb = [to_rgb_uint8(img, value_range) for img in _image_list(images)]
        return normalise(np.stack([resize(img, self.profile.input_size) for img in rgb]), self.profile)

    def explain(
        self,
        images: Sequence[np.ndarray],
        *,
        top: int = DEFAULT_TOP,
        classes: Sequence[str | int] | None = None,
        batch_size: int = DEFAULT_BATCH,
        method: str | Sequence[str] = DEFAULT_METHOD,
        value_range: tuple[float, float] | None = None,
        options: MethodOptions | None = None,
    ) -> list[Explanation]:
        """Explain a list of images (or an (N, H, W, C) batch): top-N classes, or the given ``classes``.

        Each image: (H, W) or (H, W, 1) grey, (H, W, 3) RGB or (H, W, 4) RGBA (composited on
        white), any size; uint8 0..255, or float with ``value_range=(0, 1)`` or ``(0, 255)``.
        Anything else raises one ``ValueError`` naming the shape and dtype received.
        ``method``: a method name or several (all from one forward and backward pass);
        ``options``: a :class:`gradcam_cli.settings.MethodOptions` (Score-CAM's settings, smoothing).
        """
        indices = self.resolve_classes(classes) if classes else None
        results: list[Explanation] = []
        for chunk in batched(_image_list(images), batch_size):
            results.extend(self.explain_prepared(self.prepare(chunk, value_range), top=top, indices=indices,
                                                 method=method, options=options))
        return results

    def _run_model(self, explainer: Any, batch: np.ndarray, extra: np.ndarray | None):
        """Run the compiled explainer, halving the batch on out-of-memory without losing images."""
        import tensorflow as tf

        from gradcam_cli.engine.explainer import CamBatch

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

    def explain_prepared(
        self,
        batch: np.ndarray,
        *,
        top: int = DEFAULT_TOP,
        indices: Sequence[int] | None = None,
        truth: Sequence[int | None] | None = None,
        threshold: float | None = None,
        method: str | Sequence[str] = DEFAULT_METHOD,
        options: MethodOptions | None = None,
    ) -> list[Explanation]:
        """Explain a preprocessed batch (``prepare``'s output): the ``top`` classes, or ``indices``.

        ``truth``: per image, a class that must also get a map (its true label; None for
        none). ``threshold``: keep only targets at least this probable."""
        extra = None if truth is None else np.array([-1 if t is None else t for t in truth], np.int32)
        explainer = self.explainer(top, indices, extra is not None, method, options)
        out = self._run_model(explainer, batch, None if extra is None else np.maximum(extra, 0))
        names = [m.name for m in explainer.methods]
        return [
            self._explanation(out, b, top if indices is None else None, None if extra is None else int(extra[b]),
                              threshold, names)
            for b in range(batch.shape[0])
        ]

    def _explanation(self, out: Any, b: int, top: int | None, true: int | None, threshold: float | None,
                     methods: Sequence[str]) -> Explanation:
        """Image ``b`` of the engine's output as an :class:`Explanation` (see :func:`explained_targets`)."""
        probs = out.probs[b]
        kept = explained_targets(out.classes[b], out.scores[b], probs, top=top, true=true, threshold=threshold)
        predictions = [
            Prediction(rank=t.rank, class_index=t.class_index, class_id=self.class_names.class_id(t.class_index),
                       label=self.class_names.label(t.class_index), probability=float(probs[t.class_index]))
            for t in kept
        ]
        slots = [t.slot for t in kept]
        stacked = out.method_maps[b][slots]  # (N, M, h, w)
        by_method = {name: stacked[:, i] for i, name in enumerate(methods)}
        guided = out.guided[b][slots] if "guided" in methods else None
        return Explanation(predictions=predictions, maps=by_method[methods[0]], probabilities=probs,
                           maps_by_method=by_method, guided=guided,
                           true_rank=rank_of(probs, true) if true is not None and true >= 0 else None)

    @property
    def geometry(self) -> Geometry:
        """Where each target-layer cell lies in the model input (:mod:`gradcam_cli.models.geometry`), found once."""
        if self._geometry is None:
            self._geometry = layer_geometry(self.model, self.layer, input_size=tuple(self.profile.input_size))
            h, w = self.split.feature_shape[:2]
            if self._geometry.map_size is None or None in tuple(self._geometry.map_size):
                self._geometry = self._geometry.for_map(h, w)
        return self._geometry

    @property
    def upsampler(self) -> Upsampler:
        """How this model's maps reach an image whose resize fed the model (:func:`upsampler_of`)."""
        return upsampler_of(self.geometry)

    # -- provenance --------------------------------------------------------------
    def describe(self) -> dict:
        """What was explained and how: the model half of the run header (no run options)."""
        p = self.profile
        info = {
            "backbone": p.name,
            "model": self.model.name,
            "target_layer": self.layer,
            "target_layer_shape": list(self.split.feature_shape),
            "input_size": list(p.input_size),
            "preprocessing": preprocessing_description(p),
            "weights": weights_description(p, self.weights),
            "precision": self.precision,
            "head": self.split.head_type,
            "score": self.split.score_description,
            "engine": engine_description(self.split),
            "geometry": self.geometry.to_json(),
            **({"tokens": self.split.tokens.to_json()} if self.split.tokens is not None else {}),
        }
        if len(self.model.outputs) > 1:
            info["output"] = self.split.output_name
        return self.hub.header(info) if self.hub is not None else info
