"""Feeding a GPU: reduced JPEG decode, --no-overlays, --overlay-max-side, the I/O thread count."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from helpers import invoke

from gradcam_cli.io.images import decode, decode_sized, reduction
from gradcam_cli.io.preprocess import resize
from gradcam_cli.run.folder import io_threads
from gradcam_cli.run.outputs import outputs_for
from gradcam_cli.run.step import decode_floor
from gradcam_cli.settings import RunSettings


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    """A 3608 x 2400 photo (chelsea upscaled, with fine texture added), as a quality-92 JPEG."""
    image = cv2.imread("sample_images/chelsea.jpg")
    big = cv2.resize(image, (3608, 2400), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).integers(-12, 13, big.shape)
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    cv2.imwrite(str(path), (big + noise).clip(0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path



def floor_for(**flat):
    """The decode floor of a run with these settings (``RunSettings.from_json`` keys), for a 224 px model."""
    return decode_floor(outputs_for(RunSettings.from_json(flat)), (224, 224))

def test_reduction_keeps_the_asked_size():
    assert reduction(3000, 4000, None) == 1
    assert reduction(3000, 4000, (448, 448)) == 4  # 750 x 1000 >= 448; 375 < 448
    assert reduction(3000, 4000, (100, 100)) == 8
    assert reduction(300, 400, (448, 448)) == 1


def test_reduced_decode_gives_the_same_model_input_within_the_resize_tolerance(big_jpeg):
    full = decode(str(big_jpeg))
    floor = floor_for(overlays=False)
    reduced, size = decode_sized(str(big_jpeg), at_least=floor)
    assert size == (2400, 3608) and reduced.shape == (300, 451, 3)  # decoded at 1/8
    a, b = resize(full, (224, 224)).astype(int), resize(reduced, (224, 224)).astype(int)
    assert np.abs(a - b).mean() < 1.0 and np.percentile(np.abs(a - b), 99) <= 4
    one_area = cv2.resize(full, (224, 224), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(a - b).mean() <= np.abs(a - one_area).mean() + 0.5  # no worse than the resize's own error


@pytest.mark.parametrize("width, height, factor", [(1024, 768, 2), (640, 480, 2), (1600, 1200, 4)])
def test_reduced_decode_down_to_the_model_input_keeps_the_input(tmp_path, width, height, factor):
    """The floor is the model input itself: a 640 x 480 photo decodes at 320 x 240 (1.07x the
    input) and still gives the model input of the full decode within the resize's tolerance."""
    rng = np.random.default_rng(width)
    image = cv2.resize(cv2.imread("sample_images/coffee.jpg"), (width, height), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), (image + rng.integers(-10, 11, image.shape)).clip(0, 255).astype(np.uint8),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    full = decode(str(path))
    reduced, size = decode_sized(str(path), at_least=floor_for(overlays=False))
    assert size == (height, width) and reduced.shape == (-(-height // factor), -(-width // factor), 3)
    a, b = resize(full, (224, 224)).astype(int), resize(reduced, (224, 224)).astype(int)
    one_area = cv2.resize(full, (224, 224), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(a - b).mean() < 0.5 and np.percentile(np.abs(a - b), 99) <= 3
    assert np.abs(a - b).mean() < np.abs(a - one_area).mean()


@pytest.mark.parametrize("rgb_flag", [True, False], ids=["libjpeg-rgb", "opencv-before-4.11"])
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_plain_jpeg_decode_is_libjpegs_pixels_in_rgb_order(big_jpeg, scale, rgb_flag, monkeypatch):
    """The fast path (libjpeg writing RGB itself where OpenCV can; a BGR decode and one conversion
    where it cannot) gives OpenCV's BGR decode with the channels reversed, at every DCT scale, and
    Pillow's full decode exactly."""
    from PIL import Image

    from gradcam_cli.io import images
    from gradcam_cli.io.images import _decode_plain_jpeg

    if not rgb_flag:
        monkeypatch.setattr(images, "_RGB", None)
    with open(big_jpeg, "rb") as fh:
        rgb = _decode_plain_jpeg(fh, 3608, 2400, scale)
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}[scale]
    bgr = cv2.imread(str(big_jpeg), flags)
    assert rgb.flags.c_contiguous and rgb.shape == bgr.shape == (-(-2400 // scale), -(-3608 // scale), 3)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    if scale == 1:
        np.testing.assert_array_equal(rgb, np.asarray(Image.open(big_jpeg).convert("RGB")))


@pytest.mark.parametrize("max_side", [1024, 512])
def test_capped_overlay_base_is_the_full_image_area_averaged(big_jpeg, max_side):
    """--overlay-max-side: the picture under the overlays (from the reduced decode, shrunk by the
    fast resize) is the full decode area-averaged to that size within the resize's tolerance."""
    from gradcam_cli.run.outputs import ImageResult, OverlayOutput

    full = decode(str(big_jpeg))
    reduced, size = decode_sized(str(big_jpeg), at_least=floor_for(overlay_max_side=max_side))
    base = OverlayOutput(0.4, "jet", 90, max_side=max_side).base(ImageResult(reduced, None, [], [], {}, size=size))
    height = round(2400 * max_side / 3608)
    assert base.shape == (height, max_side, 3) and reduced.shape[1] >= max_side
    exact = cv2.resize(full, (max_side, height), interpolation=cv2.INTER_AREA).astype(int)
    diff = np.abs(base.astype(int) - exact)
    assert diff.mean() < 0.8 and np.percentile(diff, 99) <= 3  # a nearest-neighbour shrink: 3.2-3.9, 13-21


def test_capped_overlay_base_of_a_thin_strip_keeps_every_row():
    """A 3 x 5000 strip capped at 1024 long: its one row of base averages all three rows (the
    resize halving its 3 rows would drop the last)."""
    from gradcam_cli.run.outputs import ImageResult, OverlayOutput

    strip = np.zeros((3, 5000, 3), np.uint8)
    strip[2] = 255
    base = OverlayOutput(0.4, "jet", 90, max_side=1024).base(ImageResult(strip, None, [], [], {}))
    assert base.shape == (1, 1024, 3) and np.abs(base.astype(int) - 85).max() <= 1


def test_explain_keeps_large_blocks(tmp_path, monkeypatch, lite0_cam):
    from gradcam_cli.run import memory

    calls = []
    monkeypatch.setattr(memory, "keep_large_blocks", lambda: calls.append(True) or True)
    result = invoke("explain", "sample_images/coffee.jpg", "--out", tmp_path / "o", "--no-overlays", "-q")
    assert result.exit_code == 0, result.output
    assert calls == [True]


def test_decode_floor_follows_the_outputs():
    assert floor_for() is None  # overlays at the original size: full decode
    floor = floor_for(overlay_max_side=1024)
    assert floor(3000, 4000) == (768, 1024)
    assert floor_for(overlays=False, grid=True) is None
    assert floor_for(overlays=False)(3000, 4000) == (224, 224)


def test_io_threads_follow_the_cpus_this_process_may_use():
    assert io_threads(5) == 5
    assert io_threads() == max(2, len(os.sched_getaffinity(0)))


def test_no_overlays_and_overlay_max_side_from_the_cli(tmp_path, big_jpeg, lite0_cam):
    out = tmp_path / "none"
    result = invoke("explain", big_jpeg, "sample_images/coffee.jpg", "--out", out, "--no-overlays", "--save-raw",
                    "--top", 2, "-q")
    assert result.exit_code == 0, result.output
    assert not list(out.rglob("*.jpg"))
    doc = json.loads((out / "predictions.json").read_text())
    big, coffee = doc["images"]
    assert (big["width"], big["height"], big["decoded_size"]) == (3608, 2400, [451, 300])
    assert "decoded_size" not in coffee  # 600 x 400 halved is under the model input: decoded whole
    assert all("overlay" not in p and (out / p["raw"]).is_file() for r in doc["images"] for p in r["predictions"])
    again = invoke("explain", big_jpeg, "sample_images/coffee.jpg", "--out", out, "--no-overlays", "--save-raw",
                   "--top", 2, "--resume")
    assert again.exit_code == 0 and "(2 kept from the previous run)" in again.stderr

    capped = tmp_path / "capped"
    result = invoke("explain", big_jpeg, "--out", capped, "--overlay-max-side", 512, "--boxes", "--top", 1, "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((capped / "predictions.json").read_text())["images"][0]
    assert record["overlay_size"] == [512, 341] and record["decoded_size"] == [902, 600]  # 451 < 512: 1/4
    overlay = cv2.imread(str(capped / record["predictions"][0]["overlay"]))
    assert overlay.shape == (341, 512, 3)
    x0, y0, x1, y1 = record["predictions"][0]["box"]  # in the file's full pixels
    assert 0 <= x0 < x1 <= 3608 and 0 <= y0 < y1 <= 2400
    # the model saw the same input: the same classes and nearly the same probability as a full decode
    full = lite0_cam.explain([decode(str(big_jpeg))], top=1)[0].predictions[0]
    assert record["predictions"][0]["class_index"] == full.class_index
    assert abs(record["predictions"][0]["probability"] - full.probability) < 0.02


def test_overlay_size_does_not_change_what_the_model_sees(tmp_path, tiny, monkeypatch):
    """Issue 22.6: the model input comes from the decode reduced to the model input whatever the
    pictures need: full-size overlays, --overlay-max-side 600 and --no-overlays feed the model
    byte-identical batches (same images, same batches) and so give equal probabilities, on JPEGs
    large enough to be decoded reduced (3000 x 2000, noisy)."""
    from gradcam_cli.cam import GradCAM

    model, _ = tiny
    folder = tmp_path / "big"
    folder.mkdir()
    rng = np.random.default_rng(6)
    base = cv2.resize(cv2.imread("sample_images/coffee.jpg"), (3000, 2000), interpolation=cv2.INTER_LINEAR)
    for i in range(3):
        noisy = (base.astype(np.int16) + rng.integers(-40, 41, base.shape)).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"p{i}.jpg"), np.roll(noisy, 500 * i, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 90])
    seen: list = []
    explain_prepared = GradCAM.explain_prepared

    def recording(self, batch, **kwargs):
        seen[-1].append(np.array(batch, copy=True))
        return explain_prepared(self, batch, **kwargs)

    monkeypatch.setattr(GradCAM, "explain_prepared", recording)
    runs = {}
    for name, extra in [("full", []), ("capped", ["--overlay-max-side", 600]), ("none", ["--no-overlays"])]:
        seen.append([])
        out = tmp_path / name
        result = invoke("explain", folder, *model, "--out", out, "--batch-size", 3, *extra)
        assert result.exit_code == 0, result.stderr
        runs[name] = json.loads((out / "predictions.json").read_text())["images"]
    assert "overlay_size" in runs["capped"][0] and "overlay" not in runs["none"][0]["predictions"][0]
    first = seen[0]
    assert len(first) == 1 and first[0].shape == (3, 48, 48, 3)
    for batches in seen[1:]:
        assert len(batches) == len(first) and all(a.tobytes() == b.tobytes() for a, b in zip(first, batches))
    for name in ("capped", "none"):
        for a, b in zip(runs["full"], runs[name]):
            assert a["path"] == b["path"] and a["width"] == b["width"] == 3000
            assert [(p["class_index"], p["probability"]) for p in a["predictions"]] == \
                   [(p["class_index"], p["probability"]) for p in b["predictions"]]
