"""Several methods in one run: one forward and backward pass, a map per method in the library,
files named by method, records with a file per method, and resume after a kill."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import invoke, kill_after_records, random_images
from PIL import Image

from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.models.split import split_model

THREE = ("gradcam", "gradcam++", "layercam")
SAMPLES = ["chelsea", "coffee", "astronaut", "rocket"]


def test_the_library_gives_each_method_what_it_gives_alone(lite0_cam):
    images = [np.asarray(Image.open(f"sample_images/{n}.jpg")) for n in SAMPLES[:3]]
    together = lite0_cam.explain(images, top=2, method=list(THREE))
    for name in THREE:
        alone = lite0_cam.explain(images, top=2, method=name)
        for a, t in zip(alone, together):
            assert [p.class_index for p in a.predictions] == [p.class_index for p in t.predictions]
            np.testing.assert_allclose(t.maps_by_method[name], a.maps, atol=1e-6, err_msg=name)
    for t in together:
        assert list(t.maps_by_method) == list(THREE) and t.maps is t.maps_by_method["gradcam"]
        assert not np.allclose(t.maps_by_method["gradcam"], t.maps_by_method["layercam"], atol=1e-3)


@pytest.mark.parametrize("strategy", ["tile", "jacobian"])
def test_several_methods_run_trunk_head_and_backward_once(strategy):
    import keras

    keras.utils.set_random_seed(2)
    inp = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="target")(inp)
    model = keras.Model(inp, keras.layers.Dense(5, activation="softmax")(keras.layers.GlobalAveragePooling2D()(a)))
    split = split_model(model, "target")
    calls = {"trunk": 0, "head": 0}

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1  # Python runs once per trace: this counts the ops in the graph
            return fn(*args)
        return wrapper

    counting = dataclasses.replace(split, trunk=counted("trunk", split.trunk), head=counted("head", split.head))
    explainer = Explainer(counting, top=3, method=(*THREE, "xgradcam", "hirescam", "eigencam"), strategy=strategy)
    out = explainer(random_images(4, 16, seed=1))
    assert explainer.trace_count() == 1 and calls == {"trunk": 1, "head": 1}
    assert out.method_maps.shape == (4, 3, 6, 16, 16)


def test_cli_with_three_methods_writes_a_file_per_method(tmp_path, lite0_cam):
    out = tmp_path / "o"
    args = ["sample_images/chelsea.jpg", "sample_images/coffee.jpg", "--out", out, "-q", "--top", 2, "--save-raw"]
    result = invoke("explain", *args, *[x for m in THREE for x in ("--method", m)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["method"] == list(THREE) and doc["options"]["methods"] == list(THREE)
    expected_files = {"predictions.json", "predictions.jsonl", ".gradcam-run.json", ".gradcam.lock"}
    for record in doc["images"]:
        image = np.asarray(Image.open(record["path"]))
        [expected] = lite0_cam.explain([image], top=2, method=list(THREE))
        stem = os.path.splitext(os.path.basename(record["path"]))[0]
        for entry, p in zip(record["predictions"], expected.predictions):
            assert "overlay" not in entry and "raw" not in entry
            base = f"{stem}.top{p.rank}-{p.label.replace(' ', '_')}"
            assert entry["overlays"] == {m: f"{base}.{m}.jpg" for m in THREE}
            assert entry["raws"] == {m: f"{base}.{m}.npy" for m in THREE}
            expected_files |= set(entry["overlays"].values()) | set(entry["raws"].values())
            for m in THREE:
                np.testing.assert_allclose(np.load(out / entry["raws"][m]),
                                           expected.maps_by_method[m][p.rank - 1], atol=1e-6)
    assert {p.name for p in out.iterdir()} == expected_files
    assert "chelsea.top1-Egyptian_cat.gradcam++.jpg" in expected_files


def test_a_class_agnostic_method_is_marked(tmp_path, lite0_cam):
    out = tmp_path / "o"
    result = invoke("explain", "sample_images/coffee.jpg", "--out", out, "-q", "--top", 2, "--method", "eigencam")
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["method"] == "eigencam" and doc["class_agnostic"] == ["eigencam"]
    [record] = doc["images"]
    assert all(e["class_agnostic"] == ["eigencam"] and e["overlay"].endswith(".jpg") for e in record["predictions"])


def test_settings_and_cli_refuse_a_method_twice(tmp_path):
    from gradcam_cli.settings import RunSettings

    with pytest.raises(ValueError, match="methods must name each CAM method once"):
        RunSettings(methods=("gradcam", "gradcam"))
    assert RunSettings(methods="layercam").methods == ("layercam",)
    result = invoke("explain", "sample_images/coffee.jpg", "--out", tmp_path, "--method", "layercam", "--method", "layercam")
    assert result.exit_code == 2 and "each method may be given once, got layercam, layercam" in result.stderr


def _cli(*args, **popen):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "gradcam_cli", "explain", *map(str, args)], env=env, **popen)


def _photo(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    base = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((96, 64), Image.BILINEAR))


def test_kill_then_resume_with_three_methods_equals_an_uninterrupted_run(tmp_path, lite0_cam):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        Image.fromarray(_photo(i)).save(src / f"img{i:03d}.jpg", quality=90)
    methods = [x for m in THREE for x in ("--method", m)]
    full_out, killed_out = tmp_path / "full", tmp_path / "killed"
    assert _cli(src, "--out", full_out, "--batch-size", 4, "-q", *methods).wait() == 0

    proc = _cli(src, "--out", killed_out, "--batch-size", 1, "-q", *methods)
    jsonl = killed_out / "predictions.jsonl"
    kept = kill_after_records(proc, jsonl, 5)
    assert not (killed_out / "predictions.json").exists(), "the run finished before it could be killed"
    assert 5 <= kept < 40
    # an image missing one method's overlay is not complete: it is redone
    first = json.loads(jsonl.read_text().splitlines()[0])
    (killed_out / first["predictions"][0]["overlays"]["layercam"]).unlink()

    resumed = _cli(src, "--out", killed_out, "--batch-size", 4, "--resume", "-q", *methods, stderr=subprocess.PIPE,
                   text=True)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    full_files = {p.name for p in full_out.iterdir()}
    assert {p.name for p in killed_out.iterdir()} == full_files  # the deleted overlay is back, no temp files
    full_doc, doc = (json.loads((o / "predictions.json").read_text()) for o in (full_out, killed_out))
    assert doc["method"] == full_doc["method"] == list(THREE)
    for a, b in zip(doc["images"], full_doc["images"]):
        assert a["path"] == b["path"]
        assert [p["overlays"] for p in a["predictions"]] == [p["overlays"] for p in b["predictions"]]
    for name in full_files:
        if name.endswith(".jpg"):
            with Image.open(killed_out / name) as im, Image.open(full_out / name) as ref:
                assert np.abs(np.asarray(im, np.int16) - np.asarray(ref, np.int16)).mean() < 0.5
