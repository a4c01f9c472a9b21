"""`gradcam activations` and `gradcam filters` from the command line: the default offline backbone with
its real weights and an own .keras model; one-line errors."""

from __future__ import annotations

import json

import keras
import numpy as np
from helpers import invoke
from PIL import Image

from gradcam_cli.inspect.activations import default_layers
from gradcam_cli.render.channels import channel_grid


def test_activations_of_the_default_backbone(tmp_path, lite0_cam):
    out = tmp_path / "acts"
    result = invoke("activations", "sample_images/chelsea.jpg", "--out", out, "--first", 3, "--save-raw", "-q")
    assert result.exit_code == 0, result.output
    index = json.loads((out / "activations.json").read_text())
    layers = default_layers(lite0_cam.model, 3)
    assert [entry["path"] for entry in index["layers"]] == layers == ["stem_conv", "block1a_dwconv",
                                                                      "block1a_project_conv"]
    raw = np.load(out / "chelsea" / "stem_conv.npy")
    expected = keras.Model(lite0_cam.model.inputs, lite0_cam.model.get_layer("stem_conv").output)(
        lite0_cam.prepare([np.asarray(Image.open("sample_images/chelsea.jpg").convert("RGB"))])).numpy()[0]
    np.testing.assert_allclose(raw.reshape(expected.shape), expected, atol=1e-4)
    grid = np.asarray(Image.open(out / "chelsea" / "stem_conv.png").convert("RGB"))
    np.testing.assert_array_equal(grid, channel_grid(raw.reshape(expected.shape), title=grid_title(index, "stem_conv")))


def grid_title(index: dict, path: str) -> str:
    shape = next(entry["shape"] for entry in index["layers"] if entry["path"] == path)
    return f"{path}  {' x '.join(map(str, shape))}"


def test_filters_of_the_default_backbone_and_of_an_own_model(tmp_path, lite0_cam):
    result = invoke("filters", "--layer", "stem_activation", "--filters", "0,3-4", "--steps", 5, "--out",
                    tmp_path / "f", "-q")
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "f" / "filters.json").read_text())
    assert [f["filter"] for f in index["filters"]] == [0, 3, 4]
    assert all(f["final_mean_activation"] > f["initial_mean_activation"] for f in index["filters"])
    assert Image.open(tmp_path / "f" / "grid.png").size[0] > 3 * 64

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "own.keras")
    own = invoke("filters", "--model", tmp_path / "own.keras", "--layer", "c1", "--filters", "0-3", "--steps", 3,
                 "--out", tmp_path / "g", "-q")
    assert own.exit_code == 0, own.output
    assert len(json.loads((tmp_path / "g" / "filters.json").read_text())["filters"]) == 4
    fast = invoke("filters", "--model", tmp_path / "own.keras", "--layer", "c1", "--filters", "0-3", "--steps", 3,
                  "--precision", "bfloat16", "--out", tmp_path / "h", "-q")
    assert fast.exit_code == 0, fast.output
    index = json.loads((tmp_path / "h" / "filters.json").read_text())
    assert index["precision"] == "bfloat16" and json.loads((tmp_path / "g" / "filters.json").read_text())[
        "precision"] == "float32"
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(tmp_path / "grey.png")
    acts = invoke("activations", tmp_path / "grey.png", "--model", tmp_path / "own.keras", "--layers", "c1",
                  "--out", tmp_path / "a", "-q")
    assert acts.exit_code == 0, acts.output
    assert (tmp_path / "a" / "grey" / "c1.png").is_file()

    wrong = invoke("filters", "--model", tmp_path / "own.keras", "--layer", "c1", "--filters", "2-9", "-q")
    assert wrong.exit_code == 2 and "has 4 channels (0-3)" in wrong.stderr
    neither = invoke("filters", "-q")
    assert neither.exit_code == 2 and "give --layer NAME" in neither.stderr
    bad = invoke("filters", "--layer", "c1", "--filters", "3-1")
    assert bad.exit_code == 2 and "expected filter numbers and ranges" in bad.stderr


def test_unit_tiles_carry_their_class_names_and_filter_tiles_their_numbers(tmp_path):
    """`filters --unit`: each tile's strip shows its class name when the model's class names are
    known (--labels), else its unit number; a layer's filters show their numbers."""
    from gradcam_cli.render.channels import label_size, tile_label
    from gradcam_cli.render.text import strip_height

    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "own.keras")
    (tmp_path / "labels.txt").write_text("cat\ndog\nIrish_wolfhound\n")
    runs = {"named": ("--unit", "--labels", tmp_path / "labels.txt"), "numbered": ("--unit",),
            "filters": ("--layer", "c1")}
    for name, args in runs.items():
        result = invoke("filters", "--model", tmp_path / "own.keras", *args, "--filters", "0,2", "--steps", 2,
                        "--out", tmp_path / name, "-q")
        assert result.exit_code == 0, result.output
        index = json.loads((tmp_path / name / "filters.json").read_text())
        labels = ["cat", "Irish_wolfhound"] if name == "named" else ["0", "2"]
        assert [r.get("label") for r in index["filters"]] == (labels if name == "named" else [None, None])
        grid = np.asarray(Image.open(tmp_path / name / "grid.png").convert("RGB"))
        size = label_size(labels, 32)
        strip = strip_height(size)
        assert grid.shape == (strip + 32, 2 * 32 + 5, 3)
        for k, (label, record) in enumerate(zip(labels, index["filters"])):
            x = k * (32 + 5)
            np.testing.assert_array_equal(grid[:strip, x:x + 32], tile_label(label, 32, size))
            pattern = np.asarray(Image.open(tmp_path / name / record["file"]).convert("RGB"))
            np.testing.assert_array_equal(grid[strip:, x:x + 32], pattern)  # the pattern itself, untouched
