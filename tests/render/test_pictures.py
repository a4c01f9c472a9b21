"""Grids, GIFs and boxes: pictures checked pixel by pixel against their sources."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from gradcam_cli.io import writers
from gradcam_cli.render import overlay as render
from gradcam_cli.render import boxes, gif, grid
from gradcam_cli.render.text import text_strip

from helpers import SAMPLES


@pytest.fixture(scope="module")
def chelsea():
    """A real photo (451x300, not square), three different maps, their overlays as the pipeline writes them."""
    image = np.asarray(Image.open(SAMPLES / "chelsea.jpg").convert("RGB"))
    cams = np.zeros((4, 7, 7), np.float32)
    for k, (r, c) in enumerate([(1, 1), (3, 5), (5, 2), (6, 6)]):
        cams[k, r, c] = 1.0
        cams[k] = cv2.GaussianBlur(cams[k], (0, 0), 1.0)
        cams[k] /= cams[k].max()
    labels = ["Egyptian_cat", "tabby", "tiger_cat", "lynx"]
    predictions = [
        {"rank": k + 1, "class_index": 285 - k, "label": label, "probability": 0.6 / (k + 1)}
        for k, label in enumerate(labels)
    ]
    overlays = render.overlays(image, cams, colormap=render.colormap_id("jet"))
    return image, cams, predictions, overlays


def test_tile_title_format():
    prediction = {"rank": 1, "class_index": 285, "label": "Egyptian_cat", "probability": 0.8104}
    assert grid.tile_title(prediction) == "1. Egyptian_cat (285) 0.810"
    assert grid.tile_title(prediction, "gradcam++") == "1. Egyptian_cat (285) 0.810 · gradcam++"
    regression = {"rank": 1, "class_index": 0, "label": "age", "value": 31.25}  # a linear head's record
    assert grid.tile_title(regression) == "1. age (0) value 31.2"


def test_grid_tiles_follow_the_records(chelsea, tmp_path):
    image, _, predictions, overlays = chelsea
    # the overlays as the pipeline leaves them on disk: JPEG files, read back
    files = []
    for k, picture in enumerate(overlays):
        writers.write_bytes(tmp_path / f"o{k}.jpg", render.encode_jpeg(picture, 90))
        files.append(cv2.imread(str(tmp_path / f"o{k}.jpg")))
    titles = [grid.tile_title(p) for p in predictions]
    tile = 200
    picture = grid.grid_image(image, files, titles, columns=3, tile=tile)
    writers.write_bytes(tmp_path / "grid.png", cv2.imencode(".png", picture[..., ::-1])[1].tobytes())
    with Image.open(tmp_path / "grid.png") as back:
        size = back.size
    # the original alone, then 4 maps 3 per row: 3 rows; each cell is a title strip over the fitted 200x133 picture
    title_h = text_strip("x", tile).shape[0]
    assert size == (grid.GAP + 3 * (tile + grid.GAP), grid.GAP + 3 * (title_h + 133 + grid.GAP))

    layout = grid.grid_layout([image.shape[:2]] * 5, columns=3, tile=tile)
    assert len(layout.pictures) == 5 and layout.columns == 3
    # a 451x300 image fitted to 200 px on its long side: 200x133, right under its title
    x0, y0, x1, y1 = layout.pictures[0]
    assert (x1 - x0, y1 - y0) == (200, 133) and y0 == layout.titles[0][3]
    sources = [image] + [f[..., ::-1] for f in files]  # RGB
    wanted_titles = ["original"] + titles
    for k, (x0, y0, x1, y1) in enumerate(layout.pictures):
        cut = picture[y0:y1, x0:x1].astype(np.float64)
        # an independent resize (Pillow's box filter) of each candidate source; the tile matches its own best
        errors = [np.abs(np.asarray(Image.fromarray(s).resize((x1 - x0, y1 - y0), Image.Resampling.BOX)) - cut).mean()
                  for s in sources]
        assert errors[k] < 1.5, (k, errors)
        assert int(np.argmin(errors)) == k
        tx0, ty0, tx1, ty1 = layout.titles[k]
        np.testing.assert_array_equal(picture[ty0:ty1, tx0:tx1], text_strip(wanted_titles[k], tile))


def test_grid_letterboxes_other_shapes(chelsea):
    image, _, predictions, overlays = chelsea
    portrait = np.ascontiguousarray(np.transpose(overlays[0], (1, 0, 2)))  # 300 wide, 451 high
    picture = grid.grid_image(image, [portrait], [grid.tile_title(predictions[0])], tile=200)
    layout = grid.grid_layout([image.shape[:2], portrait.shape[:2]], tile=200)
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = layout.pictures
    assert (bx1 - bx0, by1 - by0) == (133, 200) and (ax1 - ax0, ay1 - ay0) == (200, 133)
    # the landscape original sits centred in a 200 px high cell, the portrait map centred in its 200 px width
    assert ay0 - layout.titles[0][3] == (200 - 133) // 2 and bx0 - layout.titles[1][0] == (200 - 133) // 2
    assert (picture[layout.titles[0][3]:ay0, ax0:ax1] == grid.BACKGROUND_RGB).all()
    assert (picture[by0:by1, layout.titles[1][0]:bx0] == grid.BACKGROUND_RGB).all()
    cut = picture[by0:by1, bx0:bx1].astype(np.float64)
    want = np.asarray(Image.fromarray(portrait[..., ::-1]).resize((133, 200), Image.Resampling.BOX), np.float64)
    assert np.abs(cut - want).mean() < 1.5


def test_grid_rgb_overlays_and_misuse(chelsea):
    image, _, predictions, overlays = chelsea
    titles = [grid.tile_title(p) for p in predictions[:2]]
    as_bgr = grid.grid_image(image, overlays[:2], titles, tile=64)
    as_rgb = grid.grid_image(image, [o[..., ::-1] for o in overlays[:2]], titles, tile=64, channels="rgb")
    np.testing.assert_array_equal(as_bgr, as_rgb)
    assert grid.grid_layout([(10, 10)] * 3, columns=3, tile=64).columns == 2  # no empty columns
    with pytest.raises(ValueError, match="groups that count the 2 pictures"):
        grid.grid_image(image, overlays[:2], titles, groups=[1, 2])
    with pytest.raises(ValueError, match="one title per overlay"):
        grid.grid_image(image, overlays[:2], titles[:1])
    with pytest.raises(ValueError, match="uint8 HWC"):
        grid.grid_image(image, [overlays[0].astype(np.float32)], titles[:1])


def test_grid_gives_the_original_its_own_row_and_each_method_its_rows(chelsea):
    """Two methods of three maps, two columns: original / a1 a2 / a3 / b1 b2 / b3; each picture in
    its cell's rectangle, so no row holds two methods' maps."""
    image, _, predictions, overlays = chelsea
    layout = grid.grid_layout([image.shape[:2]] * 7, columns=2, tile=100, groups=[3, 3])
    assert layout.cells == [(0, 0), (1, 0), (1, 1), (2, 0), (3, 0), (3, 1), (4, 0)]
    assert grid.grid_cells([3, 3], 3) == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    cell_h = layout.titles[0][3] - layout.titles[0][1] + 67  # a 451x300 picture fitted to 100x67
    assert (layout.width, layout.height) == (grid.GAP + 2 * 108, grid.GAP + 5 * (cell_h + grid.GAP))
    for (row, column), (x0, y0, _, _) in zip(layout.cells, layout.titles):
        assert (x0, y0) == (grid.GAP + column * 108, grid.GAP + row * (cell_h + grid.GAP))
    titles = [grid.tile_title(p, m) for m in ("a", "b") for p in predictions[:3]]
    tiles = [overlays[k % 4] for k in range(6)]
    picture = grid.grid_image(image, tiles, titles, columns=2, tile=100, groups=[3, 3])
    assert picture.shape[:2] == (layout.height, layout.width)
    for k, ((tx0, ty0, tx1, ty1), (px0, py0, px1, py1)) in enumerate(zip(layout.titles, layout.pictures)):
        np.testing.assert_array_equal(picture[ty0:ty1, tx0:tx1], text_strip((["original"] + titles)[k], 100))
        source = image if k == 0 else tiles[k - 1][..., ::-1]
        np.testing.assert_array_equal(picture[py0:py1, px0:px1], grid.fit_image(source, 100))
    x0 = layout.titles[0][2]  # right of the original: the empty rest of its row
    assert (picture[: layout.titles[1][1] - grid.GAP, x0:] == grid.BACKGROUND_RGB).all()


def test_gif_frames_durations_loop(chelsea):
    image, _, predictions, overlays = chelsea
    frames = [image] + [np.ascontiguousarray(o[..., ::-1]) for o in overlays[:3]]
    captions = ["original"] + [grid.tile_title(p) for p in predictions[:3]]
    data = gif.gif_bytes(frames, captions, ms=350)
    height, width = image.shape[:2]
    with Image.open(io.BytesIO(data)) as animation:
        assert animation.format == "GIF" and animation.n_frames == 4 and animation.is_animated
        assert animation.info["loop"] == 0
        assert animation.size == (width, height + gif.caption_height(width))
        decoded = []
        for k in range(animation.n_frames):
            animation.seek(k)
            assert animation.info["duration"] == 350
            decoded.append(np.asarray(animation.convert("RGB")).astype(np.float64))
    for k, frame in enumerate(decoded):
        errors = [np.abs(frame[:height] - source).mean() for source in frames]
        assert errors[k] < 6.0, (k, errors)  # 256 colours, dithered: measured 3.2-4.9
        # what the eye sees (1-px blur) is closer still: no banding
        blurred = np.abs(cv2.GaussianBlur(frame[:height], (0, 0), 1.0) - cv2.GaussianBlur(frames[k].astype(np.float64),
                                                                                        (0, 0), 1.0)).mean()
        assert blurred < 2.0, (k, blurred)
        assert int(np.argmin(errors)) == k
        strip = np.asarray(Image.fromarray(gif.captioned(frames[k], captions[k])[height:]), np.float64)
        assert np.abs(frame[height:] - strip).mean() < 6.0  # the caption burnt in is this frame's own
    assert np.abs(decoded[1][height:] - decoded[2][height:]).mean() > 1.0  # captions differ


@pytest.mark.parametrize("ms", [0, -800, 1.5, True])
def test_gif_refuses_bad_durations(ms):
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="milliseconds > 0"):
        gif.gif_bytes([frame], ["x"], ms=ms)


def test_gif_refuses_mixed_sizes():
    with pytest.raises(ValueError, match="all of one size"):
        gif.gif_bytes([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)], ["a", "b"])


# ---------------------------------------------------------------------------
# boxes


def bilinear(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Half-pixel-centred bilinear upsampling, edges clamped, in numpy float64 (independent of OpenCV)."""
    h, w = cam.shape

    def axis(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = axis(height, h)
    x0, x1, fx = axis(width, w)
    c = cam.astype(np.float64)
    top = c[y0][:, x0] * (1 - fx) + c[y0][:, x1] * fx
    bottom = c[y1][:, x0] * (1 - fx) + c[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def expected_box(cam, height, width, threshold=0.15, keep=None):
    """The rectangle of the thresholded upsampled map, by numpy; ``keep`` (y, x) picks the segment containing it."""
    up = bilinear(cam, height, width)
    cut = threshold * up.max()
    # the test maps must not put a pixel on the threshold, where float rounding decides
    assert np.abs(up - cut).min() > 1e-5  # OpenCV works in float32: ~1e-7
    mask = up >= cut
    if keep is not None:  # flood the chosen segment (8-connected) by repeated dilation inside the mask
        seg = np.zeros_like(mask)
        seg[keep] = True
        while True:
            grown = mask & (cv2.dilate(seg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
            if (grown == seg).all():
                break
            seg = grown
        mask = seg
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.parametrize("size", [(300, 451), (451, 300), (97, 640)])
def test_one_blob_box(size):
    cam = np.zeros((7, 7), np.float32)
    cam[2, 4] = 1.0
    cam[3, 4] = 0.5
    box = boxes.map_box(cam, size)
    assert box == expected_box(cam, *size)
    height, width = size
    # closed form along x for the single peak column: bilinear weight 1 - |sx - 4| >= 0.15
    sx = (np.arange(width) + 0.5) * 7 / width - 0.5
    xs = np.nonzero(1 - np.abs(sx - 4) >= 0.15)[0]
    assert (box[0], box[2]) == (xs.min(), xs.max() + 1)


def test_two_blobs_the_larger_wins():
    cam = np.zeros((7, 7), np.float32)
    cam[1, 2] = 1.0  # a sharp, small peak: the maximum
    cam[4:6, 4:6] = 0.55  # a wider, lower blob: more pixels above 15% of 1.0
    height, width = 300, 451
    box = boxes.map_box(cam, (height, width))
    assert box == expected_box(cam, height, width, keep=(int(5 * height / 7), int(5 * width / 7)))
    assert box[0] > width / 2  # not the peak's segment
    # a higher threshold cuts the wide blob out: only the peak is left
    high = boxes.map_box(cam, (height, width), threshold=0.7)
    assert high == expected_box(cam, height, width, threshold=0.7)
    assert high[2] < width / 2


def test_blob_at_the_border():
    cam = np.zeros((7, 7), np.float32)
    cam[0, 6] = 1.0
    cam[1, 6] = 0.7
    height, width = 300, 451
    box = boxes.map_box(cam, (height, width))
    assert box == expected_box(cam, height, width)
    assert box[1] == 0 and box[2] == width  # touches the top and right edges, exclusive end = width


def test_all_zero_map_has_no_box():
    assert boxes.map_box(np.zeros((7, 7), np.float32), (300, 451)) is None
    assert boxes.box_from_map(np.zeros((30, 45), np.float32)) is None


def test_box_from_map_ties_and_misuse():
    cam = np.zeros((10, 10), np.float32)
    cam[1:3, 6:8] = 1.0  # 4 px, first in raster order
    cam[6:8, 1:3] = 1.0  # 4 px
    assert boxes.box_from_map(cam) == [6, 1, 8, 3]
    with pytest.raises(ValueError, match=r"threshold in \[0, 1\]"):
        boxes.box_from_map(cam, threshold=1.5)
    with pytest.raises(ValueError, match="shape"):
        boxes.box_from_map(np.zeros((2, 3, 4), np.float32))


def test_map_box_uses_the_given_upsampler():
    cam = np.zeros((7, 7), np.float32)
    cam[3, 3] = 1.0

    def nearest(c, size):
        return cv2.resize(c, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)

    # nearest: exactly the pixels whose nearest map cell is (3, 3)
    box = boxes.map_box(cam, (70, 140), upsample=nearest)
    assert box == [60, 30, 80, 40]
    assert boxes.map_box(cam, (70, 140)) != box


def test_box_at_the_image_is_the_papers_box_at_the_model_input_scaled():
    """The Grad-CAM paper's code stretches the map bilinearly to the 224 px model input (the whole
    image squashed, as here) and boxes it there; map_box boxes the map stretched to the original
    image. The two agree up to the pixel grids, and a whole-image box is one in both: it comes from
    the map, not from where it is upsampled."""
    rng = np.random.default_rng(3)
    whole = 0
    for k in range(40):
        cam = cv2.GaussianBlur(rng.uniform(0, 1, (7, 7)).astype(np.float32) ** 3, (0, 0), 0.8 + k % 3 * 0.4)
        cam = np.maximum(cam - np.quantile(cam, 0.3), 0)
        cam /= cam.max()
        height, width = [(300, 451), (427, 640), (1411, 1000), (172, 448)][k % 4]
        a, b = boxes.map_box(cam, (height, width)), boxes.map_box(cam, (224, 224))
        scaled = [b[0] * width / 224, b[1] * height / 224, b[2] * width / 224, b[3] * height / 224]
        slack = [width / 224 + 1, height / 224 + 1] * 2
        assert all(abs(x - y) <= d for x, y, d in zip(a, scaled, slack)), (k, a, scaled)
        whole += a == [0, 0, width, height]
        assert (a == [0, 0, width, height]) == (b == [0, 0, 224, 224])
    assert 0 < whole < 40  # both kinds of map were drawn


def test_draw_box_outlines_the_edge_pixels():
    image = np.zeros((20, 30, 3), np.uint8)
    out = boxes.draw_box(image, [5, 4, 15, 10], colour=(0, 0, 255), thickness=1)
    assert (image == 0).all()  # the input is untouched
    red = out[..., 2] == 255
    ys, xs = np.nonzero(red)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (5, 4, 15, 10)
    assert not red[5:9, 6:14].any()  # hollow
    np.testing.assert_array_equal(boxes.draw_box(image, None), image)


def test_grid_and_gif_outputs_show_every_method_titled(chelsea, monkeypatch, tmp_path):
    """Two methods: the grid's tiles and the GIF's frames go method by method, each titled
    ``"rank. label (index) p · method"``; the boxes are each method's own."""
    from gradcam_cli.results import Explanation, Prediction
    from gradcam_cli.run import outputs

    image, cams, predictions, _ = chelsea
    preds = [Prediction(p["rank"], p["class_index"], None, p["label"], p["probability"]) for p in predictions[:2]]
    by_method = {"gradcam": cams[:2], "layercam": cams[2:]}
    explanation = Explanation(preds, cams[:2], np.zeros(1000, np.float32), maps_by_method=by_method)
    entries = [dict(p) for p in predictions[:2]]
    result = outputs.ImageResult(image=image, explanation=explanation, names=["chelsea.top1-a", "chelsea.top2-b"],
                                 entries=entries, record={}, stem="chelsea")
    seen = {}
    monkeypatch.setattr(grid, "grid_image", lambda original, tiles, titles, **kw: seen.update(tiles=tiles,
                        titles=titles, groups=kw["groups"]) or np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setattr(gif, "gif_bytes", lambda frames, captions, ms: seen.update(frames=frames,
                        captions=captions) or b"GIF89a")
    overlay = outputs.OverlayOutput(0.4, "jet", 90, boxes=True)
    for output in (outputs.BoxOutput(0.15), overlay, outputs.GridOutput(overlay, 3, 128, 90), outputs.GifOutput(overlay, 500)):
        output.write(result, tmp_path)
    assert seen["titles"] == [grid.tile_title(p, m) for m in by_method for p in predictions[:2]]
    assert seen["titles"][2] == "1. Egyptian_cat (285) 0.600 · layercam"
    assert seen["groups"] == [2, 2]  # each method's maps on rows of their own
    assert seen["captions"][1:] == [f"{t.replace(') 0.', ') p 0.')}" for t in seen["titles"]]
    size = image.shape[:2]
    for k, (m, entry) in enumerate([(m, e) for m in by_method for e in entries]):
        box = boxes.map_box(by_method[m][k % 2], size)
        assert entry["boxes"][m] == box
        expected = boxes.draw_box(render.overlays(image, by_method[m][k % 2][None], colormap=render.colormap_id("jet"))[0], box)
        np.testing.assert_array_equal(seen["tiles"][k], expected)
        np.testing.assert_array_equal(seen["frames"][1 + k], expected[..., ::-1])
        assert (tmp_path / entry["overlays"][m]).is_file()
