"""The settings records on the ground floor: nested records, flat ``to_json()`` keys that older run
folders hold, and ``--resume`` on a folder written by gradcam-cli 0.2.0 before the records nested."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
from helpers import invoke

from gradcam_cli.settings import (
    BoxSettings,
    DepthSettings,
    GridSettings,
    MethodOptions,
    OutputSettings,
    OverlaySettings,
    RunSettings,
    TargetSettings,
)

OLD_RUN = pathlib.Path(__file__).parent / "data" / "run-0.2.0"  # `explain sample_images/coffee.jpg --top 1
                                                                # --overlay-max-side 64`, by 0.2.0 (a1c3a62)


def test_to_json_keeps_the_flat_keys_and_order_of_older_run_files():
    old = json.loads((OLD_RUN / ".gradcam-run.json").read_text())["settings"]
    settings = RunSettings.from_json(old)
    assert settings.targets.top == 1 and settings.outputs.overlay.max_side == 64
    flat = list(settings.to_json().items())
    assert flat[:len(old)] == list(old.items())  # keys, order and values
    assert flat[len(old):] == [("caption", False), ("colorbar", False), ("intensity", "auto"), ("window", None),
                               ("target", "class"), ("mask", None), ("reference", None), ("embedding", None),
                               ("sidecar", False), ("slice_axis", None), ("box_score_threshold", None),
                               ("model.token_grid", None),
                               ("model.prefix_tokens", None), ("centre_activations", "auto"),
                               ("scorecam_baseline", "auto")]  # added since, last, at their defaults


def test_nested_fields_map_to_their_flat_keys():
    settings = RunSettings(
        targets=TargetSettings(top=5, classes=("cat", "7"), threshold=0.2, labels_csv="/l.csv"),
        methods=("gradcam", "layercam"),
        method_options=MethodOptions(scorecam_channels=8, eigen_smooth=True, centre_activations="off"),
        outputs=OutputSettings(overlay=OverlaySettings(alpha=0.5, colormap="turbo", quality=80, max_side=512,
                                                       enabled=False, caption=True, colorbar=True),
                               raw=True, boxes=BoxSettings(enabled=True, threshold=0.3),
                               grid=GridSettings(enabled=True, columns=4, tile=256)),
        max_pixels=1000, depth=DepthSettings(intensity="window", window=(40, 400)),
    )
    flat = settings.to_json()
    assert (flat["intensity"], flat["window"]) == ("window", [40.0, 400.0])
    assert {k: flat[k] for k in ("top", "classes", "threshold", "labels_csv", "methods", "scorecam_channels",
                                 "eigen_smooth", "alpha", "colormap", "quality", "overlay_max_side", "overlays",
                                 "save_raw", "boxes", "box_threshold", "grid", "grid_columns", "grid_tile", "gif",
                                 "max_pixels", "caption", "colorbar", "centre_activations")} == {
        "top": 5, "classes": ["cat", "7"], "threshold": 0.2, "labels_csv": "/l.csv", "methods": ["gradcam", "layercam"],
        "scorecam_channels": 8, "eigen_smooth": True, "alpha": 0.5, "colormap": "turbo", "quality": 80,
        "overlay_max_side": 512, "overlays": False, "save_raw": True, "boxes": True, "box_threshold": 0.3,
        "grid": True, "grid_columns": 4, "grid_tile": 256, "gif": False, "max_pixels": 1000, "caption": True,
        "colorbar": True, "centre_activations": "off"}
    assert RunSettings.from_json(flat) == settings  # a round trip, tuples and all


def test_from_json_names_an_unknown_key():
    with pytest.raises(ValueError, match="unknown run setting 'overlay_alpha'; known: model.*, methods, top"):
        RunSettings.from_json({"overlay_alpha": 0.3})
    with pytest.raises(ValueError, match="unknown run setting 'model.colour'"):
        RunSettings.from_json({"model.colour": "red"})


def test_resume_on_a_folder_written_by_an_older_version(tmp_path, lite0_cam):
    out = tmp_path / "old"
    shutil.copytree(OLD_RUN, out)
    before = (out / "predictions.jsonl").read_bytes()
    result = invoke("explain", "sample_images/coffee.jpg", "--out", out, "--top", 1, "--overlay-max-side", 64,
                    "--resume")
    assert result.exit_code == 0, result.stderr
    assert "(1 kept from the previous run)" in result.stderr
    assert (out / "predictions.jsonl").read_bytes() == before  # nothing redone
    other = invoke("explain", "sample_images/coffee.jpg", "--out", out, "--top", 2, "--resume")
    assert (other.exit_code, other.stderr) == (2, f"Error: cannot --resume in {out}: it was made with other settings "
                                                  "(top 1 -> 2, overlay_max_side 64 -> None); use the same options, or "
                                                  "another --out folder\n")  # other settings are still refused
