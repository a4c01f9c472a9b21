"""keras-hub image classifiers (the ``[hub]`` extra): load them from a ``.keras`` file, a local
preset directory or a preset name, read their image converter, and give the graph cut a
functional view of them.

* **Loading.** A ``.keras`` file of a keras-hub classifier loads with ``keras.saving`` once
  keras-hub is imported; a directory written by ``save_to_preset`` loads with
  ``keras_hub.models.ImageClassifier.from_preset(DIR)`` (no network); a profile's ``preset``
  name downloads from Kaggle at run time, and fails here with one line where there is no network.
  Without keras-hub installed each says ``pip install 'gradcam-cli[hub]'``.
* **Preprocessing.** The classifier's own image converter (``model.preprocessor.image_converter``)
  computes ``x * scale + offset`` after resizing to its ``image_size``; :class:`Converter` reads it
  and gives the same affine map as the profile's ``mean_std`` (mean = -offset / scale, std =
  1 / scale), which prepares the model input in place of a profile's preprocessing.
* **The view.** keras-hub classifiers output logits (``activation=None``): the view appends a
  Softmax, so the explained score is the logit and the probabilities are its softmax. ViT and DeiT
  backbones are rebuilt block by block (:mod:`gradcam_cli.models.hub_blocks`); CNN backbones
  (ResNet, EfficientNet, DenseNet, MobileNet, VGG, ...) and MiT are functional already, and Swin's
  stages are nodes of its backbone graph.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import sys
import zipfile
from dataclasses import dataclass
from typing import Any

from gradcam_cli.config.profiles import Profile, preset_cached
from gradcam_cli.errors import ModelError, OptionError, WeightsError, first_line

HUB_INSTALL = "pip install 'gradcam-cli[hub]'"


def require_hub(what: str) -> Any:
    """``keras_hub``, imported; one-line ModelError naming ``what`` and the extra when it is missing."""
    try:
        import keras_hub
    except ImportError:
        raise ModelError(f"{what} needs keras-hub, which is not installed: {HUB_INSTALL}") from None
    return keras_hub


def _hub_classes(model: Any) -> list[str]:
    return [c.__name__ for c in type(model).__mro__ if c.__module__.startswith("keras_hub")]


def is_hub_classifier(model: Any) -> bool:
    """True for a keras-hub ``ImageClassifier`` (any subclass); imports nothing."""
    return "ImageClassifier" in _hub_classes(model)


def keras_file_hub_class(file: pathlib.Path) -> str | None:
    """What in a ``.keras`` file needs keras-hub: ``"ViTImageClassifier"`` (the model's class) when
    keras-hub defines the model, ``"layers"`` when only layers inside it come from keras-hub (a
    keras-hub backbone in a model of your own), else None. Read from the archive's config.json;
    nothing is imported."""
    try:
        with zipfile.ZipFile(file) as archive:
            text = archive.read("config.json").decode("utf-8")
        config = json.loads(text)
    except (OSError, KeyError, ValueError, UnicodeDecodeError, zipfile.BadZipFile):
        return None
    module = str(config.get("module") or "")
    registered = str(config.get("registered_name") or "")
    if module.startswith("keras_hub") or registered.startswith("keras_hub>"):
        return str(config.get("class_name") or registered.partition(">")[2] or "model")
    return "layers" if '"module": "keras_hub' in text or '"keras_hub>' in text else None


def is_preset_dir(path: pathlib.Path) -> bool:
    """A directory written by keras-hub's ``save_to_preset`` (config.json + metadata.json)."""
    return path.is_dir() and (path / "config.json").is_file() and (path / "metadata.json").is_file()


def load_preset_dir(path: pathlib.Path) -> Any:
    """The image classifier saved in the local preset directory ``path``; one-line ModelError otherwise."""
    keras_hub = require_hub(f"model {path} (a keras-hub preset directory)")
    if not (path / "task.json").is_file():
        raise ModelError(
            f"model {path} is a keras-hub preset of a backbone alone (no task.json), without a classification "
            "head; save the classifier itself with classifier.save_to_preset(DIR) and pass that directory"
        )
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return keras_hub.models.ImageClassifier.from_preset(str(path))
    except Exception as exc:  # ValueError (not an image classifier), OSError, KeyError, ...
        raise ModelError(
            f"cannot load keras-hub preset {path}: {type(exc).__name__}: {first_line(exc)}; expected a directory "
            "written by an ImageClassifier's save_to_preset"
        ) from None


def build_preset(profile: Profile, weights: str | None) -> Any:
    """The profile's keras-hub preset: ``weights`` ``"imagenet"`` (the preset's), ``"none"`` (its
    architecture, random weights) or a local weights file. Downloads (Kaggle) happen here."""
    keras_hub = require_hub(f"backbone '{profile.name}' (keras-hub preset {profile.preset})")
    pretrained = weights == "imagenet"
    try:
        with contextlib.redirect_stdout(sys.stderr):
            model = keras_hub.models.ImageClassifier.from_preset(profile.preset, load_weights=pretrained)
    except Exception as exc:  # requests' ConnectionError, kagglehub's errors, ValueError, ...
        if not preset_cached(profile.preset):
            raise WeightsError(
                f"the keras-hub preset '{profile.preset}' of backbone '{profile.name}' is not on this machine and "
                f"could not be downloaded ({type(exc).__name__}); run once where a network exists (keras-hub caches "
                "it under ~/.cache/kagglehub), or pass --model DIR with a preset saved by save_to_preset"
            ) from None
        raise WeightsError(
            f"cannot build backbone '{profile.name}' from keras-hub preset '{profile.preset}': {first_line(exc)}"
        ) from None
    if weights in (None, "none", "imagenet"):
        return model
    path = pathlib.Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; pass --weights PATH to an existing file, or --weights none"
        )
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise WeightsError(
            f"cannot load weights {path} into backbone '{profile.name}': {first_line(exc)}; "
            "expected a Keras .weights.h5 file saved from the same preset's classifier"
        ) from None
    return model


@dataclass(frozen=True)
class Converter:
    """What a keras-hub image converter does to an image: resize to ``image_size`` (its
    ``interpolation``; ``crop_to_aspect_ratio``: a centre crop to the target's aspect first),
    then ``x * scale + offset`` per channel (None: that step is skipped)."""

    kind: str
    image_size: tuple[int, int] | None
    scale: tuple[float, float, float] | None
    offset: tuple[float, float, float] | None
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = True

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) with (x - mean) / std == x * scale + offset; None when the converter leaves
        the values as they are (no scale, no offset)."""
        if self.scale is None and self.offset is None:
            return None
        scale = self.scale or (1.0, 1.0, 1.0)
        offset = self.offset or (0.0, 0.0, 0.0)
        if any(s <= 0 for s in scale):
            raise ModelError(f"the model's image converter has a scale of {scale}; gradcam needs a positive scale")
        return tuple(-o / s for o, s in zip(offset, scale)), tuple(1.0 / s for s in scale)

    def to_json(self) -> dict:
        return {
            "class": self.kind,
            "image_size": None if self.image_size is None else list(self.image_size),
            "scale": None if self.scale is None else list(self.scale),
            "offset": None if self.offset is None else list(self.offset),
            "interpolation": self.interpolation,
            "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
        }


def _triple(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    import numpy as np

    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    if flat.size == 1:
        flat = np.repeat(flat, 3)
    if flat.size != 3:
        raise ModelError(f"the model's image converter has {flat.size} per-channel values; gradcam feeds 3 (RGB)")
    return tuple(float(v) for v in flat)  # type: ignore[return-value]


def converter_of(model: Any) -> Converter | None:
    """The classifier's image converter (``model.preprocessor.image_converter``), or None."""
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    if converter is None:
        return None
    size = getattr(converter, "image_size", None)
    return Converter(
        kind=type(converter).__name__,
        image_size=None if size is None or None in tuple(size) else (int(size[0]), int(size[1])),
        scale=_triple(getattr(converter, "scale", None)),
        offset=_triple(getattr(converter, "offset", None)),
        interpolation=str(getattr(converter, "interpolation", "bilinear")),
        crop_to_aspect_ratio=bool(getattr(converter, "crop_to_aspect_ratio", False)),
    )


def outputs_logits(model: Any) -> bool:
    """True when the classifier's last Dense has no activation (keras-hub's default)."""
    import keras

    dense = getattr(model, "output_dense", None)
    activation = dense.activation if dense is not None else keras.activations.get(getattr(model, "activation", None))
    return activation is keras.activations.linear


@dataclass
class HubView:
    """A keras-hub classifier and the functional view the graph cut works on."""

    original: Any
    model: Any  # the view: same weights; blocks rebuilt for ViT / DeiT; a Softmax after logits
    family: str
    rebuilt: bool
    logits: bool
    converter: Converter | None
    converter_used: bool = False  # the converter prepares the input (not --preprocess nor the profile)
    tokens: dict | None = None  # ViT / DeiT: {"grid": [h, w], "prefix_tokens": n} of the blocks' tokens

    def header(self, info: dict) -> dict:
        """The run header ``info`` (GradCAM.describe) with this model's keras-hub facts."""
        info["keras_hub"] = self.describe()
        info["preprocessing"]["source"] = (
            f"the model's image converter ({self.converter.kind})" if self.converter_used
            else "--preprocess or the profile, not the model's image converter"
        )
        return info

    def describe(self) -> dict:
        info = {
            "class": type(self.original).__name__,
            "backbone": type(self.original.backbone).__name__,
            "graph": ("transformer blocks rebuilt as a functional graph of the same layers (same weights)"
                      if self.rebuilt else "the model's own functional graph"),
            "output": ("logits (activation None): probabilities are their softmax, the explained score the logit"
                       if self.logits else "probabilities"),
            "image_converter": None if self.converter is None else self.converter.to_json(),
        }
        if self.tokens is not None:
            info["tokens"] = self.tokens
        return info


def hub_view(model: Any) -> HubView:
    """The functional view of a keras-hub classifier (see the module doc)."""
    import keras

    from gradcam_cli.models import hub_blocks

    if getattr(model, "data_format", "channels_last") == "channels_first" or \
            getattr(model.backbone, "data_format", "channels_last") == "channels_first":
        raise ModelError(f"model '{model.name}' is channels_first; gradcam explains channels_last models")
    logits = outputs_logits(model)
    family = hub_blocks.family_of(model)
    if family is not None:
        view = hub_blocks.rebuild(model, softmax=logits)
    elif logits:
        probabilities = keras.layers.Softmax(name="probabilities", dtype="float32")(model.outputs[0])
        view = keras.Model(model.inputs, probabilities, name=model.name)
    else:
        view = model
    return HubView(original=model, model=view, family=family or type(model.backbone).__name__.removesuffix("Backbone"),
                   rebuilt=family is not None, logits=logits, converter=converter_of(model),
                   tokens=hub_blocks.token_layout(model))


def converter_profile(profile: Profile, converter: Converter | None, model_name: str) -> Profile:
    """``profile`` with the converter's preprocessing (``mean_std``, or ``none`` where it changes
    nothing) and, where the profile has none, its image size."""
    from dataclasses import replace

    if converter is None:
        if profile.preprocessing == "converter":
            raise OptionError(
                f"model '{model_name}' has no image converter (its preprocessor is None), so preprocessing "
                "'converter' has nothing to read; pass --preprocess (and --mean / --std) for it"
            )
        return profile
    pair = converter.mean_std()
    size = profile.input_size or converter.image_size
    if pair is None:
        return replace(profile, preprocessing="none", mean=None, std=None, input_size=size)
    mean, std = pair
    return replace(profile, preprocessing="mean_std", mean=mean, std=std, input_size=size)


def adopt_hub(model: Any, profile: Profile, *, converter: bool) -> tuple[HubView | None, Any, Profile]:
    """(view, the model to explain, the profile) for a loaded model: a keras-hub classifier becomes its
    :class:`HubView`'s model and, with ``converter``, its image converter prepares the input; any other
    model is returned as it is (a profile asking for 'converter' then is a one-line OptionError)."""
    if not is_hub_classifier(model):
        if profile.preprocessing == "converter":
            raise OptionError(
                f"preprocessing 'converter' reads a keras-hub model's image converter, and model '{model.name}' "
                "is no keras-hub image classifier; pass another --preprocess"
            )
        return None, model, profile
    view = hub_view(model)
    if converter:
        profile = converter_profile(profile, view.converter, view.model.name)
        view.converter_used = view.converter is not None
    return view, view.model, profile
