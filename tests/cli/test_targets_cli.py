"""`gradcam explain --target segmentation|similarity` end to end: exact record fields, masks,
references, --resume, pictures, and one-line refusals (exit 2) before the model runs."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from helpers import invoke
from PIL import Image

SIZE = 32


def segmenter() -> keras.Model:
    inp = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="enc")(inp)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="mid")(keras.layers.MaxPooling2D()(a))
    d = keras.layers.Concatenate()([keras.layers.UpSampling2D()(b), a])
    d = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="dec")(d)
    logits = keras.layers.Conv2D(3, 1, name="logits")(d)
    return keras.Model(inp, keras.layers.Softmax(name="probs")(logits), name="segmenter")


def embedder() -> keras.Model:
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="feat")(inp)
    h = keras.layers.GlobalMaxPooling2D(name="pool")(h)
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax", name="head")(h), name="embedder")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    keras.utils.set_random_seed(4)
    seg = segmenter()
    seg.get_layer("logits").bias.assign([0.0, 0.0, -100.0])  # class 2 is never predicted: an absent class
    seg.save(root / "seg.keras")
    embedder().save(root / "emb.keras")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "imgs" / f"s{i}.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[4:20, 8:28] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "small.png")
    (root / "refs").mkdir()
    Image.open(root / "imgs" / "s0.png").save(root / "refs" / "a.png")
    np.save(root / "refs" / "b.npy", np.linspace(0, 1, 8).astype(np.float32))
    return root


def predicted_labels(files, name: str) -> np.ndarray:
    model = keras.saving.load_model(files / "seg.keras")
    x = np.asarray(Image.open(files / "imgs" / name), np.float32) / 255.0
    return np.argmax(model.predict(x[None], verbose=0)[0], axis=-1)


def test_segmentation_records_give_each_class_its_pixel_share(files, tmp_path):
    out = tmp_path / "out"
    result = invoke("explain", files / "imgs", "--model", files / "seg.keras", "--target", "segmentation",
                    "--preprocess", "scale", "--top", 2, "--save-raw", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "predictions.json").read_text())
    assert (doc["target"], doc["output"], doc["head"], doc["target_layer"]) == ("segmentation", "probs", "target", "dec")
    assert (doc["options"]["target"], doc["options"]["mask"]) == ("segmentation", None)
    record = doc["images"][0]
    counts = np.bincount(predicted_labels(files, "s0.png").ravel(), minlength=3)
    order = np.argsort(-counts, kind="stable")[:2]
    assert [list(e) for e in record["predictions"]] == [
        ["rank", "class_index", "class_id", "label", "value", "pixel_share", "present", "overlay", "raw"]] * 2
    for rank, (entry, c) in enumerate(zip(record["predictions"], order), start=1):
        assert (entry["rank"], entry["class_index"], entry["label"], entry["present"]) == (rank, c, f"class_{c}", True)
        assert entry["pixel_share"] == pytest.approx(counts[c] / counts.sum(), abs=1e-6)
        assert (entry["overlay"], entry["raw"]) == (f"s0.top{rank}-class_{c}.jpg", f"s0.top{rank}-class_{c}.npy")
        assert np.load(out / entry["raw"]).shape == (SIZE, SIZE)

    assert counts[2] == 0
    again = invoke("explain", files / "imgs" / "s0.png", "--model", files / "seg.keras", "--target", "segmentation",
                   "--preprocess", "scale", "--class", 2, "--save-raw", "--out", tmp_path / "absent", "-q")
    entry = json.loads((tmp_path / "absent" / "predictions.json").read_text())["images"][0]["predictions"][0]
    assert (entry["present"], entry["pixel_share"], entry["empty"]) == (
        False, 0.0, "class absent from the region: its map is empty")
    assert not np.load(tmp_path / "absent" / entry["raw"]).any() and again.exit_code == 0


def test_a_mask_csv_sets_each_images_region_and_resume_keeps_the_run(files, tmp_path):
    rows = "image,mask\n" + "".join(f"imgs/s{i}.png,mask.png\n" for i in range(3))
    (files / "masks.csv").write_text(rows)
    out = tmp_path / "out"
    args = ["explain", files / "imgs", "--model", files / "seg.keras", "--target", "segmentation", "--preprocess",
            "scale", "--mask", files / "masks.csv", "--class", 1, "--out", out, "-q"]
    assert invoke(*args).exit_code == 0
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["options"]["mask"] == str(files / "masks.csv")
    inside = predicted_labels(files, "s1.png")[4:20, 8:28]
    entry = doc["images"][1]["predictions"][0]
    assert entry["pixel_share"] == pytest.approx(float((inside == 1).mean()), abs=1e-6)
    overlay = np.asarray(Image.open(out / entry["overlay"]).convert("RGB")).astype(int)
    assert overlay[4, 12:24].min() > 170 and overlay[19, 12:24].min() > 170  # the mask's outline, white (JPEG)
    again = invoke(*args[:-1], "--resume")  # not quiet: the summary line
    assert again.exit_code == 0 and "3 explained (3 kept from the previous run)" in again.stderr
    other = invoke(*args[:-5], "--out", out, "--resume")  # no --class: other settings
    assert other.exit_code == 2 and "cannot --resume" in other.stderr


def test_similarity_explains_each_image_against_each_reference(files, tmp_path):
    out = tmp_path / "out"
    result = invoke("explain", files / "imgs", "--model", files / "emb.keras", "--target", "similarity",
                    "--reference", files / "refs", "--preprocess", "scale", "--out", out, "-q", "--grid")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["references"] == [str(files / "refs" / "a.png"), str(files / "refs" / "b.npy")]
    assert (doc["target"], doc["output"], doc["target_layer"]) == ("similarity", "pool", "feat")
    first = doc["images"][0]
    assert [(e["label"], e["reference"]) for e in first["predictions"]] == [
        ("a", str(files / "refs" / "a.png")), ("b", str(files / "refs" / "b.npy"))]
    assert first["predictions"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)  # s0 is reference a itself
    assert [e["rank"] for e in first["predictions"]] == [1, 2] and (out / first["grid"]).is_file()
    more = invoke("explain", files / "imgs" / "s1.png", "--model", files / "emb.keras", "--target", "similarity",
                  "--reference", files / "refs", "--preprocess", "scale", "--top", 1, "--out", tmp_path / "top1", "-q")
    entries = json.loads((tmp_path / "top1" / "predictions.json").read_text())["images"][0]["predictions"]
    assert more.exit_code == 0 and [e["label"] for e in entries] == ["a", "b"]  # every reference, whatever --top
    assert sorted(e["overlay"] for e in entries) == sorted(f"s1.top{e['rank']}-{e['label']}.jpg" for e in entries)
    for entry in first["predictions"]:
        assert entry["value"] == entry["similarity"] and -1.0 <= entry["similarity"] <= 1.0 + 1e-6


@pytest.mark.parametrize("args, message", [
    (["--model", "seg.keras", "--target", "segmentation", "--mask", "small.png"],
     ("Error: mask {root}/small.png is 12x10 but image {root}/imgs/s0.png is 32x32; give a mask of the image's "
     "own size")),
    (["--model", "emb.keras", "--target", "similarity", "--reference", "missing.png"],
     ("Error: reference missing.png does not exist; pass --reference with an image, a .npy embedding or a folder "
     "of them")),
    (["--model", "emb.keras", "--target", "segmentation"],
     ("Error: --target segmentation needs a model output of shape (batch, height, width, classes); output 'head' "
     "of model 'embedder' has shape (batch, 4): a classifier's, use --target class")),
    (["--model", "seg.keras", "--target", "segmentation", "--output", "nope"],
     ("Error: model 'segmenter' has no output 'nope'; its outputs are 0: 'probs': pass --output with one of these "
     "names or indices")),
    (["--model", "seg.keras", "--target", "segmentation", "--method", "scorecam"],
     ("Error: method 'scorecam' does not apply to --target segmentation: it scores or backpropagates class scores "
     "itself, not this target's scalar; use one of: gradcam, gradcam++, xgradcam, layercam, hirescam, eigencam, "
     "random, centre")),
    (["--model", "emb.keras", "--target", "similarity"],
     "Error: --target similarity needs --reference IMAGE_OR_NPY (or a folder of them)"),
    (["--model", "emb.keras", "--mask", "mask.png"], "Error: --mask applies to --target segmentation, not --target class"),
    (["--model", "seg.keras", "--target", "segmentation", "--threshold", "0.5"],
     "Error: --threshold applies to --target class (class probabilities and labels), not --target segmentation"),
])
def test_bad_input_is_one_line_with_exit_2(files, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(files)
    result = invoke("explain", files / "imgs", *args, "--preprocess", "scale", "--out", tmp_path / "o", "-q")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == message.format(root=files)
    assert not (tmp_path / "o" / "predictions.json").exists()


def test_shards_merge_pictures_and_the_report_take_a_segmentation_run(files, tmp_path):
    out = tmp_path / "out"
    for k in (1, 2):
        shard = invoke("explain", files / "imgs", "--model", files / "seg.keras", "--target", "segmentation",
                       "--preprocess", "scale", "--save-raw", "--shard", f"{k}/2", "--out", out, "-q")
        assert shard.exit_code == 0, shard.output
    assert invoke("merge", out, "--report").exit_code == 0
    doc = json.loads((out / "predictions.json").read_text())
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in doc["images"]) == ["s0.png", "s1.png", "s2.png"]
    assert all({"pixel_share", "present"} <= set(e) for r in doc["images"] for e in r["predictions"])
    assert "class_0" in (out / "report.html").read_text(encoding="utf-8")
    pictures = invoke("pictures", out, "--grid")
    assert pictures.exit_code == 0 and "3 images drawn from their maps" in pictures.stderr
    assert sorted(p.name for p in out.glob("*.grid.jpg")) == ["s0.grid.jpg", "s1.grid.jpg", "s2.grid.jpg"]


def with_meta() -> keras.Model:
    """An image and a 3-vector (its non-image input), a softmax over 4 classes."""
    image, meta = keras.Input((SIZE, SIZE, 3), name="image"), keras.Input((3,), name="meta")
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(5, 3, activation="relu", name="conv")(image))
    h = keras.layers.Concatenate()([h, keras.layers.Dense(2)(meta)])
    return keras.Model([image, meta], keras.layers.Dense(4, activation="softmax", name="out")(h), name="with_meta")


def test_non_image_inputs_come_from_each_images_sidecar(files, tmp_path):
    import shutil

    keras.utils.set_random_seed(9)
    model = with_meta()
    model.save(tmp_path / "meta.keras")
    shutil.copytree(files / "imgs", tmp_path / "imgs")
    metas = {f"s{i}": [float(i), 1.0, -2.0 * i] for i in range(3)}
    for stem, values in metas.items():
        (tmp_path / "imgs" / f"{stem}.json").write_text(json.dumps({"meta": values}))
    args = ["explain", tmp_path / "imgs", "--model", tmp_path / "meta.keras", "--preprocess", "scale", "--top", 2,
            "--out", tmp_path / "out", "-q"]
    refused = invoke(*args)
    assert refused.exit_code == 2 and refused.stderr.strip().splitlines()[-1] == (
        "Error: model 'with_meta' has 2 inputs; only single-input image models are supported here: pass --sidecar "
        "for non-image inputs in a file beside each image (docs/targets.md), or use "
        "gradcam_cli.cam_multi.MultiInputCAM for several image inputs")
    result = invoke(*args, "--sidecar")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert (doc["options"]["sidecar"], doc["target"], doc["head"]) == (True, "class", "target")
    for record in doc["images"]:
        stem = record["path"].rsplit("/", 1)[-1][:-4]
        x = np.asarray(Image.open(files / "imgs" / f"{stem}.png"), np.float32)[None] / 255.0
        probs = model.predict([x, np.array([metas[stem]], np.float32)], verbose=0)[0]
        assert [list(e) for e in record["predictions"]] == [
            ["rank", "class_index", "class_id", "label", "probability", "overlay"]] * 2
        assert [e["class_index"] for e in record["predictions"]] == list(np.argsort(-probs)[:2])
        assert [e["probability"] for e in record["predictions"]] == pytest.approx(sorted(probs)[::-1][:2], abs=1e-5)
    (tmp_path / "imgs" / "s1.json").unlink()
    missing = invoke(*args, "--sidecar", "--out", tmp_path / "o2")
    assert missing.exit_code == 2 and missing.stderr.strip().splitlines()[-1] == (
        f"Error: image {tmp_path / 'imgs' / 's1.png'} has no sidecar ({tmp_path / 'imgs' / 's1.json'} or its .csv); "
        "write its non-image inputs there, or leave out --sidecar")


def test_evaluate_refuses_targets_its_metrics_do_not_define(files, tmp_path):
    result = invoke("evaluate", files / "imgs", "--model", files / "seg.keras", "--target", "segmentation",
                    "--out", tmp_path / "e")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --target segmentation cannot be evaluated: the metrics (deletion, insertion, confidence, ROAD, "
        "pointing) are defined on class scores; evaluate --target class")


def test_dry_run_names_the_target_and_its_engine(files, tmp_path):
    result = invoke("explain", files / "imgs", "--model", files / "seg.keras", "--target", "segmentation",
                    "--dry-run", "--out", tmp_path / "never")
    assert result.exit_code == 0 and not (tmp_path / "never").exists()
    for line in ("target_layer: dec", "target: segmentation",
                 "engine: trunk once, tape on the target layer, N backward passes after it", "images: 3"):
        assert line in result.stderr.splitlines()
