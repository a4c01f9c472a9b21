"""Load a user's saved ``.keras`` / ``.h5`` model, with custom objects; one-line errors for what Keras reports badly."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import sys
from typing import Any

from gradcam_cli.errors import ModelError, OptionError, first_line


_SAVEDMODEL_HINT = (
    "Keras 3 cannot expose the layers of a TensorFlow SavedModel (only an opaque inference endpoint), "
    "so Grad-CAM cannot reach its feature maps; convert it once with TensorFlow <= 2.15 or tf_keras: "
    "`tf.keras.models.load_model('{path}').save('model.keras')` (or 'model.h5'), then pass that file"
)
_MISSING_OBJECT = (
    re.compile(r"Could not locate (class|function) '([^']+)'"),
    re.compile(r"Unknown (layer|object|activation function|activation|loss function|loss|metric function|metric"
               r"|initializer|regularizer|constraint|optimizer)\s*:\s*'?([A-Za-z_][\w.>]*)"),
)



def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _is_keras_object_class(obj: Any) -> bool:
    import keras

    bases = (
        keras.layers.Layer,
        keras.losses.Loss,
        keras.metrics.Metric,
        keras.initializers.Initializer,
        keras.regularizers.Regularizer,
        keras.constraints.Constraint,
        keras.optimizers.Optimizer,
        keras.optimizers.schedules.LearningRateSchedule,
    )
    if issubclass(obj, bases):
        return True
    return callable(getattr(obj, "get_config", None)) and callable(getattr(obj, "from_config", None))


def load_custom_objects(path: str | os.PathLike) -> dict[str, Any]:
    """Import the Python file ``path`` and return the Keras objects it defines.

    A module-level dict ``CUSTOM_OBJECTS`` is used as it is. Otherwise every public
    class defined in the file that is a Keras layer / model / loss / metric /
    initializer / regularizer / constraint (or anything with ``get_config`` and
    ``from_config``), and every public function defined in it, is returned under
    its own name (and its registered name, for ``@register_keras_serializable``).
    """
    import importlib.util
    import inspect

    import keras

    file = pathlib.Path(path)
    if not file.is_file():
        raise OptionError(f"custom objects file {file} does not exist; pass --custom-objects FILE.py (a Python file)")
    module_name = "gradcam_custom_objects_" + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise OptionError(f"custom objects file {file} cannot be imported as a Python module; pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses, pickling and relative lookups need it registered
    folder = str(file.resolve().parent)
    sys.path.insert(0, folder)  # so that the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise OptionError(
            f"cannot import custom objects file {file}: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)

    table = getattr(module, "CUSTOM_OBJECTS", None)
    if table is not None:
        if not isinstance(table, dict) or not all(isinstance(k, str) for k in table):
            raise OptionError(f"custom objects file {file}: CUSTOM_OBJECTS must be a dict of name -> class or function")
        return dict(table)
    objects: dict[str, Any] = {}
    for attr, obj in vars(module).items():
        if attr.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if (inspect.isclass(obj) and _is_keras_object_class(obj)) or inspect.isfunction(obj):
            objects[attr] = obj
            objects.setdefault(getattr(obj, "__name__", attr), obj)
            with contextlib.suppress(Exception):
                objects.setdefault(keras.saving.get_registered_name(obj), obj)
    if not objects:
        raise OptionError(
            f"custom objects file {file} defines no Keras layer, model or function and no CUSTOM_OBJECTS dict"
        )
    return objects


def _check_model_file(file: pathlib.Path) -> None:
    """One-line errors for what Keras would report confusingly (or not at all)."""
    import zipfile

    if not file.exists():
        raise ModelError(f"model {file} does not exist; pass --model PATH to a Keras .keras or .h5 file")
    if file.is_dir():
        from gradcam_cli.models.hub import is_preset_dir

        if is_preset_dir(file):
            return
        if (file / "saved_model.pb").is_file() or (file / "saved_model.pbtxt").is_file():
            raise ModelError(f"model {file} is a TensorFlow SavedModel directory: " + _SAVEDMODEL_HINT.format(path=file))
        raise ModelError(
            f"model {file} is a directory but not a TensorFlow SavedModel (no saved_model.pb); "
            "pass a Keras .keras or .h5 model file, or a keras-hub preset directory (save_to_preset)"
        )
    if file.name in ("saved_model.pb", "saved_model.pbtxt"):
        raise ModelError(
            f"model {file} is part of a TensorFlow SavedModel: " + _SAVEDMODEL_HINT.format(path=file.parent)
        )
    if file.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(
            f"model {file}: unsupported file type '{file.suffix or '(none)'}'; "
            "expected a Keras 3 .keras file or a legacy .h5 file (lower-case extension)"
        )
    if file.suffix == ".keras" and not zipfile.is_zipfile(file):
        raise ModelError(f"model {file} is not a valid .keras file (not a zip archive): corrupt, truncated or misnamed")
    if file.suffix in (".h5", ".hdf5"):
        with open(file, "rb") as handle:
            head = handle.read(8)
        if head != b"\x89HDF\r\n\x1a\n":
            with contextlib.suppress(Exception):
                import h5py

                if h5py.is_hdf5(str(file)):  # HDF5 with a user block: the signature is further in
                    return
            raise ModelError(f"model {file} is not a valid HDF5 (.h5) file: corrupt, truncated or misnamed")


def _load_error(file: pathlib.Path, exc: BaseException, custom_objects: str | None) -> ModelError:
    chain = _exception_chain(exc)
    texts = [str(e) for e in chain]
    for pattern in _MISSING_OBJECT:
        for text in texts:
            match = pattern.search(text)
            if match:
                kind, name = match.group(1), match.group(2)
                kind = "class" if kind in ("class", "layer", "object") else kind
                where = (
                    f"; {custom_objects} does not define it: add it there (or to its CUSTOM_OBJECTS dict)"
                    if custom_objects
                    else "; pass --custom-objects FILE.py that defines it"
                )
                return OptionError(f"cannot load model {file}: it needs the custom {kind} '{name}'{where}")
    joined = "\n".join(texts)
    if "No model config found" in joined:
        return ModelError(
            f"model {file} holds weights only, not a model architecture; save the whole model with "
            "model.save('model.keras') (or pass it as --weights with a matching backbone)"
        )
    if "safe_mode" in joined:
        return ModelError(
            f"cannot load model {file}: it contains a Lambda layer (arbitrary Python code), which Keras refuses "
            "to load in safe mode; replace the Lambda by a custom layer and pass --custom-objects FILE.py, "
            "or load it with safe_mode=False if you trust the file"
        )
    return ModelError(
        f"cannot load model {file}: {type(exc).__name__}: {first_line(exc)}; "
        "expected a Keras 3 .keras file or a legacy .h5 file"
    )


def load_user_model(
    path: str | os.PathLike, custom_objects: str | os.PathLike | None = None, *, safe_mode: bool = True
) -> Any:
    """Load a whole Keras model from a ``.keras`` (Keras 3) or ``.h5`` (legacy) file, uncompiled,
    or a keras-hub image classifier from a local preset directory (``save_to_preset``).

    ``custom_objects``: path to a Python file defining the model's custom layers /
    functions (see :func:`load_custom_objects`). TensorFlow SavedModel directories,
    missing / corrupt files and missing custom classes raise :class:`ModelError`
    with one line that names the file and the fix.
    """
    import keras

    from gradcam_cli.models import hub

    file = pathlib.Path(path)
    _check_model_file(file)
    if file.is_dir():
        return hub.load_preset_dir(file)
    hub_class = hub.keras_file_hub_class(file) if file.suffix == ".keras" else None
    if hub_class is not None:  # import keras_hub: its classes register themselves for deserialisation
        what = "with keras-hub layers" if hub_class == "layers" else f"a keras-hub {hub_class}"
        hub.require_hub(f"model {file} ({what})")
    objects = load_custom_objects(custom_objects) if custom_objects is not None else None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            model = keras.saving.load_model(str(file), custom_objects=objects, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # keras raises TypeError, ValueError, OSError, KeyError, ... here
        raise _load_error(file, exc, None if custom_objects is None else str(custom_objects)) from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"model {file} holds a {type(model).__name__}, not a Keras model")
    return model

