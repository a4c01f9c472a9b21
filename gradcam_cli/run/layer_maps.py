"""Each method's maps at each layer of a layer sweep (``evaluate --layers``), batch by batch.

The fused methods (:func:`gradcam_cli.engine.layer_sweep.fusable`: Grad-CAM and the other
methods that read one layer's activations and gradients) come from one compiled pass per
batch for all layers (:class:`~gradcam_cli.engine.layer_sweep.SweepExplainer`), which also
gives the explained class. The others (Score-CAM, guided Grad-CAM, aug-smooth) run through one
:class:`gradcam_cli.cam.GradCAM` per layer, on the same model and profile, for that class.
Each layer's maps reach the model input with that layer's own upsampler (its geometry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from gradcam_cli.render.resample import Upsampler
from gradcam_cli.settings import EvalSettings

if TYPE_CHECKING:
    from gradcam_cli.cam import GradCAM


def column(method: str, layer: str) -> str:
    """The name of one method at one layer in the table and ``evaluation.json``: ``method@layer``."""
    return f"{method}@{layer}"


def candidate_columns(settings: EvalSettings) -> list[str]:
    """The scored columns that are not baselines: the methods, or ``method@layer`` for each
    layer (outer) and method (inner) of a sweep."""
    if not settings.layers:
        return list(settings.methods)
    return [column(m, layer) for layer in settings.layers for m in settings.methods]


class LayerMaps:
    """``(batch) -> (classes (B,), probabilities (B, C), {column: (maps at its layer (B, h, w), upsampler)})``."""

    def __init__(self, cam: GradCAM, settings: EvalSettings, indices: Sequence[int] | None = None):
        from gradcam_cli.cam import GradCAM
        from gradcam_cli.engine.layer_sweep import SweepExplainer, fusable

        self.cam, self.settings, self.layers = cam, settings, list(settings.layers)
        options = settings.method_options
        self.fused = [m for m in settings.methods if fusable(m, options)]
        self.others = [m for m in settings.methods if m not in self.fused]
        grid, prefix = cam.token_settings
        self.engine = SweepExplainer(cam.model, self.layers, self.fused, output=cam.profile.output,
                                     classes=indices, options=options, tokens=(grid, prefix),
                                     input_size=cam.profile.input_size)
        self.cams = {layer: cam if layer == cam.layer else GradCAM(model=cam.model, layer=layer, profile=cam.profile,
                                                                   token_grid=grid, prefix_tokens=prefix)
                     for layer in self.layers}

    def upsampler(self, layer: str) -> Upsampler:
        return self.cams[layer].upsampler

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        _, probs, classes, fused = self.engine(batch)
        out: dict = {}
        for layer in self.layers:
            for method in self.settings.methods:
                if method in self.fused:
                    maps = fused[(method, layer)]
                else:
                    found = self.cams[layer].explain_prepared(batch, top=1, truth=classes.tolist(), method=method,
                                                              options=self.settings.method_options)
                    maps = np.stack([e.maps[[p.class_index for p in e.predictions].index(int(c))]
                                     for e, c in zip(found, classes)])
                out[column(method, layer)] = (maps, self.upsampler(layer))
        return classes, probs, out
