"""A model's non-image inputs for one image, from a sidecar file beside it.

``photo.json`` (``{"input_name": [values...], ...}``) or ``photo.csv`` (one row per input:
``input_name,v1,v2,...``) next to ``photo.jpg``, or a file given explicitly. Values are
float32 and reshaped to the input's shape (without the batch axis) by the caller's
:func:`read_sidecar`; each mistake is one :class:`InputError` line.
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np

from gradcam_cli.errors import InputError


def sidecar_path(image: str | pathlib.Path) -> pathlib.Path:
    """The sidecar of ``image``: its ``.json``, else its ``.csv`` (the ``.json`` name when neither exists)."""
    path = pathlib.Path(image)
    for suffix in (".json", ".csv"):
        if path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix)
    return path.with_suffix(".json")


def read_sidecar(path: str | pathlib.Path, shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """``{input name: float32 array of its shape}`` for every input in ``shapes`` (name -> shape
    without the batch axis) from the sidecar at ``path``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"sidecar {path} does not exist; write the model's non-image inputs "
                         f"({', '.join(shapes)}) there as JSON {{\"name\": [values]}}")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as handle:
                raw = {row[0].strip(): [float(v) for v in row[1:]] for row in csv.reader(handle) if row}
        else:
            raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"sidecar {path} cannot be read: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"sidecar {path}: expected a JSON object of input name -> values")
    values = {}
    for name, shape in shapes.items():
        if name not in raw:
            raise InputError(f"sidecar {path} has no values for input '{name}'; it holds {', '.join(raw) or 'none'}")
        array = np.asarray(raw[name], np.float32)
        if array.size != int(np.prod(shape)):
            raise InputError(f"sidecar {path}: input '{name}' takes {int(np.prod(shape))} values {tuple(shape)}, "
                             f"got {array.size}")
        values[name] = array.reshape(shape)
    return values
