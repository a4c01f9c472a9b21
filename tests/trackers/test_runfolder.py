"""Reading a finished run folder for the trackers: captions, rows, parameters, figures, artifacts,
from hand-made predictions.json files (several methods, --class runs, the true class's extra map,
failed images)."""

from __future__ import annotations

import json
import math

import pytest

from gradcam_cli._version import __version__
from gradcam_cli.errors import InputError
from gradcam_cli.trackers.runfolder import numbers, read_run, top_caption


def entry(rank, label, p, overlay=None, true=False, **more):
    found = {"rank": rank, "class_index": rank, "label": label, "probability": p, "true_class": true, **more}
    if overlay:
        found["overlay"] = overlay
    return found


def write_run(folder, images, options=None, **header):
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"tool": "gradcam-cli", "version": __version__, "method": "gradcam", "target_layer": "top",
           "options": {"methods": ["gradcam"], "top": 2, "classes": [], "alpha": 0.4, **(options or {})},
           "summary": {"images": len(images), "done": 1, "failed": 1, "accuracy": {"top1": 0.5, "labelled": 2,
                                                                                     "misclassified": ["b.png"]}},
           "images": images, **header}
    (folder / "predictions.json").write_text(json.dumps(doc))
    return doc


def test_captions_leave_out_the_true_class_extra_map_and_name_the_truth():
    record = {"true_label": {"label": "fox", "rank": 4},
              "predictions": [entry(1, "dog", 0.5), entry(2, "cat", 0.25), entry(4, "fox", 0.05, true=True)]}
    assert top_caption(record, 2) == "top-2: dog 0.500, cat 0.250; truth: fox (rank 4)"
    record["true_label"]["rank"] = 2
    record["predictions"] = [entry(1, "dog", 0.5), entry(2, "fox", 0.25, true=True)]
    assert top_caption(record, 2) == "top-2: dog 0.500, fox 0.250; truth: fox (rank 2)"
    assert top_caption({"predictions": [entry(3, "cat", 0.1), entry(1, "dog", 0.8)]}, None) == "classes: cat 0.100, dog 0.800"
    assert top_caption({"predictions": [{"rank": 1, "label": "y", "value": 2.5}]}, 1) == "top-1: y 2.500"


def test_a_run_of_several_methods_and_a_failed_image(tmp_path):
    out = tmp_path / "out"
    maps = {"gradcam": "a.top1-dog.gradcam.jpg", "layercam": "a.top1-dog.layercam.jpg"}
    doc = write_run(out, [
        {"path": "in/a.png", "status": "ok", "predictions": [entry(1, "dog", 0.75, overlays=maps), entry(2, "cat", 0.2)]},
        {"path": "in/b.png", "status": "error", "error": "truncated"},
    ], options={"methods": ["gradcam", "layercam"]})
    for name in maps.values():
        (out / name).write_bytes(b"jpeg")
    (out / "report.html").write_text("<html>")
    run = read_run(out)
    assert [s.name for s in run.shots] == list(maps.values())  # the second class has no overlay file: left out
    assert run.shots[0].caption == "in/a.png: map of dog; top-2: dog 0.750, cat 0.200"
    assert [(r.image, r.prediction, r.score, r.truth, r.overlay) for r in run.rows] == [
        ("in/a.png", "dog", 0.75, None, out / maps["gradcam"])]
    assert run.params["methods"] == '["gradcam", "layercam"]' and run.params["alpha"] == "0.4"
    assert run.params["method"] == "gradcam" and run.params["version"] == __version__
    assert run.metrics == {"run.images": 2.0, "run.done": 1.0, "run.failed": 1.0, "run.accuracy.top1": 0.5,
                           "run.accuracy.labelled": 2.0}
    assert run.artifacts == [out / "predictions.json", out / "report.html"]
    assert doc["images"][1]["status"] == "error"


def test_evaluate_figures_and_their_errors(tmp_path):
    out = tmp_path / "out"
    write_run(out, [])
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "evaluation.json").write_text(json.dumps({"aggregate": {"gradcam": {"deletion": {"mean": 0.25, "n": 3},
                                                                              "flag": True, "gap": float("nan")}}}))
    (ev / "curves.png").write_bytes(b"png")
    run = read_run(out, evaluation=ev)
    assert {k: v for k, v in run.metrics.items() if k.startswith("evaluate.")} == {
        "evaluate.gradcam.deletion.mean": 0.25, "evaluate.gradcam.deletion.n": 3.0}  # no bools, no NaN
    assert run.artifacts[-2:] == [ev / "evaluation.json", ev / "curves.png"]
    assert read_run(out).metrics.keys().isdisjoint({"evaluate.gradcam.deletion.mean"})  # none in OUT_DIR: none
    with pytest.raises(InputError, match=r"no evaluation.json at .*nowhere"):
        read_run(out, evaluation=tmp_path / "nowhere")
    (ev / "evaluation.json").write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="holds no 'aggregate' figures"):
        read_run(out, evaluation=ev)
    assert numbers([1, {"a": math.inf, "b": 2}], "x") == {"x.0": 1.0, "x.1.b": 2.0}


def test_foreign_or_older_files_are_one_line(tmp_path):
    out = tmp_path / "out"
    write_run(out, [], tool="something-else")
    with pytest.raises(InputError, match="is not a gradcam-cli predictions file"):
        read_run(out)
    doc = write_run(out, [])
    del doc["images"]
    (out / "predictions.json").write_text(json.dumps(doc))
    with pytest.raises(InputError) as found:
        read_run(out)
    assert str(found.value).endswith("predictions.json is not a gradcam-cli predictions file (no 'images' list)")
    (out / "predictions.json").write_text(json.dumps({**doc, "images": [], "options": {"top": 3}}))
    with pytest.raises(InputError) as found:
        read_run(out)
    assert str(found.value) == (f"{out / 'predictions.json'} is not a finished run's predictions file: it lacks the "
                                f"run's settings ('options' with 'methods'); rerun `gradcam explain ... --out {out}` "
                                "and export that")
    (out / "predictions.json").write_text(json.dumps({**doc, "images": [], "version": "0.1.0", "options": {"top": 3}}))
    with pytest.raises(InputError, match=r"written by gradcam-cli 0\.1\.0, whose format lacks the run's settings"):
        read_run(out)
