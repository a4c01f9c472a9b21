"""Own models through the CLI: every head type from .keras and .h5, labels, thresholds,
test-set mode, profiles for own models, `gradcam layers`, one-line errors."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from builders import (
    custom_model,
    EXPECTED, SIZE, dense_logits, last_dense, mobilenet_wrapped, peak_on, scenes, score_of, tape_map, trained,
    two_headed,
)
from helpers import invoke


LABELS = {"softmax": ["red", "green", "blue"], "multilabel": ["red", "green", "blue"],
          "binary": ["blue", "red"], "regression": ["brightness"]}



def write_scenes(kind: str, n: int, folder: pathlib.Path, seed: int = 2):
    """Scenes as lossless PNGs; returns the (quantised) float images the model will see."""
    x, y, boxes = scenes(kind, n, seed)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.round(x * 255).astype(np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"s{i:03d}.png")
    return pixels.astype(np.float32) / 255.0, y, boxes


_SAVED: dict = {}


def saved_model(kind: str, tmp_path_factory):
    """A trained model of this head type saved as .keras and .h5, its labels, and 40 scenes as PNGs."""
    if kind not in _SAVED:
        root = tmp_path_factory.mktemp(kind)
        model = trained(kind)
        model.save(root / "model.keras")
        model.save(root / "model.h5")
        (root / "labels.txt").write_text("\n".join(LABELS[kind]) + "\n")
        x, y, boxes = write_scenes(kind, 40, root / "images")
        _SAVED[kind] = (kind, root, model, x, y, boxes)
    return _SAVED[kind]


@pytest.fixture(scope="module", params=["softmax", "multilabel", "binary", "regression"])
def saved(request, tmp_path_factory):
    return saved_model(request.param, tmp_path_factory)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_every_head_type_through_the_cli(saved, suffix):
    kind, root, model, x, y, boxes = saved
    out = root / f"out{suffix}"
    targets = ["--target-unit", 0] if kind == "regression" else ["--top", 3 if kind == "multilabel" else 1]
    result = invoke("explain", root / "images", "--model", root / f"model{suffix}", "--labels", root / "labels.txt",
                    "--preprocess", "scale", "--save-raw", "-q", "--out", out, *targets)
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "predictions.json").read_text())
    head_type = EXPECTED[kind][0]
    assert doc["head"] == head_type and doc["target_layer"] == "target" and doc["input_size"] == [SIZE, SIZE]
    assert doc["weights"] == f"saved model {root / f'model{suffix}'}"
    f = dense_logits(model, "target", last_dense(model))
    probs = model.predict(x, verbose=0)
    hits = total = 0
    for i, record in enumerate(doc["images"]):
        assert record["path"].endswith(f"s{i:03d}.png")
        for p in record["predictions"]:
            cam = np.load(out / p["raw"])
            assert p["label"] == LABELS[kind][p["class_index"]]
            if i < 4:  # the CLI's maps equal the reference tape on the same pixels
                np.testing.assert_allclose(cam, tape_map(f, x[i], score_of(head_type, p["class_index"])), atol=1e-5)
            box = boxes[i].get(p["class_index"]) if kind != "regression" else boxes[i][0]
            if box is not None and (kind != "multilabel" or p["probability"] > 0.5):
                hits += peak_on(cam, box)
                total += 1
        if kind == "binary":  # p and 1 - p, with the label names
            [p] = record["predictions"]
            p_red = float(probs[i, 0])
            assert p["probability"] == pytest.approx(p_red if p["class_index"] == 1 else 1 - p_red, abs=1e-5)
    assert total >= 30 and hits / total >= 0.9, f"{kind}: peak on the object for {hits}/{total}"


def test_binary_reports_both_classes(tmp_path_factory):
    kind, root, model, x, _, _ = saved_model("binary", tmp_path_factory)
    out = root / "both"
    result = invoke("explain", root / "images" / "s000.png", "--model", root / "model.keras", "--labels",
                    root / "labels.txt", "--preprocess", "scale", "--top", 2, "-q", "--out", out)
    assert result.exit_code == 0, result.stderr
    [record] = json.loads((out / "predictions.json").read_text())["images"]
    p = float(model.predict(x[:1], verbose=0)[0, 0])
    got = {e["label"]: e["probability"] for e in record["predictions"]}
    assert got == pytest.approx({"red": p, "blue": 1 - p}, abs=1e-5)


def test_multilabel_threshold_keeps_labels_above_it(tmp_path_factory):
    kind, root, model, x, y, _ = saved_model("multilabel", tmp_path_factory)
    out = root / "thr"
    result = invoke("explain", root / "images", "--model", root / "model.keras", "--labels", root / "labels.txt",
                    "--preprocess", "scale", "--top", 3, "--threshold", 0.5, "-q", "--out", out)
    assert result.exit_code == 0, result.stderr
    probs = model.predict(x, verbose=0)
    for i, record in enumerate(json.loads((out / "predictions.json").read_text())["images"]):
        kept = sorted(p["class_index"] for p in record["predictions"])
        assert kept == sorted(np.flatnonzero(probs[i] >= 0.5).tolist())
        assert len(list(out.glob(f"s{i:03d}.*.jpg"))) == len(kept)


def test_test_set_mode_accuracy_equals_a_count(tmp_path):
    model = trained("softmax")
    model.save(tmp_path / "m.keras")
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    x, y, _ = write_scenes("softmax", 30, tmp_path / "images", seed=5)
    truth = y.copy()
    truth[:4] = (truth[:4] + 1) % 3  # four deliberately wrong labels: they must show up as misclassified
    with open(tmp_path / "truth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for i, t in enumerate(truth):  # names and indices both work; paths relative to the CSV
            writer.writerow([f"images/s{i:03d}.png", ["red", "green", "blue"][t] if i % 2 else str(t)])
    out = tmp_path / "out"
    result = invoke("explain", tmp_path / "images", "--model", tmp_path / "m.keras", "--labels",
                    tmp_path / "labels.txt", "--preprocess", "scale", "--top", 1, "--labels-csv",
                    tmp_path / "truth.csv", "-q", "--out", out)
    assert result.exit_code == 0, result.stderr
    scores = model.predict(x, verbose=0)
    ranks = [int((scores[i] > scores[i, truth[i]]).sum()) + 1 for i in range(30)]
    doc = json.loads((out / "predictions.json").read_text())
    accuracy = doc["summary"]["accuracy"]
    assert accuracy["labelled"] == 30
    assert accuracy["top1"] == pytest.approx(sum(r == 1 for r in ranks) / 30)
    assert accuracy["top5"] == pytest.approx(sum(r <= 5 for r in ranks) / 30)
    assert accuracy["misclassified"] == [str(tmp_path / "images" / f"s{i:03d}.png") for i in range(30) if ranks[i] != 1]
    assert len(accuracy["misclassified"]) >= 4
    for i, record in enumerate(doc["images"]):
        assert record["true_label"] == {"class_index": int(truth[i]), "label": ["red", "green", "blue"][truth[i]],
                                        "rank": ranks[i]}
        explained = [p["class_index"] for p in record["predictions"]]
        assert int(truth[i]) in explained  # a map for the true class, always
        [true_entry] = [p for p in record["predictions"] if p["true_class"]]
        if ranks[i] != 1:
            assert true_entry["overlay"] == f"s{i:03d}.true-{true_entry['label']}.jpg"
            assert (out / true_entry["overlay"]).is_file()
    assert "top-1 accuracy" in result.stderr


def test_profile_for_an_own_model(tmp_path):
    model = trained("softmax")
    model.save(tmp_path / "m.keras")
    first_conv = model.layers[1].name  # auto-named (conv2d, conv2d_5, ...): read it
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "colours.toml").write_text(
        'name = "colours"\nmodel = "../m.keras"\ntarget_layer = "auto"\npreprocessing = "scale"\n'
        'classes = "../labels.txt"\n'
    )
    write_scenes("softmax", 3, tmp_path / "images")
    out = tmp_path / "out"
    result = invoke("explain", tmp_path / "images", "--config-dir", profiles, "-b", "colours", "--top", 1, "-q",
                    "--out", out)
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["backbone"] == "colours" and doc["target_layer"] == "target" and doc["input_size"] == [SIZE, SIZE]
    assert {p["label"] for r in doc["images"] for p in r["predictions"]} <= {"red", "green", "blue"}
    # flags override the profile for one run
    out2 = tmp_path / "out2"
    result = invoke("explain", tmp_path / "images", "--config-dir", profiles, "-b", "colours", "--top", 1, "-q",
                    "--out", out2, "--preprocess", "none", "--layer", first_conv)
    assert result.exit_code == 0, result.stderr
    doc2 = json.loads((out2 / "predictions.json").read_text())
    assert doc2["preprocessing"]["mode"] == "none" and doc2["target_layer"] == first_conv
    assert doc2["target_layer_shape"] == [SIZE, SIZE, 16]


def test_layers_lists_candidates_and_marks_auto_inside_a_nested_model(tmp_path):
    model, _ = mobilenet_wrapped("sequential")
    model.save(tmp_path / "nested.keras")
    result = invoke("layers", "--model", tmp_path / "nested.keras", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    [auto] = [r for r in rows if r["auto"]]
    assert auto["layer"].endswith("/out_relu") and auto["target"] and auto["shape"] == [3, 3, 1280]
    assert all(len(r["shape"]) == 3 and r["shape"][0] * r["shape"][1] > 1 for r in rows)
    table = invoke("layers", "--model", tmp_path / "nested.keras")
    assert any(line.startswith(">* ") and "out_relu" in line for line in table.stdout.splitlines())


def test_nested_backbone_through_the_cli(tmp_path):
    model, _ = mobilenet_wrapped("functional")
    model.save(tmp_path / "nested.keras")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    result = invoke("explain", tmp_path / "a.png", "--model", tmp_path / "nested.keras", "--top", 2, "-q", "--out", out)
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["target_layer"].endswith("/out_relu") and doc["engine"] == "trunk once + head on tiled activations"


def test_multi_output_needs_and_takes_output(tmp_path):
    two_headed(as_dict=False).save(tmp_path / "two.keras")
    Image.fromarray(np.full((48, 48, 3), 100, np.uint8)).save(tmp_path / "a.png")
    result = invoke("explain", tmp_path / "a.png", "--model", tmp_path / "two.keras", "-q", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--output" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    name = "size"
    result = invoke("explain", tmp_path / "a.png", "--model", tmp_path / "two.keras", "--output", name, "--top", 1,
                    "-q", "--out", tmp_path / "o2")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "o2" / "predictions.json").read_text())["output"] == name


def test_saved_model_dir_and_missing_custom_object_are_one_line(tmp_path):
    saved_model = tmp_path / "exported"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    result = invoke("explain", "sample_images/coffee.jpg", "--model", saved_model, "-q", "--out", tmp_path / "o")
    assert result.exit_code == 4 and "SavedModel" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr

    custom_model().save(tmp_path / "custom.keras")
    result = invoke("explain", "sample_images/coffee.jpg", "--model", tmp_path / "custom.keras", "-q",
                    "--out", tmp_path / "o")
    assert result.exit_code == 2 and "ChannelScale" in result.stderr and "--custom-objects" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case, code, words", [
    ("custom objects file with a syntax error", 2, "SyntaxError"),
    ("custom objects file without the class", 2, "does not define it"),
    ("mixed precision with a saved model", 2, "--precision mixed"),
    ("corrupt model file", 4, "not a valid .keras file"),
])
def test_model_option_errors_exit_2_model_errors_exit_4(tmp_path, case, code, words):
    model = tmp_path / "custom.keras"
    custom_model().save(model)
    extra = []
    if case == "custom objects file with a syntax error":
        (tmp_path / "objs.py").write_text("class ChannelScale(:\n")
        extra = ["--custom-objects", tmp_path / "objs.py"]
    elif case == "custom objects file without the class":
        (tmp_path / "objs.py").write_text("import keras\n\nclass Other(keras.layers.Layer):\n    pass\n")
        extra = ["--custom-objects", tmp_path / "objs.py"]
    elif case == "mixed precision with a saved model":
        extra = ["--precision", "mixed"]  # refused before the model is read
    else:
        model = tmp_path / "broken.keras"
        model.write_bytes(b"not a zip archive")
    result = invoke("explain", "sample_images/coffee.jpg", "--model", model, *extra, "-q", "--out", tmp_path / "o")
    assert result.exit_code == code, result.stderr
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_model_and_backbone_together_is_a_usage_error(tmp_path):
    result = invoke("explain", "sample_images/coffee.jpg", "--model", "x.keras", "-b", "vgg16", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "either --backbone or --model" in result.stderr


def test_input_size_that_does_not_fit_a_fixed_model_is_one_line(tmp_path, tiny):
    """Issue 22.3: --input-size 128 on a model fixed at 48 px is one line naming the model's size and
    the fix, exit 2, nothing written (it was a ValueError traceback, exit 1)."""
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.errors import OptionError

    model, images = tiny
    out = tmp_path / "o"
    result = invoke("explain", images, *model, "--input-size", 128, "--out", out)
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert f"{SIZE}x{SIZE}" in line and "128x128" in line and "--input-size" in line
    assert not out.exists()
    with pytest.raises(OptionError, match=f"takes {SIZE}x{SIZE} inputs"):
        GradCAM(model=str(model[1]), input_size=128)
    fits = invoke("explain", images, *model, "--input-size", SIZE, "--out", out)  # the model's own size is fine
    assert fits.exit_code == 0, fits.stderr


def test_a_grey_model_gets_grey_images_and_grey_overlays(tmp_path):
    """Issue 22.2: a 1-channel model is fed the BT.601 luma of each image (OpenCV's RGB2GRAY), and
    its overlays, grid and GIF are drawn on that grey image; a per-RGB-channel preprocessing is one line."""
    import cv2

    from builders import grey_cnn
    from gradcam_cli.io.preprocess import resize

    model = grey_cnn()
    model.save(tmp_path / "grey.keras")
    images = tmp_path / "images"
    images.mkdir()
    yy, xx = np.mgrid[0:90, 0:120]
    colour = np.stack([xx * 2, yy * 2, 255 - xx * 2], axis=-1).astype(np.uint8)
    Image.fromarray(colour).save(images / "colour.png")
    Image.fromarray(colour[..., 1]).save(images / "grey.png")  # an 'L' PNG
    out = tmp_path / "o"
    result = invoke("explain", images, "--model", tmp_path / "grey.keras", "--preprocess", "scale", "--top", 3,
                    "--grid", "--gif", "-q", "--out", out)
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["preprocessing"]["channels"] == 1 and "BT.601" in doc["preprocessing"]["grey"]
    for record in doc["images"]:
        rgb = np.asarray(Image.open(record["path"]).convert("RGB"))
        luma = resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (64, 64))
        probs = model.predict(luma[None, ..., None].astype(np.float32) / 255.0, verbose=0)[0]
        for entry in record["predictions"]:
            assert abs(entry["probability"] - float(probs[entry["class_index"]])) < 1e-5
        grid = np.asarray(Image.open(out / record["grid"]).convert("RGB")).astype(int)
        from gradcam_cli.render.grid import grid_layout

        x0, y0, x1, y1 = grid_layout([(90, 120)] * 4, columns=3, tile=384).pictures[0]
        original = grid[y0:y1, x0:x1]
        assert np.abs(original[..., 0] - original[..., 2]).mean() < 2, "the original tile is not grey"
    refused = invoke("explain", images, "--model", tmp_path / "grey.keras", "--preprocess", "caffe", "-q",
                     "--out", tmp_path / "o2")
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "1-channel" in refused.stderr and "caffe" in refused.stderr
