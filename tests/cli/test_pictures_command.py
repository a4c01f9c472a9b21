"""`gradcam pictures OUT_DIR`: a finished run's grids and GIFs without running it again; from its
maps they are the files `explain --grid --gif` writes, byte for byte."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest
from helpers import invoke
from PIL import Image


@pytest.fixture(scope="module")
def valid_run(tmp_path_factory):
    """A 'valid'-padded model (its maps placed at their receptive fields, not stretched) and three
    smooth images: a 400 x 300 JPEG (decoded reduced for 100 px pictures), a PNG and a small JPEG."""
    root = tmp_path_factory.mktemp("pictures")
    keras.utils.set_random_seed(3)
    inp = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 7, activation="relu")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 5, activation="relu", name="target")(x)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(root / "valid.keras")
    images = root / "images"
    images.mkdir()
    for name, (h, w) in (("big.jpg", (300, 400)), ("mid.png", (90, 120)), ("small.jpg", (70, 50))):
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = np.stack([xx * 255 / w, yy * 255 / h, 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 7.0)], -1)
        Image.fromarray(smooth.clip(0, 255).astype(np.uint8)).save(images / name, quality=95)
    return root, ["--model", root / "valid.keras", "--preprocess", "scale", "-q"]


def pictures_of(out, record) -> dict:
    return {key: (out / record[key]).read_bytes() for key in ("grid", "gif")}


def test_pictures_from_the_maps_are_the_files_explain_writes(valid_run, tmp_path):
    """Two methods, boxes, --overlay-max-side 100 (the big JPEG decoded reduced), the receptive-field
    upsampling of the header's geometry: the grid and GIF that `pictures` draws from the saved
    maps and the originals equal, byte for byte, those the run wrote."""
    root, model = valid_run
    out = tmp_path / "o"
    result = invoke("explain", root / "images", "--out", out, *model, "--top", 2, "--save-raw", "--grid", "--gif",
                    "--boxes", "--overlay-max-side", 100, "--grid-columns", 2, "--grid-tile", 80,
                    "--method", "gradcam", "--method", "layercam")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["geometry"]["kind"] == "receptive_field"
    big = next(r for r in doc["images"] if r["path"].endswith("big.jpg"))
    assert big["decoded_size"] == big["overlay_size"] == [100, 75]  # libjpeg reduced it by 4
    before = {r["path"]: pictures_of(out, r) for r in doc["images"]}
    for record in doc["images"]:
        (out / record["grid"]).unlink()
        (out / record["gif"]).unlink()
    made = invoke("pictures", out, "--grid", "--gif")
    assert made.exit_code == 0, made.output
    assert sorted(made.stdout.split()) == sorted(str(out / r[k]) for r in doc["images"] for k in ("grid", "gif"))
    assert "3 images drawn from their maps, 0 from their overlay JPEGs, 0 passed over" in made.stderr
    for record in doc["images"]:
        assert pictures_of(out, record) == before[record["path"]], record["path"]
    assert json.loads((out / "predictions.json").read_text()) == doc  # read, never changed

    # the run's settings are the defaults; a flag changes its own
    wider = invoke("pictures", out, "--grid", "--grid-columns", 1, "-q")
    assert wider.exit_code == 0 and wider.stderr == ""
    with Image.open(out / big["grid"]) as grid:
        assert grid.width == 8 + 80 + 8  # GAP + one 80 px column + GAP
    assert (out / big["gif"]).read_bytes() == before[big["path"]]["gif"]  # only the grid was asked


def test_pictures_from_the_overlays_without_maps(valid_run, tmp_path):
    """No --save-raw: the tiles are the overlay JPEGs (their --caption / --colorbar strips cut off),
    within two JPEG generations of the grid and GIF the run wrote."""
    root, model = valid_run
    out = tmp_path / "o"
    result = invoke("explain", root / "images", "--out", out, *model, "--top", 2, "--grid", "--gif", "--caption",
                    "--colorbar", "--overlay-max-side", 100)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "predictions.json").read_text())
    before = {}
    for record in doc["images"]:
        with Image.open(out / record["grid"]) as grid, Image.open(out / record["gif"]) as gif:
            before[record["path"]] = (np.asarray(grid.convert("RGB"), int), gif.n_frames, gif.size)
        shutil.move(out / record["grid"], tmp_path / f"{record['path'].rsplit('/', 1)[1]}.grid.jpg")
    made = invoke("pictures", out, "--grid", "--gif")
    assert made.exit_code == 0, made.output
    assert "0 images drawn from their maps, 3 from their overlay JPEGs" in made.stderr
    for record in doc["images"]:
        grid, frames, size = before[record["path"]]
        with Image.open(out / record["grid"]) as again, Image.open(out / record["gif"]) as gif:
            again = np.asarray(again.convert("RGB"), int)
            assert (gif.n_frames, gif.size) == (frames, size)
        assert again.shape == grid.shape
        # one more JPEG generation on each tile: 0.6-1.1 levels on average (measured); with the strips
        # left on the overlays (squashed into the tiles) 12.5
        assert np.abs(again - grid).mean() < 2, record["path"]


def test_images_without_an_original_or_maps_get_one_warning_and_the_rest_go_on(valid_run, tmp_path):
    root, model = valid_run
    images = tmp_path / "images"
    shutil.copytree(root / "images", images)
    out = tmp_path / "o"
    result = invoke("explain", images, "--out", out, *model, "--top", 1, "--save-raw")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "predictions.json").read_text())
    (images / "mid.png").unlink()
    small = next(r for r in doc["images"] if r["path"].endswith("small.jpg"))
    (out / small["predictions"][0]["raw"]).unlink()  # its maps are gone: its overlay is its tile
    made = invoke("pictures", out, "--gif", "--report")
    assert made.exit_code == 1, made.output
    assert made.stderr.strip().splitlines()[:-1] == [  # in the records' order
        f"gradcam: warning: passed over {images / 'mid.png'}: its original (the first tile and frame) cannot be read: "
        "file not found (check the path; it may have been moved or deleted)",
        f"gradcam: warning: {small['path']}: its --save-raw maps are not all in the folder: its tiles are its overlay "
        "JPEGs",
    ]
    assert "1 images drawn from their maps, 1 from their overlay JPEGs, 1 passed over" in made.stderr
    assert (out / "big.gif").is_file() and (out / "small.gif").is_file() and not (out / "mid.gif").exists()
    assert made.stdout.splitlines()[-1] == str(out / "report.html") and (out / "report.html").is_file()


def test_a_folder_without_a_usable_run_is_one_line(valid_run, tmp_path):
    root, model = valid_run
    missing = invoke("pictures", tmp_path / "nowhere", "--grid")
    assert missing.exit_code == 2 and len(missing.stderr.splitlines()) == 1
    assert "no predictions.json in" in missing.stderr
    out = tmp_path / "o"
    result = invoke("explain", root / "images" / "mid.png", "--out", out, *model, "--top", 1, "--no-overlays")
    assert result.exit_code == 0, result.output
    bare = invoke("pictures", out, "--gif")
    assert bare.exit_code == 2 and "kept neither its maps (--save-raw) nor overlays" in bare.stderr
    (out / "predictions.json").rename(out / "predictions.1-of-2.json")
    sharded = invoke("pictures", out, "--gif")
    assert sharded.exit_code == 2 and "holds the shards predictions.1-of-2.json: `gradcam merge" in sharded.stderr
    old = json.loads((out / "predictions.1-of-2.json").read_text())
    del old["options"]
    (out / "predictions.json").write_text(json.dumps(old))
    older = invoke("pictures", out, "--gif")
    assert older.exit_code == 2 and "records no run settings" in older.stderr
    for args, message in ((("--grid-columns", 2), "say what to add"), (("--gif", "--grid-tile", 90), "--grid-tile apply")):
        usage = invoke("pictures", out, *args)
        assert usage.exit_code == 2 and message in usage.stderr


@pytest.mark.parametrize("kind", ["linear", "grey"])
def test_a_regression_and_a_grey_model_get_the_same_pictures_after_the_run(tmp_path, kind):
    """A linear head's records hold a value, not a probability: the grid's titles, the GIF's and the
    overlays' captions say "value" (the grid crashed on it before). A grey model's pictures are
    drawn on the grey image, after the run too."""
    from builders import grey_cnn, small_cnn
    from helpers import make_images

    (small_cnn("linear") if kind == "linear" else grey_cnn()).save(tmp_path / "m.keras")
    images = make_images(tmp_path / "images", 2)
    out = tmp_path / "o"
    result = invoke("explain", images, "--model", tmp_path / "m.keras", "--preprocess", "scale", "--out", out,
                    "--grid", "--gif", "--caption", "--save-raw", "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "predictions.json").read_text())
    if kind == "linear":
        assert all("value" in e and "probability" not in e for r in doc["images"] for e in r["predictions"])
    else:
        assert doc["preprocessing"]["channels"] == 1
    before = {r["path"]: pictures_of(out, r) for r in doc["images"]}
    made = invoke("pictures", out, "--grid", "--gif", "-q")
    assert made.exit_code == 0, made.output
    assert {r["path"]: pictures_of(out, r) for r in doc["images"]} == before
