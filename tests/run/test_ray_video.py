"""`gradcam explain --engine ray` on videos: one video per task; the records, frame logs and overlay
videos equal the local engine's, and --resume after it keeps every video."""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest
from builders import PALETTE, trained_box_cnn
from helpers import invoke

pytestmark = pytest.mark.ray

HEIGHT, WIDTH, SIDE = 72, 108, 22


def write_clip(path: pathlib.Path, seed: int, n: int = 10) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    for i in range(n):
        frame = rng.normal(0.45, 0.08, (HEIGHT, WIDTH, 3)).clip(0, 1)
        x0 = 4 * i
        frame[20:20 + SIDE, x0:x0 + SIDE] = PALETTE[seed % 3]
        writer.write(np.ascontiguousarray((frame * 255).round().astype(np.uint8)[..., ::-1]))
    writer.release()


def frames_of(path: pathlib.Path) -> list:
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(frame)


def test_ray_explains_each_video_as_the_local_engine_does(ray_address, tmp_path, monkeypatch):
    """Three videos and a broken one on two actors: videos.json's records equal the local run's (in input
    order), each frame log byte for byte, each overlay video frame for frame; --resume keeps all four."""
    model = tmp_path / "box.keras"
    trained_box_cnn().save(model)
    for i in range(3):
        write_clip(tmp_path / "in" / f"v{i}.avi", seed=i)
    (tmp_path / "in" / "broken.mp4").write_bytes(b"\0" * 300)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    common = ["in", "--model", "box.keras", "-n", "2", "--batch-size", "4", "-q"]
    assert invoke("explain", *common, "--out", "local").exit_code == 1
    result = invoke("explain", *common, "--out", "onray", "--engine", "ray", "--workers", "2")
    assert result.exit_code == 1, result.output
    local, ray = (json.loads((tmp_path / d / "videos.json").read_text()) for d in ("local", "onray"))
    assert ray["images"] == local["images"] and len(ray["images"]) == 4
    for record in local["images"]:
        if record["status"] != "ok":
            continue
        assert (tmp_path / "local" / record["frames_file"]).read_bytes() == \
            (tmp_path / "onray" / record["frames_file"]).read_bytes()
        for overlay in record["overlays"]:
            a, b = frames_of(tmp_path / "local" / overlay["video"]), frames_of(tmp_path / "onray" / overlay["video"])
            assert len(a) == len(b) == 10 and all(np.array_equal(x, y) for x, y in zip(a, b))
    result = invoke("explain", *common, "--out", "onray", "--engine", "ray", "--workers", "2", "--resume")
    assert result.exit_code == 1 and json.loads((tmp_path / "onray" / "videos.json").read_text())["images"] == \
        local["images"]
