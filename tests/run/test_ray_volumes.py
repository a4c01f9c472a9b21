"""`--engine ray` with a 3-D model: the volumes split over the actors (one volume per batch) give the
local engine's records and NIfTI maps; a killed local run is finished on Ray redoing only what is
missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import blob_volumes, conv3d_model
from helpers import assert_close, invoke

nibabel = pytest.importorskip("nibabel")
pytestmark = pytest.mark.ray  # starts a local Ray


def records(out) -> list[dict]:
    return json.loads((out / "predictions.json").read_text())["images"]


def test_volumes_on_ray_are_the_local_engines_and_a_killed_local_run_finishes_there(tmp_path, ray_address):
    conv3d_model().save(tmp_path / "m3d.keras")
    x, _, _ = blob_volumes(3, seed=9)
    (tmp_path / "in").mkdir()
    for i, v in enumerate(x):
        nibabel.save(nibabel.Nifti1Image(v[..., 0], np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "in" / f"v{i}.nii.gz")
    args = ("explain", tmp_path / "in", "--model", tmp_path / "m3d.keras", "--top", "2", "--method", "gradcam",
            "--method", "eigencam", "-q")
    assert invoke(*args, "--out", tmp_path / "local").exit_code == 0
    result = invoke(*args, "--out", tmp_path / "ray", "--engine", "ray", "--workers", "2")
    assert result.exit_code == 0, result.stderr
    local, remote = records(tmp_path / "local"), records(tmp_path / "ray")
    assert [r["path"] for r in remote] == [str(tmp_path / "in" / f"v{i}.nii.gz") for i in range(3)]  # input order
    assert_close(remote, local)
    for a in remote:
        for entry in a["predictions"]:
            for files in entry["maps"].values():
                mine = nibabel.load(tmp_path / "ray" / files["nifti"])
                theirs = nibabel.load(tmp_path / "local" / files["nifti"])
                np.testing.assert_array_equal(mine.affine, theirs.affine)
                # another process, the same model and input: float32 maps alike to rounding
                np.testing.assert_allclose(mine.get_fdata(), theirs.get_fdata(), atol=1e-6)
    # a local run killed after one volume (its log holds one record and a torn line), finished on Ray
    killed = tmp_path / "killed"
    killed.mkdir()
    lines = (tmp_path / "local" / "predictions.jsonl").read_text().splitlines(keepends=True)
    (killed / "predictions.jsonl").write_text(lines[0] + lines[1][:30])
    (killed / ".gradcam-run.json").write_bytes((tmp_path / "local" / ".gradcam-run.json").read_bytes())
    for files in (f for entry in local[0]["predictions"] for f in entry["maps"].values()):
        for key in ("nifti", "montage", "gif"):
            (killed / files[key]).parent.mkdir(parents=True, exist_ok=True)
            (killed / files[key]).write_bytes((tmp_path / "local" / files[key]).read_bytes())
    result = invoke(*args[:-1], "--out", killed, "--engine", "ray", "--workers", "1", "--resume")
    assert result.exit_code == 0, result.stderr
    assert "3 volumes explained (1 kept from the previous run)" in result.stderr
    assert_close(records(killed), local)
