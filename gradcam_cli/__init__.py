"""gradcam-cli: batched Grad-CAM heatmaps for Keras image classifiers.

This module stays light: importing it does not import TensorFlow.

    from gradcam_cli import GradCAM
    cam = GradCAM("efficientnet_lite0")
    [result] = cam.explain([rgb_uint8_array], top=3)
"""

__version__ = "0.2.0"

__all__ = ["GradCAM", "ModelSettings", "RunSettings", "RunOptions", "__version__"]


def __getattr__(name: str):
    if name == "GradCAM":
        from gradcam_cli.engine.cam import GradCAM

        return GradCAM
    if name in ("ModelSettings", "RunSettings", "RunOptions"):
        from gradcam_cli.run import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'gradcam_cli' has no attribute {name!r}")
