"""`--target box` through the rest of a run (issue 24, item 6): shards merged equal the whole run, the
report carries each box's entry (label, escaped file name, overlay links), and `gradcam pictures`
redraws each detection's box on the GIF frames it makes from the --save-raw maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from detector_builders import retinanet
from helpers import assert_close, invoke
from PIL import Image, ImageSequence

WIDTH, HEIGHT = 160, 96
NAMES = ["a<b&c", "d1", "d2"]  # a file name the report must escape


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """A box run (2 detections per image, maps saved, a report) over three random pictures."""
    root = tmp_path_factory.mktemp("boxruns")
    retinanet(seed=0).save(root / "det.keras")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(root / "imgs" / f"{name}.png")
    (root / "labels.txt").write_text("<car>&co\nbus\nvan\n")  # class names the report must escape
    args = ["explain", root / "imgs", "--model", root / "det.keras", "--target", "box", "--boxes-top", 2,
            "--labels", root / "labels.txt", "--preprocess", "scale", "--save-raw", "-q"]
    result = invoke(*args, "--out", root / "whole", "--report")
    assert result.exit_code == 0, result.output
    return root, args


def test_shards_merge_into_the_whole_box_runs_records(whole, tmp_path):
    root, args = whole
    for k in (1, 2):
        assert invoke(*args, "--out", tmp_path, "--shard", f"{k}/2").exit_code == 0
    merged = invoke("merge", tmp_path)
    assert merged.exit_code == 0, merged.output
    ours, theirs = (json.loads((d / "predictions.json").read_text()) for d in (tmp_path, root / "whole"))
    assert ours["target"] == "box" and ours["box_score_threshold"] == theirs["box_score_threshold"] == 0.5
    by_path = {r["path"]: r for r in theirs["images"]}
    assert sorted(r["path"] for r in ours["images"]) == sorted(by_path) and len(by_path) == 3
    for record in ours["images"]:
        assert [e["detection_box"] for e in record["predictions"]] == [  # same detections, in the same order
            e["detection_box"] for e in by_path[record["path"]]["predictions"]]
        assert_close(record["predictions"], by_path[record["path"]]["predictions"], record["path"])


def test_the_report_shows_each_box_label_and_score_escaped_and_links_its_overlay(whole):
    root, _ = whole
    html = (root / "whole" / "report.html").read_text()
    for raw in ("a<b", "b&c", "<car>", ">&co"):  # file and class names reach the page only escaped
        assert raw not in html, raw
    assert '"name":"a\\u003cb\\u0026c.png"' in html
    assert "&lt;car&gt;&amp;co (0)" in html  # the class filter's option
    doc = json.loads((root / "whole" / "predictions.json").read_text())
    labels = ["<car>&co", "bus", "van"]
    for record in doc["images"]:
        for entry in record["predictions"]:
            assert entry["label"] == labels[entry["class_index"]] and entry["detection_box"] is not None
            src = entry["overlay"].replace("<", "%3C").replace("&", "%26")
            label = entry["label"].replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            # each box's card entry: its label, its detector score as the caption's figure, its overlay
            assert (f'"rank":{entry["rank"]},"ci":{entry["class_index"]},"label":"{label}",'
                    f'"p":{entry["score"]},"src":"{src}"') in html, entry


def test_pictures_redraws_each_detections_box_from_the_saved_maps(whole):
    root, _ = whole
    out = root / "whole"
    result = invoke("pictures", out, "--gif")
    assert result.exit_code == 0, result.output
    assert "3 images drawn from their maps, 0 from their overlay JPEGs" in result.stderr
    for record in json.loads((out / "predictions.json").read_text())["images"]:
        stem = record["path"].rsplit("/", 1)[-1][:-4]
        frames = [np.asarray(f.convert("RGB")).astype(int) for f in ImageSequence.Iterator(Image.open(out / f"{stem}.gif"))]
        assert len(frames) == 3  # the original, then each detection's overlay
        for entry, frame in zip(record["predictions"], frames[1:]):
            x0, y0, x1, y1 = entry["detection_box"]
            xa, xb = int(round(max(x0, 0))) + 8, int(round(min(x1, WIDTH - 1))) - 8
            row = int(round(min(max(y1, 0), HEIGHT - 1)))
            assert frame[row, xa:xb].min() > 200, stem  # the box's bottom edge, white (GIF palette)
            assert frames[0][row, xa:xb].min() < 200, stem  # the original has no box there


def test_resume_keeps_the_done_images_and_explains_the_rest_as_the_whole_run(whole, tmp_path):
    root, args = whole
    (tmp_path / "part").mkdir()
    Image.open(root / "imgs" / "d1.png").save(tmp_path / "part" / "d1.png")
    first = invoke(*[tmp_path / "part" if a == root / "imgs" else a for a in args], "--out", tmp_path / "out")
    assert first.exit_code == 0, first.output
    for name in NAMES:  # then the whole folder, resumed into the same out
        Image.open(root / "imgs" / f"{name}.png").save(tmp_path / "part" / f"{name}.png")
    again = invoke(*[tmp_path / "part" if a == root / "imgs" else a for a in args[:-1]], "--out", tmp_path / "out",
                   "--resume")
    assert again.exit_code == 0, again.output
    assert "3 explained (1 kept from the previous run)" in again.stderr
    ours = json.loads((tmp_path / "out" / "predictions.json").read_text())
    theirs = json.loads((root / "whole" / "predictions.json").read_text())
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in theirs["images"]}
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in ours["images"]) == sorted(by_name)
    for record in ours["images"]:
        expected = by_name[record["path"].rsplit("/", 1)[-1]]
        assert [e["detection_box"] for e in record["predictions"]] == [e["detection_box"] for e in expected["predictions"]]
        assert_close(record["predictions"], expected["predictions"], record["path"])
