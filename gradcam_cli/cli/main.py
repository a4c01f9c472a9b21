"""The ``gradcam`` command group. The only package that imports click and tqdm.

TensorFlow is imported lazily, so ``gradcam --help`` and ``gradcam backbones``
stay fast. Data goes to stdout; progress and diagnostics go to stderr.
"""

from __future__ import annotations

import click

from gradcam_cli._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradcam")
def main() -> None:
    """Grad-CAM heatmaps for Keras image classifiers.

    \b
    gradcam explain sample_images/ --out out/   # overlays + predictions.json
    gradcam backbones                           # the registered backbones
    """
