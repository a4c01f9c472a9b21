"""Maps where models are trained and tracked: TensorBoard, MLflow and Weights & Biases.

:mod:`gradcam_cli.trackers.runfolder` reads a finished run folder into one record (overlays with
their captions, settings, ``evaluate`` figures, artifacts); :mod:`~gradcam_cli.trackers.sinks`
hands it, or a training callback's maps (:mod:`gradcam_cli.keras`), to each tracker. Every tracker
is an optional extra: :func:`require` imports it or says, in one line, which extra to install.
"""

from __future__ import annotations

import importlib

from gradcam_cli.errors import InputError

#: tracker -> (the module to import, what it is called, the extra that installs it)
EXTRAS = {
    "tensorboard": ("tensorboard", "TensorBoard", "tensorboard"),
    "mlflow": ("mlflow", "MLflow", "mlflow"),
    "wandb": ("wandb", "Weights & Biases (wandb)", "wandb"),
}
TRACKERS = tuple(EXTRAS)


class MissingExtraError(InputError):
    """A tracker's package is not installed: the fix is its extra."""


def require(tracker: str):
    """The tracker's module (``tensorboard``, ``mlflow`` or ``wandb``), imported; MissingExtraError,
    one line naming the extra to install, when it is absent."""
    module, name, extra = EXTRAS[tracker]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"logging to {name} needs the {module} package, which is not installed: "
                                f"pip install 'gradcam-cli[{extra}]'") from None
