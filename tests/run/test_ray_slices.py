"""`--engine ray` with `--slice-axis`: a 2-D model's NIfTI slices are explained on Ray actors exactly as
on the local engine (the actors get each slice as a frame and the depth settings with its axis)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import grey_cnn
from helpers import assert_close, invoke

nibabel = pytest.importorskip("nibabel")
pytestmark = pytest.mark.ray  # starts a local Ray


def test_slices_on_ray_are_the_local_engines(tmp_path, ray_address):
    grey_cnn(32).save(tmp_path / "grey.keras")
    volume = np.random.default_rng(6).normal(500, 120, (32, 32, 4)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii.gz")
    args = ("explain", tmp_path / "v.nii.gz", "--model", tmp_path / "grey.keras", "--slice-axis", "2", "--top", "1",
            "--save-raw", "-q")
    assert invoke(*args, "--out", tmp_path / "local").exit_code == 0
    result = invoke(*args, "--out", tmp_path / "ray", "--engine", "ray", "--workers", "1")
    assert result.exit_code == 0, result.stderr
    local, remote = (json.loads((tmp_path / name / "predictions.json").read_text())["images"] for name in ("local", "ray"))
    assert [r["frame"] for r in remote] == [1, 2, 3, 4]
    assert_close(remote, local)
    for a, b in zip(remote, local):
        np.testing.assert_allclose(np.load(tmp_path / "ray" / a["predictions"][0]["raw"]),
                                   np.load(tmp_path / "local" / b["predictions"][0]["raw"]), atol=1e-5)
