"""`gradcam evaluate` end to end: table, JSON and plots agree; resume; a trained CNN's Grad-CAM beats
the random map; option errors. The metrics themselves are tested in test_metrics.py."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from builders import scenes, trained
from helpers import invoke
from PIL import Image

ARGS = ("--metrics", "deletion,insertion,confidence", "--steps", 5, "-q")


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(f"sample_images/{name}", folder / name)
    return folder


def test_table_json_plots_agree_and_resume_completes(tmp_path, two_images, lite0_cam):
    out = tmp_path / "ev"
    result = invoke("evaluate", two_images, "--out", out, "--sanity", 1, *ARGS)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["summary"] == {"images": 2, "done": 2, "failed": 0}
    assert list(doc["aggregate"]) == ["gradcam", "random", "centre"]
    assert [r["label"] for r in doc["images"]] == ["Egyptian_cat", "espresso"]
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["method", "deletion", "(lower,", "n=2)"]  # the images each column covers
    for line in lines[1:4]:  # every number of the table is the JSON's mean [low, high]
        method = line.split()[0]
        numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", line)]
        fields = [f for f in doc["better"] if f in doc["aggregate"][method]]
        expected = [v for f in fields for v in (doc["aggregate"][method][f][k] for k in ("mean", "low", "high"))]
        np.testing.assert_allclose(numbers, expected, atol=5e-4)
    for record in doc["images"]:
        assert len(record["metrics"]["gradcam"]["deletion_curve"]) == 6
        mean = doc["aggregate"]["gradcam"]["deletion"]["mean"]
    assert mean == pytest.approx(np.mean([r["metrics"]["gradcam"]["deletion"] for r in doc["images"]]))
    assert set(doc["sanity"]["gradcam"]) == {"blocks", "spearman", "ssim", "failed"}
    assert "sanity gradcam: Spearman" in result.stdout
    for name in ("curves.png", "sanity.png"):
        assert Image.open(out / name).format == "PNG"

    # a killed run: the log keeps one whole record and a torn line; --resume completes it
    log = (out / "evaluation.jsonl").read_bytes().splitlines(keepends=True)
    (out / "evaluation.jsonl").write_bytes(log[0] + log[1][:40])
    again = invoke("evaluate", two_images, "--out", out, "--sanity", 1, "--resume", *ARGS)
    assert again.exit_code == 0, again.output
    resumed = json.loads((out / "evaluation.json").read_text())
    for a, b in zip(doc["images"], resumed["images"]):
        assert a["path"] == b["path"] and a["class_index"] == b["class_index"]
        for method in a["metrics"]:
            for key, value in a["metrics"][method].items():
                np.testing.assert_allclose(b["metrics"][method][key], value, atol=1e-5)


def test_gradcam_beats_the_random_map_on_a_trained_cnn(tmp_path):
    model = trained("softmax")
    model.save(tmp_path / "m.keras")
    x, _, _ = scenes("softmax", 24, seed=7)
    (tmp_path / "img").mkdir()
    for i, image in enumerate(np.round(x * 255).astype(np.uint8)):
        Image.fromarray(image).save(tmp_path / "img" / f"s{i:02d}.png")
    result = invoke("evaluate", tmp_path / "img", "--model", tmp_path / "m.keras", "--preprocess", "scale",
                    "--out", tmp_path / "ev", "--metrics", "deletion,insertion,road", "--insertion-baseline", "black",
                    "--steps", 10, "-q")
    assert result.exit_code == 0, result.output
    agg = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["aggregate"]
    assert agg["gradcam"]["deletion"]["mean"] < agg["random"]["deletion"]["mean"]
    assert agg["gradcam"]["insertion"]["mean"] > agg["random"]["insertion"]["mean"]
    assert agg["gradcam"]["road_combined"]["mean"] > agg["random"]["road_combined"]["mean"]


def test_option_errors_are_one_line_before_any_model_loads():
    missing = invoke("evaluate", "sample_images/", "--metrics", "pointing")
    assert missing.exit_code == 2 and "need --boxes-csv" in missing.stderr
    unknown = invoke("evaluate", "sample_images/", "--metrics", "deletion,speed")
    assert unknown.exit_code == 2 and "unknown metric 'speed'; choose 'all' or a comma-separated list of: deletion, " \
        "insertion, confidence, confidence_torchcam, road, occlusion, pointing, localisation, maxboxacc" in unknown.stderr
    near = invoke("evaluate", "sample_images/", "--metrics", "insertoin")
    assert near.exit_code == 2 and "unknown metric 'insertoin' (did you mean 'insertion'?)" in near.stderr


def test_a_boxes_csv_class_that_cannot_be_resolved_is_one_line_before_the_model_loads(tmp_path):
    """The class list comes from --labels, so the CSV's labels are checked before the model loads:
    the line names the CSV (the check after loading, on the model's own list, does not)."""
    import keras

    (tmp_path / "labels.txt").write_text("cat\ncat\nbird\n")
    keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="conv"),
                      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")]
                     ).save(tmp_path / "model.keras")
    for label, why in (("cat", "is ambiguous"), ("dog", "unknown class")):
        (tmp_path / "boxes.csv").write_text(f"path,label,x0,y0,x1,y1\nchelsea.jpg,{label},0,0,10,10\n")
        result = invoke("evaluate", "sample_images/", "--model", tmp_path / "model.keras", "--labels",
                        tmp_path / "labels.txt", "--metrics", "pointing", "--boxes-csv", tmp_path / "boxes.csv",
                        "--out", tmp_path / "ev")
        line = result.stderr.strip().splitlines()[-1]
        assert result.exit_code != 0 and line.startswith(f"Error: --boxes-csv {tmp_path / 'boxes.csv'}: "), line
        assert f"'{label}'" in line and why in line and "Traceback" not in result.stderr
    assert not (tmp_path / "ev").exists()


def test_curves_plot_has_one_panel_per_measured_curve_and_no_warning(tmp_path):
    import warnings

    import io

    from gradcam_cli.render.plots import curves_png

    for kinds, width in ((("deletion",), 550), (("deletion", "insertion"), 1100)):
        curves = {m: {k: [1.0, 0.4, 0.1] for k in kinds} for m in ("gradcam", "random")}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an empty panel's legend warns "No artists with labels found"
            png = curves_png(curves, ["deletion", "insertion"], dashed=("random",))
        assert Image.open(io.BytesIO(png)).size == (width, 440)
    assert curves_png({}, ["deletion", "insertion"]) is None


def test_the_table_says_how_many_images_each_column_covers(capsys):
    from gradcam_cli.cli.evaluate import _print_table

    cell = lambda mean, n: {"mean": mean, "low": mean - 0.1, "high": mean + 0.1, "n": n}  # noqa: E731
    _print_table({"better": {"deletion": "lower", "pointing": "higher"},
                  "aggregate": {"gradcam": {"deletion": cell(0.2, 5), "pointing": cell(80.0, 3)},
                                "random": {"deletion": cell(0.4, 5), "pointing": cell(40.0, 2)}}})
    assert capsys.readouterr().out.splitlines() == [
        "method   deletion (lower, n=5)  pointing (higher)",
        "gradcam  0.200 [0.100, 0.300]   80.000 [79.900, 80.100] n=3",
        "random   0.400 [0.300, 0.500]   40.000 [39.900, 40.100] n=2",
    ]
