"""gradcam-cli: batched Grad-CAM heatmaps for Keras image classifiers.

This module stays light: importing it does not import TensorFlow.

    from gradcam_cli import GradCAM
    cam = GradCAM("efficientnet_lite0")
    [result] = cam.explain([rgb_uint8_array], top=3)
"""

from gradcam_cli._version import __version__
from gradcam_cli.settings import (
    MethodOptions,
    ModelSettings,
    OutputSettings,
    RunOptions,
    RunSettings,
    TargetSettings,
)

__all__ = ["GradCAM", "MethodOptions", "ModelSettings", "OutputSettings", "RunOptions", "RunSettings",
           "TargetSettings", "__version__"]


def __getattr__(name: str):
    if name == "GradCAM":
        from gradcam_cli.cam import GradCAM

        return GradCAM
    raise AttributeError(f"module 'gradcam_cli' has no attribute {name!r}")
