"""`gradcam explain` on video files: a per-frame CNN trained here follows a moving object, the overlay
videos read back with the expected frame count, size and rate, bad videos are error records and the
run goes on, a SIGKILL mid-video then --resume equals the uninterrupted run, shards split by video."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest
from builders import PALETTE, trained_box_cnn
from helpers import cli, invoke, make_images

HEIGHT, WIDTH, SIDE = 72, 108, 22  # frames (even sides: the mp4v encoder's), the object's side
FPS = 10.0


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("models") / "box.keras"
    trained_box_cnn().save(path)
    return path


def moving_clip(n: int, seed: int, colour: int = 0):
    """``n`` frames (RGB uint8) of grey noise with a square of ``colour`` moving left to right and
    down; returns (frames, boxes [x0, y0, x1, y1])."""
    rng = np.random.default_rng(seed)
    frames, boxes = [], []
    for i in range(n):
        frame = rng.normal(0.45, 0.08, (HEIGHT, WIDTH, 3)).clip(0, 1)
        x0 = round(i * (WIDTH - SIDE) / max(1, n - 1))
        y0 = round(4 + (i % 10) * (HEIGHT - SIDE - 8) / 9)
        frame[y0:y0 + SIDE, x0:x0 + SIDE] = (PALETTE[colour] + rng.normal(0, 0.03, (SIDE, SIDE, 3))).clip(0, 1)
        frames.append((frame * 255).round().astype(np.uint8))
        boxes.append((x0, y0, x0 + SIDE, y0 + SIDE))
    return frames, boxes


def write_video(path: pathlib.Path, frames, fourcc: str = "MJPG", fps: float = FPS) -> pathlib.Path:
    """MJPG in .avi (this OpenCV writes and reads it; near-lossless at its default quality)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def read_video(path: pathlib.Path):
    """(frames BGR, fps, (width, height)) read back with OpenCV."""
    cap = cv2.VideoCapture(str(path))
    fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps, size


def videos(out: pathlib.Path, name: str = "videos.json") -> list[dict]:
    return json.loads((out / name).read_text())["images"]


def frame_records(out: pathlib.Path, record: dict) -> list[dict]:
    return [json.loads(line) for line in (out / record["frames_file"]).read_text().splitlines()]


def test_maps_follow_the_moving_object_and_the_overlay_video_reads_back(tmp_path, model):
    """>= 85% of 30 frames (30/30 measured): the top-1 map's peak (the frame record's ``peak``, in frame
    pixels) lies on the square, with the square's colour as top-1; the overlay video holds one frame
    per input frame at the input's size and rate; the record's timeline covers every frame."""
    frames, boxes = moving_clip(30, seed=5)
    write_video(tmp_path / "in" / "clip.avi", frames)
    out = tmp_path / "out"
    result = invoke("explain", tmp_path / "in", "--model", model, "--out", out, "-n", "1", "--batch-size", "8", "-q")
    assert result.exit_code == 0, result.output
    [record] = videos(out)
    assert record["status"] == "ok" and record["frames"] == 30 and (record["width"], record["height"]) == (WIDTH,
                                                                                                          HEIGHT)
    per_frame = frame_records(out, record)
    assert [f["frame"] for f in per_frame] == list(range(30))
    assert [f["time"] for f in per_frame] == pytest.approx([i / FPS for i in range(30)], abs=1e-6)
    on = 0
    for f, (x0, y0, x1, y1) in zip(per_frame, boxes):
        top = f["predictions"][0]
        x, y = top["peak"]
        on += top["class_index"] == 0 and x0 <= x < x1 and y0 <= y < y1
    assert on >= 0.85 * len(per_frame), on
    [overlay] = record["overlays"]
    assert overlay["video"] == "clip.top1-class_0.mp4" and overlay["class_index"] == 0
    written, fps, size = read_video(out / overlay["video"])
    assert len(written) == 30 and size == (WIDTH, HEIGHT) and fps == pytest.approx(FPS)
    assert written[0].shape == (HEIGHT, WIDTH, 3)
    timeline = record["summary"]["timeline"]
    assert sum(run["frames"] for run in timeline) == 30 and timeline[0]["start"] == 0.0
    strip = cv2.imread(str(out / overlay["strip"]))
    assert strip.shape[0] == 96 and strip.shape[1] == 8 * round(WIDTH * 96 / HEIGHT)


def test_stride_range_and_max_frames_pick_the_frames_and_divide_the_rate(tmp_path, model):
    """--frame-stride 3 --start 0.5: frames 5, 8, ..., 29 (9 frames) at 10/3 frames/s; --max-frames 4 and
    --end 1.2: frames 0..3, then frames 0..12 (time <= 1.2 s)."""
    frames, _ = moving_clip(30, seed=6)
    clip = write_video(tmp_path / "clip.avi", frames)
    out = tmp_path / "out"
    assert invoke("explain", clip, "--model", model, "--out", out, "-n", "1", "--frame-stride", "3", "--start", "0.5",
                  "-q").exit_code == 0
    [record] = videos(out)
    assert [f["frame"] for f in frame_records(out, record)] == list(range(5, 30, 3))
    written, fps, size = read_video(out / record["overlays"][0]["video"])
    assert len(written) == 9 and fps == pytest.approx(FPS / 3, rel=1e-3) and size == (WIDTH, HEIGHT)
    for extra, expected in ((("--max-frames", "4"), range(4)), (("--end", "1.2"), range(13))):
        assert invoke("explain", clip, "--model", model, "--out", out, "-n", "1", *extra, "-q").exit_code == 0
        [record] = videos(out)
        assert [f["frame"] for f in frame_records(out, record)] == list(expected)


def test_temporal_smoothing_is_the_stated_moving_average(tmp_path, model):
    """--temporal-smooth 0.3: each frame's map is 0.3 * its own + 0.7 * the previous smoothed one (the
    top-1 class is the same in every frame here), checked on the frame records' peaks and the
    overlay video against the formula applied to the unsmoothed run's maps (engine maps, atol 1e-5)."""
    from gradcam_cli.cam import GradCAM
    from gradcam_cli.settings import MethodOptions  # noqa: F401  (the run's defaults)
    from gradcam_cli.run.video import Smoother

    frames, _ = moving_clip(12, seed=8)
    cam = GradCAM(model=str(model))
    results = cam.explain(frames, top=1)
    smoother, expected = Smoother(0.3), None
    for i, result in enumerate(results):
        got = smoother(result)["gradcam"][0]
        own = result.maps[0]
        expected = own if i == 0 else 0.3 * own + 0.7 * expected
        np.testing.assert_allclose(got, expected, atol=1e-5)
    clip = write_video(tmp_path / "clip.avi", frames)
    plain, smooth = tmp_path / "plain", tmp_path / "smooth"
    assert invoke("explain", clip, "--model", model, "--out", plain, "-n", "1", "-q").exit_code == 0
    assert invoke("explain", clip, "--model", model, "--out", smooth, "-n", "1", "--temporal-smooth", "0.3",
                  "-q").exit_code == 0
    a, b = (frame_records(o, videos(o)[0]) for o in (plain, smooth))
    assert a[0]["predictions"][0]["peak"] == b[0]["predictions"][0]["peak"]  # the first frame is its own map
    assert [f["predictions"][0]["peak"] for f in a] != [f["predictions"][0]["peak"] for f in b]


def corrupt_inputs(folder: pathlib.Path) -> dict[str, str]:
    """A good clip; one cut in half (its header states 20 frames, 10 are there); bytes that are no video;
    a video whose writer got no frame; one whose every JPEG frame is overwritten with zeros (the
    container opens, no frame decodes). Name -> the record's status or error kind."""
    frames, _ = moving_clip(20, seed=9)
    write_video(folder / "good.avi", frames)
    whole = write_video(folder / "cut.avi", frames).read_bytes()
    (folder / "cut.avi").write_bytes(whole[: len(whole) // 2])
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    write_video(folder / "empty.avi", [])
    data, start = bytearray(whole), 0
    while (start := data.find(b"\xff\xd8\xff", start)) >= 0:  # each frame's JPEG start of image
        data[start:start + 2000] = bytes(len(data[start:start + 2000]))
    (folder / "zeroed.avi").write_bytes(bytes(data))
    return {"good.avi": "ok", "cut.avi": "truncated", "noise.mp4": "unreadable", "empty.avi": "empty",
            "zeroed.avi": "empty"}


def test_corrupt_truncated_and_frameless_videos_are_error_records_and_the_run_goes_on(tmp_path, model):
    """Each bad video: one error record (kind, a one-line message), no file of it left, exit 1; the good
    video and the image beside them are explained."""
    expected = corrupt_inputs(tmp_path / "in")
    make_images(tmp_path / "in", 1, size=48)
    out = tmp_path / "out"
    result = invoke("explain", tmp_path / "in", "--model", model, "--out", out, "-n", "1", "-q")
    assert result.exit_code == 1, result.output
    got = {pathlib.Path(r["path"]).name: r for r in videos(out)}
    assert set(got) == set(expected)
    for name, kind in expected.items():
        record = got[name]
        if kind == "ok":
            assert record["status"] == "ok" and record["frames"] == 20
        else:
            assert record["status"] == "error" and "\n" not in record["message"], record
            assert record["kind"] == kind, record
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("cut", "noise", "empty", "zeroed"))) == []
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    images = json.loads((out / "predictions.json").read_text())["images"]
    assert [r["status"] for r in images] == ["ok"]


def test_sigkill_mid_video_then_resume_equals_the_uninterrupted_run(tmp_path, model):
    """Killed while the second of three videos is being written (its temp overlay exists), --resume
    keeps the first, redoes the second, does the third: records, frame logs and overlay frames equal
    the uninterrupted run's (the same files decoded; 0 grey levels apart)."""
    for i in range(3):
        write_video(tmp_path / "in" / f"v{i}.avi", moving_clip(60, seed=20 + i)[0])
    common = ["--model", model, "-n", "2", "--batch-size", "2"]
    whole = tmp_path / "whole"
    assert invoke("explain", tmp_path / "in", "--out", whole, *common, "-q").exit_code == 0
    out = tmp_path / "out"
    proc = cli(tmp_path / "in", "--out", out, *common, "-q", stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    log = out / "videos.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") == 1 and list(out.glob(".v1.*.tmp-*")):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert log.read_text().count("\n") == 1 and list(out.glob(".v1.*.tmp-*")), "not killed mid-video"
    result = invoke("explain", tmp_path / "in", "--out", out, *common, "--resume")
    assert result.exit_code == 0, result.output
    assert "1 kept from the previous run" in result.output
    a, b = videos(whole), videos(out)
    assert a == b
    for record in a:
        assert (whole / record["frames_file"]).read_bytes() == (out / record["frames_file"]).read_bytes()
        for overlay in record["overlays"]:
            x, y = read_video(whole / overlay["video"])[0], read_video(out / overlay["video"])[0]
            assert len(x) == len(y) == 60 and all(np.array_equal(p, q) for p, q in zip(x, y))
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_shards_split_by_video_and_bad_flags_are_usage_errors(tmp_path, model):
    """--shard 1/2 and 2/2 explain disjoint sets of whole videos that together are all of them; a
    --method guided run over videos is refused in one line, exit 2, before loading."""
    for i in range(4):
        write_video(tmp_path / "in" / f"v{i}.avi", moving_clip(6, seed=30 + i)[0])
    out = tmp_path / "out"
    names = []
    for k in (1, 2):
        assert invoke("explain", tmp_path / "in", "--model", model, "--out", out, "-n", "1", "--shard", f"{k}/2",
                      "-q").exit_code == 0
        names.append({pathlib.Path(r["path"]).name for r in videos(out, f"videos.{k}-of-2.json")})
    assert names[0].isdisjoint(names[1]) and names[0] | names[1] == {f"v{i}.avi" for i in range(4)}
    result = invoke("explain", tmp_path / "in", "--model", tmp_path / "nothing.keras", "--out", tmp_path / "o2",
                    "--method", "guided")
    assert result.exit_code == 2 and "--method guided applies to images" in result.output


def test_the_report_shows_a_strip_per_video_and_escapes_every_string(tmp_path, model):
    """--report on videos alone: report.html holds a Videos section with each video's strip (a relative,
    percent-encoded URL), its overlay video and its timeline; a file name and a class label holding
    markup appear only escaped; a bad video shows its error line."""
    folder = tmp_path / "in"
    write_video(folder / 'a<b>&"c.avi', moving_clip(8, seed=40)[0])
    (folder / "noise.mp4").write_bytes(b"not a video at all" * 100)
    labels = tmp_path / "labels.txt"
    labels.write_text('<script>alert("x")</script>\ngreen\nblue\n')
    out = tmp_path / "out"
    result = invoke("explain", folder, "--model", model, "--labels", labels, "--out", out, "-n", "1", "--report", "-q")
    assert result.exit_code == 1, result.output
    html = (out / "report.html").read_text()
    assert '<section class="videos" id="videos">' in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; (8)" in html  # timeline
    assert "a<b>" not in html and "a&lt;b&gt;&amp;&#34;c.avi" in html
    [record] = [r for r in videos(out) if r["status"] == "ok"]
    strip = record["overlays"][0]["strip"]
    assert (out / strip).is_file() and f'src="{strip.replace("<", "%3C").replace(">", "%3E").replace("&", "%26").replace(chr(34), "%22")}"' in html
    assert "unreadable: OpenCV (FFmpeg) cannot open it as a video" in html

