"""`--engine ray` with a target beyond class scores (segmentation, detected boxes): each actor builds the same TargetCAM (target,
masks, references from the run's settings) and writes what the local engine writes."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from helpers import assert_close, assert_same_raws, invoke
from PIL import Image

pytestmark = pytest.mark.ray  # starts a local Ray


def test_a_segmentation_run_with_masks_on_ray_equals_the_local_run(ray_address, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(2)
    inp = keras.Input((24, 24, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="body")(inp)
    keras.Model(inp, keras.layers.Conv2D(3, 1, activation="softmax", name="seg")(h)).save("seg.keras")
    os.mkdir("imgs")
    rng = np.random.default_rng(0)
    rows = ["image,mask"]
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(f"imgs/p{i}.png")
        Image.fromarray((rng.random((24, 24)) > 0.5).astype(np.uint8) * 255).save(f"m{i}.png")
        rows.append(f"imgs/p{i}.png,m{i}.png")
    with open("masks.csv", "w") as handle:
        handle.write("\n".join(rows) + "\n")
    args = ["explain", "imgs", "--model", "seg.keras", "--target", "segmentation", "--mask", "masks.csv",
            "--preprocess", "scale", "--top", "2", "--save-raw", "--batch-size", "2", "-q"]
    assert invoke(*args, "--out", "local").exit_code == 0
    ray = invoke(*args, "--out", "ray", "--engine", "ray", "--workers", "1")
    assert ray.exit_code == 0, ray.stderr
    ours, theirs = (json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("ray", "local"))
    assert ours["target"] == "segmentation" and ours["options"]["mask"] == str(tmp_path / "masks.csv")
    by_path = {r["path"]: r for r in theirs["images"]}
    assert sorted(by_path) == sorted(r["path"] for r in ours["images"])
    for record in ours["images"]:
        assert_close(record, by_path[record["path"]], record["path"])
        for entry in record["predictions"]:
            assert_same_raws(tmp_path / "ray" / entry["raw"], tmp_path / "local" / entry["raw"], entry["raw"])


def test_a_box_run_on_ray_equals_the_local_run(ray_address, tmp_path, monkeypatch):
    """Each actor loads the keras-hub RetinaNet and explains its images' detections: the same boxes,
    scores, logits and maps as the local engine."""
    from detector_builders import retinanet

    monkeypatch.chdir(tmp_path)
    retinanet(seed=0).save("det.keras")
    os.mkdir("imgs")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)).save(f"imgs/d{i}.png")
    args = ["explain", "imgs", "--model", "det.keras", "--target", "box", "--boxes-top", "2",
            "--preprocess", "scale", "--save-raw", "--batch-size", "2", "-q"]
    assert invoke(*args, "--out", "local").exit_code == 0
    ray = invoke(*args, "--out", "ray", "--engine", "ray", "--workers", "1")
    assert ray.exit_code == 0, ray.stderr
    ours, theirs = (json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("ray", "local"))
    assert (ours["target"], ours["box_score_threshold"]) == ("box", 0.5)
    by_path = {r["path"]: r for r in theirs["images"]}
    assert sorted(by_path) == sorted(r["path"] for r in ours["images"]) and len(by_path) == 3
    for record in ours["images"]:
        assert [e["detection_box"] for e in record["predictions"]] == [
            e["detection_box"] for e in by_path[record["path"]]["predictions"]]
        assert_close(record, by_path[record["path"]], record["path"])
        for entry in record["predictions"]:
            assert entry["detection_box"] is not None
            assert_same_raws(tmp_path / "ray" / entry["raw"], tmp_path / "local" / entry["raw"], entry["raw"])
