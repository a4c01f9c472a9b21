"""Grids, GIFs, boxes and the report from `gradcam explain` / `gradcam report`: files, records, resume."""

from __future__ import annotations

import json

import numpy as np
from builders import OBJ, box_inputs, box_scenes, scenes, trained, trained_box_cnn
from helpers import invoke
from PIL import Image

from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.models.split import split_model
from gradcam_cli.render.boxes import map_box


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_box_of_the_true_class_holds_the_centre_of_a_small_object():
    """On the shared 48 px scenes (12 px squares, a 12 x 12 map of receptive field ~18 px) the
    paper's 15% box holds the object's centre, but it is about twice the object (mean IoU 0.24):
    the IoU criterion is tested on objects large against the map below."""
    model = trained("softmax")
    x, y, boxes = scenes("softmax", 200, seed=5)
    out = Explainer(split_model(model, "target"), classes=[0, 1, 2])(x)
    holds = 0
    for i in range(len(x)):
        cam = out.maps[i, int(y[i])]
        y0, x0 = boxes[i][int(y[i])]
        cy, cx = y0 + OBJ // 2, x0 + OBJ // 2
        box = map_box(cam, x.shape[1:3])
        holds += box is not None and box[0] <= cx < box[2] and box[1] <= cy < box[3]
    assert holds / len(x) >= 0.9, f"the 15% box holds the object's centre for {holds} of {len(x)}"


def test_box_of_each_true_class_overlaps_its_object_on_a_trained_cnn():
    """Issue 12: the box of each true class's Grad-CAM map has IoU >= 0.5 with its object for >= 80%
    of the objects, the paper's protocol exactly (map_box: bilinear to the scene, 15% of the maximum,
    largest 8-connected segment, its bounding box, in scene pixels).

    Held-out scenes (seed 5; the CNN trained on seed 1): 200 of 108 x 72 px holding one to three
    rectangles of 14-28 px a side, 326 objects, resized to the CNN's 96 x 96 input; target map
    24 x 24 (receptive field 12 px, stride 4). Observed: IoU mean 0.62, median 0.63, min 0.43,
    10th percentile 0.52; >= 0.5 for 0.93 of the objects (303 of 326). IoU >= 0.5 with one object
    also rules out a box spanning two of them. The same bar rejects boxes a little off: each box
    shifted right and down by half its size (mean IoU 0.11, none pass), grown to twice its area
    about its centre (0.31, none pass), or the box of a uniform random 24 x 24 map (0.06, none pass).
    """
    model = trained_box_cnn()
    x, y, boxes = box_scenes(200, seed=5)
    inputs = box_inputs(x)
    exact = ((model.predict(inputs, verbose=0) > 0.5) == (y > 0.5)).all(axis=1).mean()
    assert exact >= 0.95, f"the CNN is not trained: every label right for {exact:.2f} of held-out scenes"
    out = Explainer(split_model(model, "target"), classes=[0, 1, 2])(inputs)
    assert out.maps.shape[1:] == (3, 24, 24)
    height, width = x.shape[1:3]
    found, truth = [], []
    for i in range(len(x)):
        for c, obj in boxes[i].items():
            found.append(map_box(out.maps[i, c], (height, width)))
            truth.append(obj)
    assert len(truth) >= 300

    def ious(candidates):
        return np.array([0.0 if b is None else iou(b, t) for b, t in zip(candidates, truth)])

    scores = ious(found)
    assert np.mean(scores >= 0.5) >= 0.8, (
        f"IoU >= 0.5 for {np.mean(scores >= 0.5):.2f} of {len(truth)} objects (mean {scores.mean():.2f}, "
        f"median {np.median(scores):.2f})")

    def shifted(b):
        dx, dy = (b[2] - b[0]) // 2, (b[3] - b[1]) // 2
        return [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]

    def grown(b):
        dx, dy = (b[2] - b[0]) * (2**0.5 - 1) / 2, (b[3] - b[1]) * (2**0.5 - 1) / 2
        return [b[0] - dx, b[1] - dy, b[2] + dx, b[3] + dy]

    rng = np.random.default_rng(0)
    controls = {
        "shifted by half": [b and shifted(b) for b in found],
        "twice the area": [b and grown(b) for b in found],
        "random map": [map_box(rng.random((24, 24), np.float32), (height, width)) for _ in truth],
    }
    for name, candidates in controls.items():
        passed = np.mean(ious(candidates) >= 0.5)
        assert passed < 0.8, f"the bar does not reject boxes {name}: {passed:.2f} pass"


def test_grid_gif_boxes_and_report_from_the_cli(tmp_path, lite0_cam):
    out = tmp_path / "o"
    result = invoke("explain", "sample_images/chelsea.jpg", "sample_images/coffee.jpg", "--out", out, "-q", "--top", 2,
                    "--grid", "--grid-columns", 2, "--grid-tile", 200, "--gif", "--gif-ms", 300, "--boxes", "--report")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["options"]["grid"] and doc["options"]["gif_ms"] == 300 and doc["options"]["box_threshold"] == 0.15
    for record in doc["images"]:
        stem = record["path"].rsplit("/", 1)[1].rsplit(".", 1)[0]
        assert record["grid"] == f"{stem}.grid.jpg" and record["gif"] == f"{stem}.gif"
        grid = Image.open(out / record["grid"])
        assert grid.width == 2 * 200 + 3 * 8 or grid.width > 400  # two columns of 200 px tiles (plus gaps)
        gif = Image.open(out / record["gif"])
        assert gif.n_frames == 3 and gif.info["loop"] == 0 and gif.info["duration"] == 300
        for entry in record["predictions"]:
            x0, y0, x1, y1 = entry["box"]
            assert 0 <= x0 < x1 <= record["width"] and 0 <= y0 < y1 <= record["height"]
            raw = lite0_cam.explain([np.asarray(Image.open(record["path"]).convert("RGB"))],
                                    classes=[entry["class_index"]])[0].maps[0]
            assert entry["box"] == map_box(raw, (record["height"], record["width"]))
    html = (out / "report.html").read_text()
    assert "chelsea.top1-Egyptian_cat.jpg" in html and "<script" in html

    # a missing grid makes its image incomplete: --resume redoes that one image only
    (out / "coffee.grid.jpg").unlink()
    again = invoke("explain", "sample_images/chelsea.jpg", "sample_images/coffee.jpg", "--out", out, "--top", 2,
                   "--grid", "--grid-columns", 2, "--grid-tile", 200, "--gif", "--gif-ms", 300, "--boxes", "--resume")
    assert again.exit_code == 0 and "2 explained (1 kept from the previous run)" in again.stderr
    assert (out / "coffee.grid.jpg").is_file()

    report = invoke("report", out)
    assert report.exit_code == 0 and report.stdout.strip() == str(out / "report.html")


def test_picture_options_are_checked():
    for args, message in [(("--gif-ms", -5), "--gif-ms"), (("--grid-columns", 0), "--grid-columns"),
                          (("--box-threshold", 1.5), "must be between 0 and 1")]:
        result = invoke("explain", "sample_images/", *args)
        assert result.exit_code == 2 and message in result.stderr
    missing = invoke("report", "/nonexistent/run")
    assert missing.exit_code == 2 and "predictions.json" in missing.stderr


def test_grid_gif_boxes_and_report_show_every_method(tmp_path, lite0_cam):
    """Two methods, top 3: the grid holds the original alone in its first row, then one row per
    method with its three maps in rank order (titled with the method), the GIF seven frames, each
    map its own box, the report an image per overlay."""
    from gradcam_cli.render.grid import (
        BACKGROUND_RGB,
        GAP,
        fit_image,
        fit_size,
        tile_title,
    )
    from gradcam_cli.render.text import font_size_for, strip_height, text_strip

    methods, tile = ("gradcam", "layercam"), 160
    out = tmp_path / "o"
    result = invoke("explain", "sample_images/chelsea.jpg", "--out", out, "-q", "--top", 3, "--grid", "--grid-columns",
                    3, "--grid-tile", tile, "--gif", "--boxes", "--report", *[x for m in methods for x in ("--method", m)])
    assert result.exit_code == 0, result.output
    [record] = json.loads((out / "predictions.json").read_text())["images"]
    image = np.asarray(Image.open(record["path"]).convert("RGB"))
    [expected] = lite0_cam.explain([image], top=3, method=list(methods))
    height, width = image.shape[:2]
    for rank, entry in enumerate(record["predictions"]):
        assert "box" not in entry and set(entry["boxes"]) == set(methods)
        for m in methods:
            assert entry["boxes"][m] == map_box(expected.maps_by_method[m][rank], (height, width))

    # the cells, computed here: `tile` px wide, a title strip over the fitted picture, GAP between
    grid = np.asarray(Image.open(out / record["grid"]).convert("RGB")).astype(int)
    title_h, (fit_h, fit_w) = strip_height(font_size_for(tile)), fit_size(height, width, tile)
    cell_h = title_h + fit_h
    assert grid.shape[:2] == (GAP + 3 * (cell_h + GAP), GAP + 3 * (tile + GAP))

    def cell(row, column):
        x, y = GAP + column * (tile + GAP), GAP + row * (cell_h + GAP)
        return grid[y:y + title_h, x:x + tile], grid[y + title_h:y + cell_h, x + (tile - fit_w) // 2:][:, :fit_w]

    def near(cut, picture):
        return np.abs(cut - fit_image(picture, tile).astype(int)).mean()

    def reads(strip, title):  # a JPEG'd title strip against the strip drawn afresh (the last rows
        # take up to 30 levels of a green box line on the picture below, by chroma subsampling)
        return np.abs(strip - text_strip(title, tile).astype(int))[:-3].mean() < 4

    title, picture = cell(0, 0)
    assert reads(title, "original") and near(picture, image) < 6
    for column in (1, 2):  # the original's row holds nothing else
        assert all(np.abs(part - BACKGROUND_RGB).mean() < 2 for part in cell(0, column))
    tiles = {(m, k): entry for m in methods for k, entry in enumerate(record["predictions"])}
    overlays = {key: np.asarray(Image.open(out / e["overlays"][key[0]]).convert("RGB")) for key, e in tiles.items()}
    for (m, k), entry in tiles.items():
        title, cut = cell(1 + methods.index(m), k)
        assert reads(title, tile_title(entry, m)), (m, k)
        error = near(cut, overlays[m, k])
        assert error < 6, f"the tile of {entry['overlays'][m]} differs from its overlay by {error:.1f} levels"
        # two JPEG passes apart (~5 levels), and nearer its own overlay than any other map's (7-14 levels)
        assert all(near(cut, o) > error + 1 for key, o in overlays.items() if key != (m, k))

    gif = Image.open(out / record["gif"])
    assert gif.n_frames == 1 + len(tiles)
    html = (out / "report.html").read_text()
    for entry in tiles.values():
        assert all(name in html for name in entry["overlays"].values())


def test_capped_overlays_make_the_grid_and_gif_at_the_cap(tmp_path, tiny):
    """Issue 22.1: with --overlay-max-side, the GIF's first frame and the grid's original tile are the
    same capped base as the overlays (a GIF of one size, no traceback), and the grid's tiles are not
    upscaled past the cap (the tile is at most the cap)."""
    from gradcam_cli.render.gif import caption_height
    from gradcam_cli.render.grid import grid_layout

    model, _ = tiny
    images = tmp_path / "big"
    images.mkdir()
    yy, xx = np.mgrid[0:150, 0:200]
    smooth = np.stack([xx * 255 // 199, yy * 255 // 149, (xx + yy) * 255 // 348], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(images / "a.png")
    out = tmp_path / "o"
    result = invoke("explain", images, "--out", out, *model, "--top", 2, "--overlay-max-side", 100, "--gif",
                    "--grid", "--grid-tile", 160, "--grid-columns", 3)
    assert result.exit_code == 0, result.output
    [record] = json.loads((out / "predictions.json").read_text())["images"]
    assert record["overlay_size"] == [100, 75]
    overlays = [np.asarray(Image.open(out / e["overlay"]).convert("RGB")) for e in record["predictions"]]
    assert all(o.shape == (75, 100, 3) for o in overlays)
    gif = Image.open(out / record["gif"])
    assert gif.n_frames == 3 and gif.size == (100, 75 + caption_height(100))
    grid = Image.open(out / record["grid"])
    layout = grid_layout([(75, 100)] * 3, columns=3, tile=100)
    assert (grid.height, grid.width) == (layout.height, layout.width)
    x0, y0, x1, y1 = layout.pictures[0]
    original = np.asarray(grid.convert("RGB"))[y0:y1, x0:x1].astype(int)
    base = np.asarray(Image.open(images / "a.png").convert("RGB").resize((100, 75), Image.BOX)).astype(int)
    assert original.shape == base.shape and np.abs(original - base).mean() < 3


def test_caption_and_colorbar_under_the_overlays_and_plain_overlays_unchanged(tmp_path):
    """`--caption --colorbar`: each overlay JPEG grows by two strips (the colour bar, then the
    caption) and its picture rows stay the blend; without them an overlay is byte for byte the
    blend of its saved map (what it was before the options existed). The run records both
    settings, and --resume without them is refused."""
    from gradcam_cli.render.legend import colorbar_rect, colorbar_strip, overlay_caption
    from gradcam_cli.render.overlay import colormap_id, encode_jpeg, overlays
    from gradcam_cli.render.text import font_size_for, strip_height, text_strip

    image = np.asarray(Image.open("sample_images/chelsea.jpg").convert("RGB"))
    height, width = image.shape[:2]
    plain, decorated = tmp_path / "plain", tmp_path / "decorated"
    for out, extra in ((plain, ()), (decorated, ("--caption", "--colorbar", "--colormap", "turbo"))):
        result = invoke("explain", "sample_images/chelsea.jpg", "--out", out, "--top", 2, "--save-raw", "-q", *extra)
        assert result.exit_code == 0, result.output
    doc = json.loads((plain / "predictions.json").read_text())
    assert (doc["options"]["caption"], doc["options"]["colorbar"]) == (False, False)
    for entry in doc["images"][0]["predictions"]:  # Lite0's maps are stretched (upsample_linear)
        blend = overlays(image, np.load(plain / entry["raw"])[None], colormap=colormap_id("jet"))[0]
        assert (plain / entry["overlay"]).read_bytes() == encode_jpeg(blend, 90)

    doc = json.loads((decorated / "predictions.json").read_text())
    assert (doc["options"]["caption"], doc["options"]["colorbar"]) == (True, True)
    strip = strip_height(font_size_for(width))
    x0, y0, x1, y1 = colorbar_rect(width)
    for entry in doc["images"][0]["predictions"]:
        written = np.asarray(Image.open(decorated / entry["overlay"]).convert("RGB")).astype(int)
        assert written.shape == (height + 2 * strip, width, 3)
        blend = overlays(image, np.load(decorated / entry["raw"])[None], colormap=colormap_id("turbo"))[0][..., ::-1]
        # JPEG at quality 90 (~2 levels on average; the strips' dark band bleeds into the last rows)
        assert np.abs(written[:height - 8] - blend[:height - 8]).mean() < 3
        # the colour bar: JPEG's 2x2 chroma subsampling bleeds the dark band into the ramp's outer 2 px
        # (up to 19 levels there, measured), so its colours are compared 2 px in: 1.2-1.5 levels on
        # average inside, <= 2.3 on the columns next to the ends (jet and turbo, measured)
        bar, turbo = written[height:height + strip], colorbar_strip(width, colormap_id("turbo"))
        assert np.abs(bar[y0 + 2:y1 - 2, x0 + 2:x1 - 2] - turbo[y0 + 2:y1 - 2, x0 + 2:x1 - 2]).mean() < 3
        for x in (x0 + 2, x1 - 3):  # turbo's 0 and 1
            assert np.abs(bar[y0 + 2:y1 - 2, x] - turbo[y0 + 2:y1 - 2, x]).mean() < 5, x
        caption = written[height + strip:]
        assert np.abs(caption - text_strip(overlay_caption(entry, "gradcam"), width)).mean() < 4
        assert overlay_caption(entry, "gradcam").endswith(f"· gradcam · top-{entry['rank']}")
        other = text_strip(overlay_caption({**entry, "label": "something_else"}, "gradcam"), width)
        assert np.abs(caption - other).mean() > 6  # the strip reads its own caption, not any caption

    again = invoke("explain", "sample_images/chelsea.jpg", "--out", decorated, "--top", 2, "--save-raw",
                   "--colormap", "turbo", "--resume")
    assert again.exit_code == 2 and "caption True -> False" in again.stderr and "colorbar True -> False" in again.stderr
