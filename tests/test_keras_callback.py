"""gradcam_cli.keras.GradCAMCallback in a real model.fit: TensorBoard's own reader finds every
epoch's overlays, and training is exactly what it is without the callback."""

from __future__ import annotations

import pathlib

import cv2
import keras
import numpy as np
import pytest

from gradcam_cli.keras import GradCAMCallback

SIZE, N_IMAGES, EPOCHS = 16, 3, 2
#: weights after two epochs with and without the callback. The same ops run on the same data in
#: the same order, so they agree to the last bit on one machine; 1e-6 allows only a few float32
#: ULPs of thread-order round-off on O(1) weights, while any change to training (one more update,
#: a batch-norm statistic moved by a training-mode call: lr * |g| or momentum * |x|, >= 1e-4 here,
#: shown by the leaky control below) is orders of magnitude larger.
WEIGHT_ATOL = 1e-6


def model_and_data():
    keras.utils.set_random_seed(7)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, out, name="cb_model")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (64, SIZE, SIZE, 3)).astype(np.float32)
    y = x.mean(axis=(1, 2)).argmax(-1)  # the brightest channel
    return model, x, y


def fit(callbacks):
    model, x, y = model_and_data()
    keras.utils.set_random_seed(11)  # the same shuffles and dropout masks in every fit
    model.fit(x, y, epochs=EPOCHS, batch_size=16, shuffle=True, verbose=0, callbacks=callbacks)
    return model, x


def read_images(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    found = {}
    for tag in events.Tags()["tensors"]:
        if tag.endswith("/caption"):  # a text summary: the epoch's classes
            found[tag] = [(e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode()) for e in events.Tensors(tag)]
            continue
        for event in events.Tensors(tag):
            value = tensor_util.make_ndarray(event.tensor_proto)  # [width, height, png, png, ...]
            pictures = [cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) for png in value[2:]]
            found.setdefault(tag, []).append((event.step, int(value[0]), int(value[1]), pictures))
    return found


def test_the_callback_logs_every_epoch_and_leaves_training_alone(tmp_path):
    plain, _ = fit([])
    _, x, _ = model_and_data()
    callback = GradCAMCallback(x[:N_IMAGES], log_dir=tmp_path, every=1, top=1, class_names=["r", "g", "b"])
    watched, _ = fit([callback])

    for a, b in zip(plain.get_weights(), watched.get_weights(), strict=True):  # trainable and BN statistics
        np.testing.assert_allclose(b, a, rtol=0, atol=WEIGHT_ATOL)
    assert int(watched.optimizer.iterations.numpy()) == int(plain.optimizer.iterations.numpy()) == EPOCHS * 4
    assert callback.trace_count() == 1  # one compiled pass, reused by the second epoch

    found = read_images(tmp_path / "gradcam")
    captions = {tag.removesuffix("/caption"): found.pop(tag) for tag in list(found) if tag.endswith("/caption")}
    assert sorted(found) == sorted(captions) == [f"gradcam/image_{i:02d}" for i in range(N_IMAGES)]
    pictures = [p for events in found.values() for (_, _, _, ps) in events for p in ps]
    assert len(pictures) == EPOCHS * N_IMAGES
    for events in found.values():
        assert sorted(step for step, *_ in events) == list(range(EPOCHS))
        for _, width, height, ps in events:
            assert (width, height) == (SIZE, SIZE)
            assert all(p.shape == (SIZE, SIZE, 3) for p in ps)

    # the image is the overlay of this epoch's map: redraw the last epoch's from the trained model
    expected = callback.overlays(EPOCHS - 1)
    for tag, pictures_now, caption in expected:
        logged = found[tag][-1][3][0][..., ::-1]  # BGR -> RGB
        assert np.abs(logged.astype(int) - pictures_now[0].astype(int)).max() <= 1  # PNG is lossless; 1: map noise
        assert caption.startswith("epoch 2: gradcam maps of ") and caption.split(" maps of ")[1].split()[0] in "rgb"
        assert captions[tag] == [(0, captions[tag][0][1]), (1, caption)]


class Leaky(keras.callbacks.Callback):
    """A control: a callback that runs the model in training mode moves batch-norm statistics."""

    def __init__(self, x):
        super().__init__()
        self.x = x

    def on_epoch_end(self, epoch, logs=None):
        self.model(self.x, training=True)


def test_the_weight_tolerance_would_catch_a_callback_that_touches_training():
    plain, x = fit([])
    leaky, _ = fit([Leaky(x[:N_IMAGES])])
    gap = max(float(np.abs(a - b).max()) for a, b in zip(plain.get_weights(), leaky.get_weights()))
    assert gap > 100 * WEIGHT_ATOL


def test_every_n_epochs_and_bad_arguments(tmp_path):
    _, x, _ = model_and_data()
    callback = GradCAMCallback(x[:2], log_dir=tmp_path, every=2, names=["a", "b"])
    fit([callback])
    found = read_images(tmp_path / "gradcam")
    assert {tag: [step for step, *_ in events] for tag, events in found.items()} == {
        "gradcam/a": [1], "gradcam/b": [1], "gradcam/a/caption": [1], "gradcam/b/caption": [1]}
    with pytest.raises(ValueError, match="logs nowhere"):
        GradCAMCallback(x[:2])
    with pytest.raises(ValueError, match=r"\(N, H, W, C\) batch"):
        GradCAMCallback(x[0], log_dir=tmp_path)


def test_the_callback_logs_to_mlflow_and_wandb_when_asked(tmp_path, monkeypatch):
    import mlflow

    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    _, x, _ = model_and_data()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("cb", artifact_location=(tmp_path / "art").as_uri())
    session = wandb.init(project="cb", dir=str(tmp_path), mode="offline")
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            fit([GradCAMCallback(x[:2], mlflow=True, wandb=True, names=["a", "b"])])
    finally:
        session.finish()
        mlflow.set_tracking_uri(None)
    logged = [f.path for f in mlflow.MlflowClient(uri).list_artifacts(run.info.run_id, "images")]
    for name in ("a", "b"):  # key gradcam/NAME/CLASS_SLOT (MLflow writes / as ~), one per epoch
        steps = sorted(p.split("+")[2] for p in logged if p.startswith(f"images/gradcam~{name}~0+") and p.endswith(".png"))
        assert steps == [str(e) for e in range(EPOCHS)], logged
    folder = pathlib.Path(session.dir).parent
    pictures = list(folder.glob("files/media/images/gradcam/*.png"))
    assert len(pictures) == EPOCHS * 2 and all(cv2.imread(str(p)).shape == (SIZE, SIZE, 3) for p in pictures)


def test_method_options_reach_the_callbacks_explainer(tmp_path):
    """``options`` (here ``centre_activations="on"`` on a CNN, whose auto is off) build the explainer the
    callback logs from: its maps equal an Explainer's with the same options, not the plain one's."""
    from gradcam_cli.engine.explainer import Explainer
    from gradcam_cli.models.split import split_model
    from gradcam_cli.settings import MethodOptions

    model, x, _ = model_and_data()
    on = MethodOptions(centre_activations="on")
    callback = GradCAMCallback(x[:2], log_dir=tmp_path, options=on)
    callback.set_model(model)
    callback.on_train_begin()
    assert callback.explainer.centred
    maps = callback.explainer(x[:2]).maps
    np.testing.assert_allclose(maps, Explainer(split_model(model), top=1, options=on)(x[:2]).maps, atol=1e-6)
    assert np.abs(maps - Explainer(split_model(model), top=1)(x[:2]).maps).max() > 0.05
