"""Walking the inputs end to end: a run never explains its own (or another run's) output, and
what the walk cannot read gets an error record naming the cause while the rest of the run goes on."""

from __future__ import annotations

import json
import shutil

from helpers import invoke, make_images


def _records(out):
    return json.loads((out / "predictions.json").read_text())["images"]


def test_a_second_run_into_a_subfolder_does_not_explain_the_first_runs_overlays(tmp_path, tiny):
    options, images = tiny
    photos = tmp_path / "photos"
    shutil.copytree(images, photos)
    for _ in range(2):
        result = invoke("explain", photos, "--out", photos / "heat", *options)
        assert result.exit_code == 0, result.output
        assert sorted(r["path"] for r in _records(photos / "heat")) == sorted(str(p) for p in photos.glob("*.png"))
    assert not (photos / "heat" / "heat").exists()


def test_a_folder_holding_another_run_is_left_out_and_the_out_folder_too(tmp_path, tiny):
    options, images = tiny
    photos = tmp_path / "photos"
    shutil.copytree(images, photos)
    assert invoke("explain", photos, "--out", photos / "old", *options).exit_code == 0
    make_images(photos / "fresh", 2)  # an --out made beforehand, holding pictures but no run yet
    result = invoke("explain", photos, "--out", photos / "fresh", *options)
    assert result.exit_code == 0, result.output
    assert len(_records(photos / "fresh")) == 6


def test_only_a_run_folder_given_says_why_nothing_was_found(tmp_path, tiny):
    options, images = tiny
    assert invoke("explain", images, "--out", tmp_path / "o", *options).exit_code == 0
    result = invoke("explain", tmp_path / "o", "--out", tmp_path / "o2", *options)
    assert result.exit_code == 5
    assert "holds a gradcam run" in result.stderr and "\n" not in result.stderr.strip()
