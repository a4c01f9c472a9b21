"""Localisation: a CNN trained here on synthetic scenes; its Grad-CAM peak must land on the object.

The model and scenes are test_own_models' softmax case (trained once per test session, shared);
here the engine explains the trained model as it is, without saving or loading it.
"""

from __future__ import annotations

from builders import peak_on, scenes, trained

from gradcam_cli.models.split import split_model
from gradcam_cli.engine.explainer import Explainer


def test_map_peak_falls_on_the_object():
    model = trained("softmax")
    x_test, y_test, boxes = scenes("softmax", 200, seed=2)
    result = Explainer(split_model(model, "target"), top=1)(x_test)
    assert (result.classes[:, 0] == y_test).mean() >= 0.95  # the model learned the task
    hits = sum(peak_on(cam, boxes[b][int(y_test[b])]) for b, cam in enumerate(result.maps[:, 0]))
    assert hits / len(boxes) >= 0.9, f"peak on the object for only {hits}/{len(boxes)} images"
