"""Build a registry backbone from its profile: pretrained, random, or from a local weights file."""

from __future__ import annotations

import contextlib
import importlib
import pathlib
import sys
from typing import Any, Callable

from gradcam_cli.config.paths import keras_cache_dir
from gradcam_cli.config.profiles import Profile
from gradcam_cli.errors import ModelError, WeightsError, first_line


def _resolve_builder(profile: Profile) -> Callable[..., Any]:
    spec = profile.builder
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"{profile.source}: builder '{spec}' cannot be imported ({exc}); "
            "use 'keras.applications.NAME' or 'package.module:function'"
        ) from None
    if not callable(obj):
        raise ModelError(f"{profile.source}: builder '{spec}' is not callable")
    return obj


def build_model(profile: Profile, weights: str | None = "imagenet") -> Any:
    """Build the profile's model.

    ``weights``: ``"imagenet"`` (the profile's pretrained weights), ``None`` or
    ``"none"`` (random initialisation), or a path to a local weights file. A keras-hub
    ``preset`` profile is built by :func:`gradcam_cli.models.hub.build_preset`.
    Keras' own download messages go to stderr, never to stdout.
    """
    if profile.preset is not None:
        from gradcam_cli.models.hub import build_preset

        return build_preset(profile, weights)
    builder = _resolve_builder(profile)
    height, width = profile.input_size
    kwargs = {"input_shape": (height, width, 3)}
    if weights in (None, "none"):
        with contextlib.redirect_stdout(sys.stderr):
            return builder(weights=None, **kwargs)
    if weights == "imagenet":
        return _build_pretrained(profile, builder, kwargs)
    path = pathlib.Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; pass --weights PATH to an existing file, or --weights none"
        )
    with contextlib.redirect_stdout(sys.stderr):
        model = builder(weights=None, **kwargs)
        try:
            model.load_weights(str(path))
        except Exception as exc:  # keras raises ValueError, OSError, KeyError, ... here
            raise WeightsError(
                f"cannot load weights {path} into backbone '{profile.name}': {first_line(exc)}; "
                "expected a Keras .weights.h5 / .h5 file saved from the same architecture"
            ) from None
    return model


def _build_pretrained(profile: Profile, builder: Callable[..., Any], kwargs: dict) -> Any:
    cached = keras_cache_dir() / profile.weights_file if profile.weights_file else None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return builder(weights="imagenet", **kwargs)
    except WeightsError:
        raise
    except Exception as exc:
        if cached is not None and not cached.is_file():
            raise WeightsError(
                f"the ImageNet weights of '{profile.name}' are not on this machine and could not be "
                f"downloaded: Keras looks for {cached}; copy {profile.weights_file} there, "
                "pass --weights PATH to a local weights file, or --weights none for random weights"
            ) from None
        raise WeightsError(f"cannot build backbone '{profile.name}' with ImageNet weights: {first_line(exc)}") from None

