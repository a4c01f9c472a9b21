"""Where gradcam-cli and Keras keep cached files. One rule each; no TensorFlow here."""

from __future__ import annotations

import os
import pathlib


def gradcam_cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/gradcam-cli``, with ``~/.cache`` when ``XDG_CACHE_HOME`` is unset, empty or
    relative (the XDG Base Directory spec says to ignore a relative value)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = pathlib.Path(base) if base and os.path.isabs(base) else pathlib.Path.home() / ".cache"
    return root / "gradcam-cli"


def keras_cache_dir() -> pathlib.Path:
    """Where Keras looks for downloaded application weights (mirrors keras.src.backend.config)."""
    if "KERAS_HOME" in os.environ:
        base = pathlib.Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = os.path.expanduser("~")
        base = pathlib.Path(home if os.access(home, os.W_OK) else "/tmp") / ".keras"
    return base / "models"
