"""What a model's input takes: its height and width, and its channels (RGB or grey), checked
against what the profile or the flags ask, with one-line errors where they disagree."""

from __future__ import annotations

from typing import Any, Sequence

from gradcam_cli.config.profiles import Profile
from gradcam_cli.errors import ModelError, OptionError


def model_input_size(model: Any, asked: Sequence[int] | None) -> tuple[int, int]:
    """The (height, width) the model is fed: its own fixed size, or ``asked`` (``--input-size`` or
    the profile's ``input_size``) where it takes any; one-line OptionError where they disagree or
    neither gives a size."""
    shape = tuple(model.inputs[0].shape)
    fixed = (shape[1], shape[2]) if len(shape) == 4 else (None, None)
    if asked is None:
        if len(shape) != 4 or None in fixed:
            raise OptionError(
                f"model '{model.name}' takes inputs of shape {shape}, without a fixed height and width; "
                "pass --input-size"
            )
        return int(fixed[0]), int(fixed[1])
    size = (int(asked[0]), int(asked[1]))
    if any(f is not None and int(f) != a for f, a in zip(fixed, size)):
        own = "x".join("any" if f is None else str(int(f)) for f in fixed)
        raise OptionError(
            f"model '{model.name}' takes {own} inputs, not the {size[0]}x{size[1]} asked (--input-size or the "
            f"profile's input_size); drop --input-size (the size is read from the model) or give its own size"
        )
    return size


def model_channels(model: Any, profile: Profile) -> int:
    """The model input's channels: 3 (RGB), or 1 (grey: fed the BT.601 luma, whose one value a
    per-RGB-channel preprocessing cannot normalise); anything else is a one-line error."""
    from gradcam_cli.io.preprocess import PER_CHANNEL

    shape = tuple(model.inputs[0].shape)
    channels = shape[-1] if len(shape) == 4 else None
    if channels in (None, 3):
        return 3
    if channels != 1:
        raise ModelError(f"model '{model.name}' takes {channels}-channel inputs; gradcam feeds 3 (RGB) or 1 (grey)")
    mode = profile.preprocessing
    if mode in PER_CHANNEL or (mode == "mean_std" and (len(set(profile.mean)) > 1 or len(set(profile.std)) > 1)):
        raise OptionError(
            f"model '{model.name}' takes 1-channel (grey) inputs, but preprocessing '{mode}' is per RGB channel; "
            "use --preprocess none, scale, tf, or mean_std with one --mean and --std"
        )
    return 1
