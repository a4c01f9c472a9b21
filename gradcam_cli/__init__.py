"""gradcam-cli: batched Grad-CAM heatmaps for Keras image classifiers.

This module stays light: importing it does not import TensorFlow.
"""

__version__ = "0.1.0"
