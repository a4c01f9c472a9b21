"""Localisation: a CNN trained here on synthetic scenes; its Grad-CAM peak must land on the object."""

from __future__ import annotations

import keras
import numpy as np

from gradcam_cli.backbones import split_model
from gradcam_cli.cams import Explainer
from gradcam_cli.render import upsample

SIZE, OBJ = 64, 12
COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 40, 230]], np.float32)  # one class per colour


def scenes(n: int, seed: int):
    """Grey noise with one coloured square at a random place; label = its colour."""
    rng = np.random.default_rng(seed)
    x = rng.normal(128, 30, (n, SIZE, SIZE, 3)).clip(0, 255).astype(np.float32)
    labels = rng.integers(0, len(COLOURS), n)
    boxes = rng.integers(0, SIZE - OBJ, (n, 2))
    for i, (y0, x0) in enumerate(boxes):
        x[i, y0 : y0 + OBJ, x0 : x0 + OBJ] = COLOURS[labels[i]] + rng.normal(0, 10, (OBJ, OBJ, 3))
    return (x / 255.0).astype(np.float32), labels, boxes


def test_map_peak_falls_on_the_object():
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(COLOURS), activation="softmax")(x)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x_train, y_train, _ = scenes(1500, seed=1)
    model.fit(x_train, y_train, epochs=4, batch_size=64, verbose=0)

    x_test, y_test, boxes = scenes(200, seed=2)
    result = Explainer(split_model(model, "target"), top=1)(x_test)
    assert (result.classes[:, 0] == y_test).mean() >= 0.95  # the model learned the task
    hits = 0
    for cam, (y0, x0) in zip(result.maps[:, 0], boxes):
        peak_y, peak_x = np.unravel_index(np.argmax(upsample(cam, SIZE, SIZE)), (SIZE, SIZE))
        hits += (y0 <= peak_y < y0 + OBJ) and (x0 <= peak_x < x0 + OBJ)
    assert hits / len(boxes) >= 0.9, f"peak on the object for only {hits}/{len(boxes)} images"
