"""Video models through `gradcam explain`: a Conv3D over (T, H, W) and a time-distributed 2-D CNN,
trained here to tell a red moving square from a blue one, give maps over time whose per-frame peak
lies on the square; the time interpolation of a (t, h, w) map is the stated formula."""

from __future__ import annotations

import json
import pathlib

import cv2
import keras
import numpy as np
import pytest
from builders import PALETTE
from helpers import invoke

T, SIDE, INPUT, OBJ = 8, 64, 32, 18  # clip frames, frame side, the model's side, the square's side


def clip(seed: int, colour: int, frames: int = T):
    """``frames`` frames (RGB uint8, SIDE x SIDE) of noise with a square of ``colour`` (0 red, 2 blue)
    moving along a random straight line; returns (frames, boxes [x0, y0, x1, y1])."""
    rng = np.random.default_rng(seed)
    (x0, y0), (x1, y1) = rng.integers(0, SIDE - OBJ, (2, 2))
    out, boxes = [], []
    for i in range(frames):
        f = i / max(1, frames - 1)
        x, y = round(x0 + f * (x1 - x0)), round(y0 + f * (y1 - y0))
        frame = rng.normal(0.45, 0.08, (SIDE, SIDE, 3)).clip(0, 1)
        frame[y:y + OBJ, x:x + OBJ] = (PALETTE[colour] + rng.normal(0, 0.03, (OBJ, OBJ, 3))).clip(0, 1)
        out.append((frame * 255).round().astype(np.uint8))
        boxes.append((x, y, x + OBJ, y + OBJ))
    return out, boxes


def model_input(frames) -> np.ndarray:
    from gradcam_cli.io.preprocess import resize

    return np.stack([resize(f, (INPUT, INPUT)) for f in frames]).astype(np.float32) / 255.0


def video_model(kind: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((T, INPUT, INPUT, 3))
    if kind == "conv3d":
        x = keras.layers.Conv3D(16, (1, 4, 4), strides=(1, 2, 2), activation="relu", name="patches")(inp)
        x = keras.layers.Conv3D(24, 3, padding="same", activation="relu", name="target")(x)
    else:
        x = keras.layers.TimeDistributed(keras.layers.Conv2D(16, 4, strides=2, activation="relu"), name="patches")(inp)
        x = keras.layers.TimeDistributed(keras.layers.Conv2D(24, 3, padding="same", activation="relu"), name="target")(x)
    x = keras.layers.GlobalMaxPooling3D()(x)
    out = keras.layers.Dense(2, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name=f"video_{kind}")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module", params=["conv3d", "timedistributed"])
def trained(request, tmp_path_factory) -> pathlib.Path:
    """Trained on 240 clips (4 epochs; a few seconds on two cores)."""
    xs, ys = [], []
    for i in range(240):
        label = i % 2
        xs.append(model_input(clip(1000 + i, 0 if label == 0 else 2)[0]))
        ys.append(label)
    model = video_model(request.param)
    model.fit(np.stack(xs), np.array(ys), epochs=4, batch_size=16, verbose=0)
    path = tmp_path_factory.mktemp("models") / f"{request.param}.keras"
    model.save(path)
    return path


def test_maps_over_time_peak_on_the_moving_square(tmp_path, trained):
    """4 videos of 16 frames (two clips each): >= 85% of the 64 frames' top-1 peaks lie on the square
    (64/64 measured for both models), with the square's colour as the clip's class; the overlay
    videos hold every frame at the input's size."""
    boxes, colours = {}, {}
    for v in range(4):
        frames, b = clip(50 + v, 0 if v % 2 == 0 else 2, frames=2 * T)
        path = tmp_path / "in" / f"v{v}.avi"
        path.parent.mkdir(exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (SIDE, SIDE))
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
        boxes[path.name], colours[path.name] = b, v % 2
    out = tmp_path / "out"
    result = invoke("explain", tmp_path / "in", "--model", trained, "--preprocess", "scale", "-n", "1", "--out", out,
                    "-q")
    assert result.exit_code == 0, result.output
    document = json.loads((out / "videos.json").read_text())
    assert document["video_model"] is True and document["clip_frames"] == T
    on = total = 0
    for record in document["images"]:
        name = pathlib.Path(record["path"]).name
        frames = [json.loads(line) for line in (out / record["frames_file"]).read_text().splitlines()]
        assert [f["frame"] for f in frames] == list(range(2 * T))
        for f, (x0, y0, x1, y1) in zip(frames, boxes[name]):
            top = f["predictions"][0]
            x, y = top["peak"]
            on += top["class_index"] == colours[name] and x0 <= x < x1 and y0 <= y < y1
            total += 1
        cap = cv2.VideoCapture(str(out / record["overlays"][0]["video"]))
        count = 0
        while cap.read()[0]:
            count += 1
        assert count == 2 * T and (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (SIDE, SIDE)
    assert on >= 0.85 * total, f"{on}/{total}"


def test_time_interpolation_is_linear_with_half_frame_centres():
    """A map of 2 time steps over 8 frames: frame i at (i + 0.5) * 2 / 8 - 0.5, clamped to [0, 1]."""
    from gradcam_cli.run.video_model import in_time

    maps = np.stack([np.zeros((3, 3)), np.ones((3, 3))]).astype(np.float32)
    got = in_time(maps, 8)[:, 0, 0]
    expected = np.clip((np.arange(8) + 0.5) * 2 / 8 - 0.5, 0, 1)
    np.testing.assert_allclose(got, expected, atol=1e-6)
