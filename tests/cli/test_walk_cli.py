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


def test_what_the_walk_cannot_read_gets_error_records_and_the_run_goes_on(tmp_path, tiny):
    """Run in a child that permission bits bind (root reads through them otherwise)."""
    import os
    import sys

    from helpers import run_bound_by_permissions

    options, images = tiny
    t = tmp_path / "t"
    shutil.copytree(images, t)
    shutil.copytree(images, t / "locked")
    shutil.copytree(images, t / "noenter")
    os.symlink("nowhere.png", t / "broken.png")
    os.symlink("loop.png", t / "loop.png")
    (t / "locked").chmod(0o300)
    (t / "noenter").chmod(0o600)
    try:
        done = run_bound_by_permissions(
            [sys.executable, "-m", "gradcam_cli", "explain", "t", "t/noenter/im000.png", "--out", "o", *options],
            cwd=tmp_path)
    finally:
        for folder in (t / "locked", t / "noenter"):
            folder.chmod(0o755)
    assert "Traceback" not in done.stderr and "does not exist" not in done.stderr, done.stderr
    records = {r["path"]: r for r in _records(tmp_path / "o")}
    assert sum(r["status"] == "ok" for r in records.values()) == 6
    errors = {path: (r["kind"], r["message"]) for path, r in records.items() if r["status"] == "error"}
    assert errors["t/broken.png"] == ("missing", "broken symbolic link to nowhere.png (fix or remove the link)")
    assert errors["t/loop.png"][0] == "unreadable" and "symlink loop" in errors["t/loop.png"][1]
    assert errors["t/locked"][0] == "unreadable" and "cannot be listed" in errors["t/locked"][1]
    noenter = [path for path in errors if path.startswith("t/noenter/")]
    assert sorted(noenter) == [f"t/noenter/im{i:03d}.png" for i in range(6)]
    for path in noenter:
        assert "permission denied on folder t/noenter" in errors[path][1]
    assert done.returncode == 1 and len(errors) == 9  # some images failed


def test_a_corrupt_jpeg_is_recorded_with_libjpegs_warning_and_its_name(tmp_path, tiny, capfd):
    import io

    import numpy as np
    from PIL import Image

    options, _ = tiny
    photos = tmp_path / "photos"
    photos.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    (photos / "bad.jpg").write_bytes(data[:-2] + b"\x12\x34" * 50 + data[-2:])  # whole, junk before its end marker
    (photos / "good.jpg").write_bytes(data)
    result = invoke("explain", photos, "--out", tmp_path / "o", *options)
    assert result.exit_code == 0, result.output
    records = {r["path"]: r for r in _records(tmp_path / "o")}
    bad, good = records[str(photos / "bad.jpg")], records[str(photos / "good.jpg")]
    assert bad["status"] == "ok" and len(bad["warnings"]) == 1 and bad["warnings"][0].startswith("Corrupt JPEG data:")
    assert good["status"] == "ok" and "warnings" not in good
    assert f"gradcam: warning: {photos / 'bad.jpg'}: Corrupt JPEG data:" in result.stderr
    assert "Corrupt JPEG" not in capfd.readouterr().err  # libjpeg's own line, without the file's name
