"""`gradcam explain --target box` end to end on a small random keras-hub RetinaNet saved as .keras:
each detection's record (its box in original-image pixels, label, score, logit), overlays with the
box drawn, and one-line refusals (exit 2)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from detector_builders import retinanet
from helpers import invoke
from PIL import Image

from gradcam_cli.cam_targets import TargetCAM

WIDTH, HEIGHT = 160, 96


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxes")
    retinanet(seed=0).save(root / "det.keras")
    inp = keras.Input((32, 32, 3))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(inp))
    keras.Model(inp, keras.layers.Dense(5)(h), name="clf").save(root / "clf.keras")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(root / "imgs" / f"d{i}.png")
    return root


def test_records_give_each_box_in_image_pixels_and_overlays_draw_it(files, tmp_path):
    out = tmp_path / "out"
    result = invoke("explain", files / "imgs", "--model", files / "det.keras", "--target", "box", "--boxes-top", 2,
                    "--preprocess", "scale", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "predictions.json").read_text())
    assert (doc["target"], doc["output"], doc["head"], doc["box_score_threshold"]) == ("box", "cls_logits", "target", 0.5)
    assert doc["target_layer"].endswith("stack3_block0_out")  # auto: the backbone's last map
    cam = TargetCAM(model=keras.saving.load_model(files / "det.keras"), target="box", preprocessing="scale")
    for record in doc["images"]:
        image = np.asarray(Image.open(files / "imgs" / record["path"].rsplit("/", 1)[-1]).convert("RGB"))
        [expected] = cam.explain([image], top=2)
        assert [list(e) for e in record["predictions"]] == [
            ["rank", "class_index", "class_id", "label", "value", "detection_box", "score", "anchor_iou", "present",
             "overlay"]] * 2
        for entry, p, d in zip(record["predictions"], expected.predictions, expected.details):
            assert (entry["rank"], entry["class_index"], entry["label"]) == (p.rank, p.class_index, p.label)
            assert entry["detection_box"] == d["detection_box"] and entry["score"] == d["score"]
            assert entry["value"] == pytest.approx(p.probability, abs=1e-5)
            x0, y0, x1, y1 = entry["detection_box"]
            assert 0 <= x0 < x1 <= WIDTH + 40 and 0 <= y0 < y1 <= HEIGHT + 40  # near-anchor boxes, image pixels
            overlay = np.asarray(Image.open(out / entry["overlay"]).convert("RGB")).astype(int)
            xa, xb = int(round(max(x0, 0))) + 8, int(round(min(x1, WIDTH - 1))) - 8
            row = int(round(min(max(y1, 0), HEIGHT - 1)))
            assert overlay[row, xa:xb].min() > 170  # the box's bottom edge, white (JPEG)


def test_no_detection_above_the_threshold_writes_an_empty_labelled_entry(files, tmp_path):
    out = tmp_path / "out"
    args = ["explain", files / "imgs" / "d0.png", "--model", files / "det.keras", "--target", "box",
            "--box-score-threshold", 1.0, "--preprocess", "scale", "--save-raw", "--out", out]
    result = invoke(*args, "-q")
    assert result.exit_code == 0, result.output
    again = invoke(*args, "--resume")  # not quiet: the summary line
    assert again.exit_code == 0 and "1 explained (1 kept from the previous run)" in again.stderr
    other = invoke(*args[:6], "--box-score-threshold", 0.9, *args[8:], "--resume")  # another threshold
    assert other.exit_code == 2 and "cannot --resume" in other.stderr
    [entry] = json.loads((out / "predictions.json").read_text())["images"][0]["predictions"]
    assert (entry["label"], entry["class_index"], entry["present"], entry["detection_box"]) == (
        "no detection", -1, False, None)
    assert entry["empty"] == "no detection scored at least 1: the map is empty"
    assert not np.load(out / entry["raw"]).any()


@pytest.mark.parametrize("args, message", [
    (["--target", "box", "--model", "clf.keras"],
     "--target box needs a keras-hub object detector (RetinaNetObjectDetector); model 'clf' has output "
     "(batch, 5): a classifier's, use --target class"),
    (["--boxes-top", 2, "--model", "clf.keras"], "--boxes-top applies to --target box, not --target class"),
    (["--target", "segmentation", "--box-score-threshold", 0.3, "--model", "det.keras"],
     "--box-score-threshold applies to --target box, not --target segmentation"),
    (["--target", "box", "--class", 1, "--model", "det.keras"],
     "--target box explains each image's top detections (--boxes-top N): leave out --class"),
    (["--target", "box", "--method", "scorecam", "--model", "det.keras"],
     "method 'scorecam' does not apply to --target box"),
])
def test_bad_box_input_is_refused_in_one_line(files, tmp_path, args, message):
    args = [files / a if str(a).endswith(".keras") else a for a in args]
    result = invoke("explain", files / "imgs", *args, "--preprocess", "scale", "--out", tmp_path / "o", "-q")
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]  # click's usage errors come after its "Usage:" lines
    assert message in last and "Traceback" not in result.stderr
