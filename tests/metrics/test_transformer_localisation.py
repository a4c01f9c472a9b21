"""Transformers trained here on scenes with one coloured square at a random place (3 colours): with
the automatic layer, the map's peak must lie on the square for >= 85% of 200 held-out scenes.

The ViT (patch 8, 4 blocks, 48 px, 6 x 6 tokens, a mean-pooled head) and the Swin-like model
(4-D stages, window attention) are trained once per session (seeded). Attention rollout is
refused on the Swin-like model (window attention), so it is measured on the ViT only. The figures measured when
these tests were written are in docs/transformers.md; the cases below the bar are marked xfail
strict with their figure, so a change that lifts them past the bar shows up.
"""

from __future__ import annotations

import numpy as np
import pytest
from builders import peak_on
from transformer_builders import held_out, small_swin, small_vit, train

from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.models.graph import flatten
from gradcam_cli.models.split import split_model
from gradcam_cli.models.tokens import block_normalisations

BAR = 0.85
_MODELS: dict = {}


def model_of(kind: str):
    if kind not in _MODELS:
        if kind == "vit":
            _MODELS[kind] = train(small_vit(pool="mean", positions=False), n=800, epochs=6)
        else:
            _MODELS[kind] = train(small_swin(), n=800, epochs=6)
    return _MODELS[kind]


def hit_rate(model, method: str, layer: str = "auto") -> float:
    x, y, boxes = held_out()
    out = Explainer(split_model(model, layer), classes=[0, 1, 2], method=method)(x)
    return float(np.mean([peak_on(out.maps[b, int(y[b])], boxes[b][int(y[b])]) for b in range(len(x))]))


def below(figure: str, note: str = ""):
    return pytest.mark.xfail(strict=True, reason=f"measured {figure} of 200 (bar 85%){note}")


@pytest.mark.parametrize("kind,method", [
    ("vit", "gradcam"),
    pytest.param("vit", "gradcam++", marks=below("12.5%", ": 87.5% of its maps blank (ReLU of a sum below 0 at every token; 98.5% before the ReLU)")),
    pytest.param("vit", "layercam", marks=below("75.5%", ": 24.5% of its maps blank (98.5% before the ReLU)")),
    pytest.param("vit", "scorecam", marks=below("28%", ": 45% of its maps blank")),
    ("vit", "rollout"),
    pytest.param("swin", "gradcam", marks=below("0.5%", ": the model's class evidence rings the square")),
    pytest.param("swin", "gradcam++", marks=below("3.5%")),
    pytest.param("swin", "layercam", marks=below("2.5%")),
    pytest.param("swin", "scorecam", marks=below("44.5%")),
])
def test_the_peak_lies_on_the_object(kind, method):
    model = model_of(kind)
    x, y, _ = held_out()
    assert (model.predict(x, verbose=0).argmax(1) == y).mean() >= 0.95  # the model has learnt the task
    assert hit_rate(model, method) >= BAR


def test_the_automatic_layer_is_the_best_measured_normalisation():
    """The candidates of docs/transformers.md: the last block's first and second LayerNorm
    (pytorch-grad-cam's and torch-cam's advice) and the final one; auto takes the best for Grad-CAM."""
    model = model_of("vit")
    graph = flatten(model)
    norms = {name: step.path for name, step in block_normalisations(graph, graph.output_keys).items()}
    assert norms == {"first": "block3_norm1", "second": "block3_norm2", "final": "norm"}
    rates = {name: hit_rate(model, "gradcam", path) for name, path in norms.items()}
    assert split_model(model).layer_name == "norm" and rates["final"] == max(rates.values()), rates
