"""A saved model's input rank read from its file, without TensorFlow: 4 for images, 5 for volumes.

``explain`` decides before loading a model whether its inputs are volumes (a 3-D model) or images,
so that a volume given to a 2-D model is refused before anything loads. A ``.keras`` file is a zip
whose ``config.json`` names its ``InputLayer`` s' ``batch_shape``; an ``.h5`` file holds the same
JSON in its ``model_config`` attribute. None where neither can be read (the model then loads and
is checked as it is).
"""

from __future__ import annotations

import json
import zipfile
from typing import Any


def _input_shapes(node: Any) -> list:
    """Every InputLayer's batch shape in a model config, nested models included, in order."""
    found = []
    if isinstance(node, dict):
        if node.get("class_name") == "InputLayer":
            config = node.get("config", {})
            shape = config.get("batch_shape") or config.get("batch_input_shape")
            if isinstance(shape, list):
                found.append(shape)
        for value in node.values():
            found.extend(_input_shapes(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_input_shapes(value))
    return found


def _config(path: str) -> Any:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    import h5py

    with h5py.File(path, "r") as handle:
        raw = handle.attrs.get("model_config")
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)


def saved_input_rank(path: str | None) -> int | None:
    """The rank of the first input of the model saved in ``path`` (batch axis included), or None."""
    if not path:
        return None
    try:
        shapes = _input_shapes(_config(str(path)))
    except Exception:  # noqa: BLE001 - anything unreadable: the model loads and says what is wrong
        return None
    return len(shapes[0]) if shapes else None
