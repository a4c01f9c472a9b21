"""`gradcam evaluate --layers`: every method x layer scored in one run, the recommendation, and
`--metrics all` without boxes. The model is a CNN trained in the test on coloured squares whose
last layers see the image transposed (a Permute): Grad-CAM there points at the mirrored place."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from builders import OBJ, scenes
from helpers import invoke
from PIL import Image


def transposing_cnn() -> keras.Model:
    """``late`` sees the image as it is; ``flipped`` (a Permute of h and w) and ``after`` see it
    transposed. Global average pooling after ``after``: the classes do not care, the maps do."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((48, 48, 3), name="pixels")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="early")(inp)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="mid")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="late")(x)
    x = keras.layers.Permute((2, 1, 3), name="flipped")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="after")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="transposing")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    """The trained model (every held-out label right: 200 of 200 scenes of seed 7) saved, 24 held-out scenes as PNGs and their boxes CSV (one square each)."""
    folder = tmp_path_factory.mktemp("sweep")
    model = transposing_cnn()
    x, y, _ = scenes("softmax", 1200, seed=1)
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    model.save(folder / "m.keras")
    x, y, boxes = scenes("softmax", 24, seed=7)
    (folder / "img").mkdir()
    rows = ["path,label,x0,y0,x1,y1"]
    for i, (image, placed) in enumerate(zip(np.round(x * 255).astype(np.uint8), boxes)):
        Image.fromarray(image).save(folder / "img" / f"s{i:02d}.png")
        for label, (y0, x0) in placed.items():
            rows.append(f"img/s{i:02d}.png,{label},{x0},{y0},{x0 + OBJ - 1},{y0 + OBJ - 1}")
    (folder / "boxes.csv").write_text("\n".join(rows) + "\n")
    return folder


def run(folder, out, *args):
    return invoke("evaluate", folder / "img", "--model", folder / "m.keras", "--preprocess", "scale",
                  "--out", folder / out, "--boxes-csv", folder / "boxes.csv", "--tolerance", 0, "-q", *args)


def test_sweep_ranks_the_localising_layer_first_and_recommends_it(scene_run):
    result = run(scene_run, "ev", "--layers", "late,flipped,after", "--metrics", "pointing")
    assert result.exit_code == 0, result.output
    doc = json.loads((scene_run / "ev" / "evaluation.json").read_text())
    assert doc["settings"]["layers"] == ["late", "flipped", "after"]
    agg = doc["aggregate"]
    assert list(agg) == ["gradcam@late", "gradcam@flipped", "gradcam@after", "random", "centre"]
    pointing = {c: agg[c]["pointing"]["mean"] for c in agg}
    # the layer that sees the image as it is localises best; the transposed ones worst
    assert pointing["gradcam@late"] >= 90
    assert pointing["gradcam@late"] > max(pointing["gradcam@flipped"], pointing["gradcam@after"]) + 30
    rec = doc["recommendation"]
    assert (rec["winner"], rec["method"], rec["layer"], rec["verdict"]) == ("gradcam@late", "gradcam", "late", "clear")
    assert rec["fields"]["pointing"]["random"] == pytest.approx(pointing["random"])
    assert rec["fields"]["pointing"]["centre"] == pytest.approx(pointing["centre"])
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:6]] == list(agg)  # the table's rows
    assert lines[6] == rec["line"] and lines[6].startswith("recommended: gradcam@late (clearly best on pointing")
    assert "random" in lines[6] and "centre" in lines[6]


def test_two_identical_methods_have_no_clear_winner(scene_run):
    # at the layer before global average pooling the gradient is the same at every position:
    # HiResCAM's map is Grad-CAM's
    result = run(scene_run, "same", "--layers", "after", "--method", "gradcam", "--method", "hirescam",
                 "--metrics", "pointing,deletion", "--steps", 5)
    assert result.exit_code == 0, result.output
    doc = json.loads((scene_run / "same" / "evaluation.json").read_text())
    a, b = doc["aggregate"]["gradcam@after"], doc["aggregate"]["hirescam@after"]
    for field in ("pointing", "deletion"):
        assert a[field]["mean"] == pytest.approx(b[field]["mean"], abs=1e-6)  # the same maps, float32 order
    assert doc["recommendation"]["winner"] is None and doc["recommendation"]["verdict"] == "no clear winner"
    assert "no clear winner" in result.stdout


def test_metrics_all_without_boxes_leaves_the_box_metrics_out(scene_run):
    result = invoke("evaluate", scene_run / "img", "--model", scene_run / "m.keras", "--preprocess", "scale",
                    "--out", scene_run / "all", "--metrics", "all", "--steps", 3, "-q")
    assert result.exit_code == 0, result.output
    left = [line for line in result.stderr.splitlines() if "left out" in line]
    assert left == ["gradcam: --metrics all: left out pointing, localisation, maxboxacc (they need --boxes-csv "
                    "path,label,x0,y0,x1,y1)"]
    doc = json.loads((scene_run / "all" / "evaluation.json").read_text())
    assert "pointing" not in doc["settings"]["metrics"] and "occlusion" in doc["settings"]["metrics"]
    assert "occlusion" in doc["aggregate"]["gradcam"]


def test_bad_layers_are_one_line_before_the_run(scene_run):
    for layers, expected in (
        ("late,nope", "model 'transposing' has no layer 'nope'; pass --layers with one of "
                      "its 4-D layers (`gradcam layers` lists them)"),
        ("gap", "layer 'gap' of model 'transposing' has output shape (None, 32), not 4-D (batch, height, width, "
                "channels) nor 3-D tokens (batch, tokens, channels); pass --layers with a 4-D or token layer "
                "(`gradcam layers` lists them)"),
        ("sweep:0", "Error: Invalid value for '--layers': --layers sweep:K takes a count K >= 1, got 'sweep:0'; "
                    "e.g. --layers sweep:4"),
    ):
        result = run(scene_run, "bad", "--layers", layers)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines()[-1].endswith(expected), result.stderr
        assert "Traceback" not in result.stderr
        assert not (scene_run / "bad" / "evaluation.jsonl").exists()  # nothing ran


def test_sweep_takes_the_last_blocks(scene_run):
    result = run(scene_run, "sw", "--layers", "sweep:2", "--metrics", "pointing")
    assert result.exit_code == 0, result.output
    doc = json.loads((scene_run / "sw" / "evaluation.json").read_text())
    assert doc["settings"]["layers"] == ["flipped", "after"]


def test_a_sweep_resumes_and_another_sweep_is_refused(scene_run):
    first = run(scene_run, "re", "--layers", "late,after", "--metrics", "pointing")
    assert first.exit_code == 0, first.output
    doc = json.loads((scene_run / "re" / "evaluation.json").read_text())
    log = (scene_run / "re" / "evaluation.jsonl").read_bytes().splitlines(keepends=True)
    (scene_run / "re" / "evaluation.jsonl").write_bytes(b"".join(log[:10]))  # a killed run: 10 of 24 kept
    again = run(scene_run, "re", "--layers", "late,after", "--metrics", "pointing", "--resume")
    assert again.exit_code == 0, again.output
    resumed = json.loads((scene_run / "re" / "evaluation.json").read_text())
    assert resumed["aggregate"] == doc["aggregate"] and resumed["recommendation"] == doc["recommendation"]
    other = run(scene_run, "re", "--layers", "late", "--metrics", "pointing", "--resume")
    assert other.exit_code == 2 and "cannot --resume" in other.stderr and "layers" in other.stderr, other.output
