"""Folder runs that never lose work: a corpus of every kind of input, kill and resume,
streaming JSON Lines, shards, exit codes."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gradcam_cli.io import images
from helpers import invoke, kill_after_records

from gradcam_cli.errors import ImageError



def photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 128)], -1)
    return (base + rng.integers(0, 30, (h, w, 3))).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Every case of discovery and decoding. Returns (root, expected ok outputs, expected error kinds)."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden_dir").mkdir()
    ok = {}  # relative path -> (width, height) the overlays must have

    def save(rel, array, **kw):
        path = root / rel
        Image.fromarray(array).save(path, **kw) if not isinstance(array, Image.Image) else array.save(path, **kw)
        return path

    save("plain.jpg", photo(120, 80)); ok["plain.jpg"] = (120, 80)
    save("UPPER.JPG", photo(50, 60, 1)); ok["UPPER.JPG"] = (50, 60)
    save("sub/gray.png", photo(64, 48, 2)[..., 0]); ok["sub/gray.png"] = (64, 48)
    save("sub/palette.gif", Image.fromarray(photo(40, 40, 3)).convert("P")); ok["sub/palette.gif"] = (40, 40)
    rgba = np.dstack([photo(30, 20, 4), np.full((20, 30), 128, np.uint8)])
    save("sub/alpha.png", rgba); ok["sub/alpha.png"] = (30, 20)
    save("sub/deeper/cmyk.jpg", Image.fromarray(photo(33, 22, 5)).convert("CMYK")); ok["sub/deeper/cmyk.jpg"] = (33, 22)
    save("sub/deeper/wide16.png", Image.fromarray((photo(40, 30, 6)[..., 0].astype(np.uint16) * 257)))
    ok["sub/deeper/wide16.png"] = (40, 30)
    exif = Image.Exif(); exif[0x0112] = 6  # rotate 90: stored 80x40, displayed 40x80
    save("rotated.jpg", photo(80, 40, 7), exif=exif); ok["rotated.jpg"] = (40, 80)
    save("a.jpg", photo(20, 20, 8)); ok["a.jpg"] = (20, 20)
    save("a.png", photo(21, 21, 9)); ok["a.png"] = (21, 21)
    save("café 'q' \"ü\".webp", photo(32, 32, 10)); ok["café 'q' \"ü\".webp"] = (32, 32)
    frames = [Image.fromarray(photo(24, 24, s)) for s in (11, 12)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:]); ok["anim.gif"] = (24, 24)
    save("big.png", photo(300, 300, 13))  # over --max-pixels below
    save(".hidden.jpg", photo(10, 10))
    save(".hidden_dir/x.jpg", photo(10, 10))
    (root / "notes.txt").write_text("not an image, wrong extension: never listed")
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is not a JPEG")
    data = (root / "plain.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    os.symlink(root / "plain.jpg", root / "sub" / "link_to_plain.jpg")  # same file: processed once
    os.symlink(root, root / "sub" / "loop")  # a symlink loop: never followed forever
    errors = {"empty.jpg": "empty", "text.jpg": "not_an_image", "truncated.jpg": "truncated", "big.png": "too_large"}
    return root, ok, errors


@pytest.fixture(scope="module")
def corpus_run(corpus, tmp_path_factory, lite0_cam):
    root, _, _ = corpus
    out = tmp_path_factory.mktemp("out")
    missing = root / "missing.jpg"  # listed on stdin: an error record (as an argument it is a usage error)
    result = invoke("explain", root, "-", "--out", out, "--top", 1, "--max-pixels", 50_000, "--jsonl", "-q",
                    input=f"{missing}\n")
    return result, out, missing


def test_corpus_every_good_image_has_its_overlay(corpus, corpus_run):
    root, ok, _ = corpus
    result, out, _ = corpus_run
    doc = json.loads((out / "predictions.json").read_text())
    good = {pathlib.Path(r["path"]).relative_to(root).as_posix(): r for r in doc["images"] if r["status"] == "ok"}
    assert set(good) == set(ok)
    for rel, record in good.items():
        assert (record["width"], record["height"]) == ok[rel]
        [p] = record["predictions"]
        with Image.open(out / p["overlay"]) as im:
            assert im.size == ok[rel]
    overlays = sorted(p["overlay"].split(".top1-")[0] for r in good.values() for p in r["predictions"])
    assert overlays == sorted(["plain", "UPPER", "sub/gray", "sub/palette", "sub/alpha", "sub/deeper/cmyk",
                               "sub/deeper/wide16", "rotated", "a", "a_png", "café 'q' \"ü\"", "anim"])


def test_corpus_every_bad_image_has_its_exact_record(corpus, corpus_run):
    root, _, errors = corpus
    result, out, missing = corpus_run
    assert result.exit_code == 1  # some images failed, the rest are done
    doc = json.loads((out / "predictions.json").read_text())
    bad = [r for r in doc["images"] if r["status"] == "error"]
    expected = []
    for path, kind in [(str(missing), "missing")] + [(str(root / rel), kind) for rel, kind in errors.items()]:
        with pytest.raises(ImageError) as info:
            images.decode(path, max_pixels=50_000)
        assert info.value.kind == kind
        expected.append({"path": path, "status": "error", "kind": kind, "message": info.value.message})
    assert sorted(bad, key=lambda r: r["path"]) == sorted(expected, key=lambda r: r["path"])
    assert doc["summary"] == {"images": len(doc["images"]), "done": 12, "failed": 5}
    # one line on stderr per failure, naming the file
    lines = [line for line in result.stderr.splitlines() if line.startswith("gradcam: skipped")]
    assert sorted(lines) == sorted(f"gradcam: skipped {e['path']}: {e['message']}" for e in expected)
    assert "Traceback" not in result.stderr
    # --jsonl streamed the same records, errors included, flagged by status
    streamed = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(streamed, key=lambda r: r["path"]) == sorted(doc["images"], key=lambda r: r["path"])


def test_corpus_hidden_non_images_duplicates_and_loops(corpus, corpus_run):
    root, _, _ = corpus
    _, out, _ = corpus_run
    paths = [r["path"] for r in json.loads((out / "predictions.json").read_text())["images"]]
    assert len(paths) == len(set(os.path.realpath(p) for p in paths))  # the symlinked plain.jpg: once
    assert not any("hidden" in p or p.endswith(".txt") for p in paths)
    assert not any(name.startswith(".") and ".tmp-" in name for name in os.listdir(out))


def _many_images(root: pathlib.Path, n: int) -> pathlib.Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(photo(96, 64, i)).save(root / f"img{i:03d}.jpg", quality=90)
    return root


def _cli(*args, **popen):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "gradcam_cli", "explain", *map(str, args)], env=env, **popen)


def _snapshot(out: pathlib.Path) -> tuple[set, list]:
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    doc = json.loads((out / "predictions.json").read_text())
    return files, doc["images"]


def test_kill_then_resume_equals_an_uninterrupted_run(tmp_path, lite0_cam):
    src = _many_images(tmp_path / "in", 90)
    full_out, killed_out = tmp_path / "full", tmp_path / "killed"
    assert _cli(src, "--out", full_out, "--batch-size", 4, "-q").wait() == 0

    proc = _cli(src, "--out", killed_out, "--batch-size", 1, "-q")
    jsonl = killed_out / "predictions.jsonl"
    kept = kill_after_records(proc, jsonl, 8)
    assert not (killed_out / "predictions.json").exists(), "the run finished before it could be killed"
    assert 8 <= kept < 90
    for jpg in killed_out.glob("*.jpg"):  # everything that has its final name is whole
        with Image.open(jpg) as im:
            im.load()

    resumed = _cli(src, "--out", killed_out, "--batch-size", 4, "--resume", stderr=subprocess.PIPE, text=True)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert f"({kept} kept from the previous run)" in err or f"({kept - 1} kept" in err

    full_files, full_records = _snapshot(full_out)
    files, records = _snapshot(killed_out)
    assert files == full_files  # same names, no temp files left behind
    assert [r["path"] for r in records] == [r["path"] for r in full_records]
    for a, b in zip(records, full_records):
        assert [p["class_index"] for p in a["predictions"]] == [p["class_index"] for p in b["predictions"]]
        assert [p["overlay"] for p in a["predictions"]] == [p["overlay"] for p in b["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in a["predictions"]],
                                   [p["probability"] for p in b["predictions"]], atol=1e-5)
    for name in files:
        if name.endswith(".jpg"):
            with Image.open(killed_out / name) as im, Image.open(full_out / name) as ref:
                diff = np.abs(np.asarray(im, np.int16) - np.asarray(ref, np.int16))
                assert diff.mean() < 0.5


def test_resume_refuses_other_settings(tmp_path, lite0_cam):
    out = tmp_path / "o"
    assert invoke("explain", "sample_images/coffee.jpg", "--out", out, "-q").exit_code == 0
    result = invoke("explain", "sample_images/coffee.jpg", "--out", out, "-q", "--resume", "--top", 5)
    assert result.exit_code == 2
    assert "cannot --resume in" in result.stderr and "top 3 -> 5" in result.stderr


def test_jsonl_is_readable_while_the_run_goes_on(tmp_path, lite0_cam):
    src = _many_images(tmp_path / "in", 60)
    proc = _cli(src, "--out", tmp_path / "o", "--batch-size", 1, "--jsonl", "-q", stdout=subprocess.PIPE, text=True)
    first = json.loads(proc.stdout.readline())
    still_running = proc.poll() is None
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait() == 0
    assert still_running, "the first record only arrived after the run ended"
    assert first["status"] == "ok" and first["path"].endswith("img000.jpg")
    assert len(rest) == 59


def test_shards_cover_every_input_exactly_once(tmp_path):
    src = _many_images(tmp_path / "in", 25)
    everything = invoke("explain", src, "--dry-run").stdout.splitlines()
    assert len(everything) == 25
    for n in (1, 3, 4):
        parts = [invoke("explain", src, "--dry-run", "--shard", f"{k}/{n}").stdout.splitlines() for k in range(1, n + 1)]
        assert sorted(p for part in parts for p in part) == sorted(everything)
        assert sum(len(part) for part in parts) == 25  # disjoint


def test_shards_write_their_own_predictions(tmp_path, lite0_cam):
    src = _many_images(tmp_path / "in", 6)
    out = tmp_path / "o"
    for k in (1, 2):
        assert invoke("explain", src, "--out", out, "--shard", f"{k}/2", "-q", "--top", 1).exit_code == 0
    docs = [json.loads((out / f"predictions.{k}-of-2.json").read_text()) for k in (1, 2)]
    assert sorted(r["path"] for d in docs for r in d["images"]) == sorted(str(p) for p in src.glob("*.jpg"))
    assert len(list(out.glob("*.top1-*.jpg"))) == 6


def test_dry_run_resolves_without_computing(tmp_path):
    out = tmp_path / "never"
    result = invoke("explain", "sample_images", "--dry-run", "--out", out)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == sorted(str(p) for p in pathlib.Path("sample_images").glob("*.jpg"))
    for line in ("backbone: efficientnet_lite0", "target_layer: top_activation", "preprocessing: mean_std",
                 "engine: trunk once + head on tiled activations", "images: 4"):
        assert line in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "args,code",
    [
        (["--top", "0"], 2),
        (["--shard", "5/4"], 2),
        (["--batch-size", "abc"], 2),
        (["--no-such-flag"], 2),
        (["--null"], 2),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, code):
    result = invoke("explain", "sample_images/coffee.jpg", "--out", tmp_path / "o", *args)
    assert result.exit_code == code
    assert "Traceback" not in result.stderr


def test_output_folder_that_cannot_be_written_exits_3(tmp_path, lite0_cam):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = invoke("explain", "sample_images/coffee.jpg", "--out", blocker / "out", "-q")
    assert result.exit_code == 3
    assert result.stderr.strip().startswith(f"Error: cannot write {blocker / 'out'}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_disk_full_mid_run_exits_3_and_keeps_what_is_done(tmp_path, monkeypatch, lite0_cam):
    real_open, calls = open, {"n": 0}

    def flaky_open(file, mode="r", *args, **kwargs):
        if ".jpg.tmp-" in str(file) and "w" in mode:  # an overlay being written
            calls["n"] += 1
            if calls["n"] > 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", flaky_open)
    out = tmp_path / "o"
    result = invoke("explain", "sample_images", "--out", out, "-q", "--top", 1, "--batch-size", 1)
    monkeypatch.undo()
    assert result.exit_code == 3
    assert "the disk is full" in result.stderr and "Traceback" not in result.stderr
    done = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(done) == 3 and all(r["status"] == "ok" for r in done)
    for record in done:
        assert (out / record["predictions"][0]["overlay"]).is_file()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # no half-written file left
