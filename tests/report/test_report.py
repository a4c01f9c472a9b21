"""report.html without a browser: escaping, the embedded data, links, and refusals."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re

import shutil
import urllib.parse

import pytest
from helpers import invoke, make_images

from gradcam_cli.io import writers
from gradcam_cli.errors import ReportError
from gradcam_cli.report import build_report
from gradcam_cli.report.html import embed_json

HOSTILE = "<img src=x onerror=alert(1)>.jpg"


def run(records, **header):
    return {"backbone": "b", "model": "m", "target_layer": "top", "method": "gradcam", **header, "images": records}


def data_block(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def test_embedded_json_cannot_close_its_script():
    value = {"name": "</script><script>alert(1)</script> & <!--", "n": [1, 2.5, None]}
    text = embed_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value


def test_report_escapes_the_header_and_embeds_the_records(tmp_path):
    original = tmp_path / "photos" / HOSTILE
    original.parent.mkdir()
    original.write_bytes(b"not read")
    records = [
        {"path": str(original), "status": "ok", "width": 4, "height": 3,
         "predictions": [{"rank": 1, "class_index": 7, "label": "a<b", "probability": 0.5,
                          "overlay": f"{HOSTILE[:-4]}#1?.top1-a_b.jpg"}]},
        {"path": "gone.jpg", "status": "error", "kind": "missing", "message": "<i>no such file</i>"},
    ]
    out = tmp_path / "out"
    writers.write_json(out / "predictions.json", run(records, model="<script>alert(2)</script>"))
    path = build_report(out)
    assert path == out / "report.html" and sorted(p.name for p in out.iterdir()) == ["predictions.json", "report.html"]
    html = path.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html and "<script>alert(2)" not in html
    assert html.count("<script") == 2 and "onerror" not in html.split("report-data")[0]
    data = data_block(html)
    first, second = data["records"]
    assert first["name"] == HOSTILE and first["preds"][0]["label"] == "a<b"
    # relative URLs with every meaningful character escaped; the original relative to out/
    assert first["src"] == "../photos/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.jpg"
    assert first["preds"][0]["src"] == "%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E%231%3F.top1-a_b.jpg"
    assert second["src"] is None and second["error"] == "missing: <i>no such file</i>"
    # the Content-Security-Policy allows exactly the page's own script, by its hash
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html and "connect-src" not in html and "default-src 'none'" in html


def test_original_left_out_when_it_is_not_there(tmp_path):
    records = [{"path": "nowhere/x.jpg", "status": "ok", "width": 4, "height": 3, "predictions": []}]
    writers.write_json(tmp_path / "predictions.json", run(records))
    assert data_block(build_report(tmp_path).read_text())["records"][0]["src"] is None


def test_test_set_summary_and_class_table(tmp_path):
    def rec(name, predicted, true, rank):
        return {"path": name, "status": "ok", "width": 4, "height": 3,
                "predictions": [{"rank": 1, "class_index": predicted, "label": f"c{predicted}", "probability": 0.5,
                                 "overlay": f"{name}.jpg"}],
                "true_label": {"class_index": true, "label": f"c{true}", "rank": rank}}

    records = [rec("a", 1, 1, 1), rec("b", 2, 1, 3), rec("c", 2, 2, 1), rec("d", 1, 2, 2)]
    writers.write_json(tmp_path / "predictions.json", run(records))
    html = build_report(tmp_path).read_text()
    data = data_block(html)
    assert data["test_mode"] is True and [r["wrong"] for r in data["records"]] == [False, True, False, True]
    assert "top-1 accuracy <b>50.0%</b>" in html
    rows = re.findall(r"<tr[^>]*><td>(.*?)</td><td>(\d+)</td><td>(\d+)</td><td>(.*?)</td><td>(.*?)</td></tr>", html)
    assert rows == [("c1 (1)", "2", "1", "50.0%", "c2 (2) ×1"), ("c2 (2)", "2", "1", "50.0%", "c1 (1) ×1")]


def test_refusals(tmp_path):
    with pytest.raises(ReportError) as missing:
        build_report(tmp_path)
    assert str(missing.value) == (f"no predictions.json in {tmp_path}: expected a folder that `gradcam explain ... "
                                  f"--out {tmp_path}` wrote; run it first, or name the right folder")
    shards = tmp_path.parent / f"{tmp_path.name}-shards"
    shards.mkdir()
    for k in (2, 1):
        (shards / f"predictions.{k}-of-2.json").write_text("{}")
    with pytest.raises(ReportError) as sharded:  # a folder of shards: name --predictions, report's own option
        build_report(shards)
    assert str(sharded.value) == (f"no predictions.json in {shards}, which holds the shards predictions.1-of-2.json, "
                                  "predictions.2-of-2.json: pass --predictions predictions.1-of-2.json for one "
                                  "shard's report")
    (tmp_path / "predictions.json").write_text("{not json")
    with pytest.raises(ReportError, match="cannot read"):
        build_report(tmp_path)
    (tmp_path / "predictions.json").write_text("[1, 2]")
    with pytest.raises(ReportError, match="not a gradcam-cli predictions file"):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
    assert os.listdir(tmp_path) == ["predictions.json"]


STEM = "run/<script>alert(\"q'1\")</script>"  # a folder and a file name with markup and both quotes
STEM_URL = "run/%3Cscript%3Ealert%28%22q%271%22%29%3C/script%3E"


def test_guided_maps_grids_and_gifs_are_linked_escaped_and_absent_ones_unmentioned(tmp_path):
    records = [
        {"path": "a.jpg", "status": "ok", "width": 4, "height": 3, "grid": f"{STEM}.grid.jpg",
         "predictions": [{"rank": 1, "class_index": 3, "label": "tabby", "probability": 0.5,
                          "overlays": {"gradcam": f"{STEM}.top1-tabby.gradcam.jpg"},
                          "guided": f"{STEM}.top1-tabby.guided.png"}]},
        {"path": "b.jpg", "status": "ok", "width": 4, "height": 3,
         "predictions": [{"rank": 1, "class_index": 3, "label": "tabby", "probability": 0.5,
                          "overlay": "b.top1-tabby.jpg"}]},
        {"path": "c.jpg", "status": "ok", "width": 4, "height": 3,  # a run of guided alone: no overlay
         "predictions": [{"rank": 1, "class_index": 3, "label": "tabby", "probability": 0.5,
                          "guided": "c.top1-tabby.png"}]},
    ]
    # the first image's GIF is not in its record (made later, as `gradcam pictures` does): found by
    # the naming rule; b's grid name is on disk as a folder, not a file: not shown
    (tmp_path / "run" / "<script>alert(\"q'1\")<").mkdir(parents=True)
    (tmp_path / f"{STEM}.gif").write_bytes(b"GIF89a")
    (tmp_path / "b.grid.jpg").mkdir()
    writers.write_json(tmp_path / "predictions.json", run(records, method=["gradcam", "guided"]))
    html = build_report(tmp_path).read_text(encoding="utf-8")
    assert "<script>alert" not in html and html.count("<script") == 2 and "q'1" not in html
    first, second, third = data_block(html)["records"]
    assert first["grid"] == f"{STEM_URL}.grid.jpg" and first["gif"] == f"{STEM_URL}.gif"
    assert [(p["method"], p["src"]) for p in first["preds"]] == [("gradcam", f"{STEM_URL}.top1-tabby.gradcam.jpg"),
                                                                 ("guided", f"{STEM_URL}.top1-tabby.guided.png")]
    assert "grid" not in second and "gif" not in second
    assert [(p["method"], p["src"]) for p in second["preds"]] == [(None, "b.top1-tabby.jpg")]
    assert [(p["method"], p["src"]) for p in third["preds"]] == [("guided", "c.top1-tabby.png")]
    assert third["top"] == {"ci": 3, "label": "tabby", "p": 0.5}


def test_a_real_run_shows_its_pictures_and_those_added_later(tmp_path, tiny):
    """`explain --method gradcam --method guided --grid --gif --report` on images in two folders
    (stems ``a b/im000`` ...): every card links its overlay, guided map, grid and GIF as the records
    name them. The same run without --grid/--gif: no card mentions a grid or GIF until the files
    are there under the run's names (as `gradcam pictures` writes them), then each card links them."""
    options, _ = tiny
    images = tmp_path / "in"
    make_images(images / "a b", 2)
    make_images(images / "c", 1)
    full, bare = tmp_path / "full", tmp_path / "bare"
    common = (*options, "--method", "gradcam", "--method", "guided")
    assert invoke("explain", images, "--out", full, *common, "--grid", "--gif", "--report").exit_code == 0
    assert invoke("explain", images, "--out", bare, *common).exit_code == 0
    quote = urllib.parse.quote
    records = json.loads((full / "predictions.json").read_text())["images"]
    cards = data_block((full / "report.html").read_text())["records"]
    assert [r["grid"] for r in records] == ["a b/im000.grid.jpg", "a b/im001.grid.jpg", "c/im000.grid.jpg"]
    for record, card in zip(records, cards):
        [entry] = record["predictions"]
        assert card["grid"] == quote(record["grid"]) and card["gif"] == quote(record["gif"])
        assert [(p["method"], p["src"]) for p in card["preds"]] == [("gradcam", quote(entry["overlays"]["gradcam"])),
                                                                    ("guided", quote(entry["guided"]))]
    assert all("grid" not in card and "gif" not in card for card in data_block(build_report(bare).read_text())["records"])
    for record in records:
        for key in ("grid", "gif"):
            shutil.copyfile(full / record[key], bare / record[key])
    later = data_block(build_report(bare).read_text())["records"]
    assert [(c["grid"], c["gif"]) for c in later] == [(c["grid"], c["gif"]) for c in cards]


def test_a_dicom_frame_card_names_its_frame_and_links_no_original(tmp_path):
    """A browser shows no DICOM file: its card has the overlays only; a stack's frame is named."""
    from gradcam_cli.report.html import card_data

    dcm = tmp_path / "dose.dcm"
    dcm.write_bytes(b"\0" * 132)
    png = tmp_path / "scan.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    frame = {"path": str(dcm), "frame": 7, "status": "ok", "width": 10, "height": 10,
             "full_depth": {"format": "DICOM", "frames": 15}, "predictions": []}
    card = card_data(0, frame, tmp_path / "out")
    assert (card["name"], card["src"]) == ("dose.dcm · frame 7", None)
    scan = {"path": str(png), "status": "ok", "width": 10, "height": 10, "full_depth": {"format": "PNG"},
            "predictions": []}
    assert card_data(1, scan, tmp_path / "out")["src"] == "../scan.png"  # a 16-bit PNG shows, as any PNG


def test_a_volume_card_shows_each_maps_montage_escaped_and_no_original(tmp_path):
    """A volume record (a NIfTI whose folder and name carry markup and quotes): its card links each
    method's montage (URL-quoted), never the volume itself (a browser shows no NIfTI) nor the NIfTI
    map; no string of it reaches the HTML outside the escaped data block."""
    maps = {method: {"nifti": f"{STEM}.top1-lesion.{method}.nii.gz", "montage": f"{STEM}.top1-lesion.{method}.montage.png",
                     "gif": f"{STEM}.top1-lesion.{method}.gif", "peak_voxel": [1, 2, 3]}
            for method in ("gradcam", "scorecam")}
    records = [{"path": f"{STEM}.nii.gz", "status": "ok", "volume": {"format": "NIfTI", "shape": [8, 8, 4]},
                "map_shape": [4, 4, 2], "predictions": [{"rank": 1, "class_index": 1, "label": "<b>lesion</b>",
                                                         "probability": 0.75, "score": 1.1, "maps": maps}]}]
    writers.write_json(tmp_path / "predictions.json", run(records, method=["gradcam", "scorecam"]))
    html = build_report(tmp_path).read_text(encoding="utf-8")
    assert "<script>alert" not in html and "<b>lesion" not in html and html.count("<script") == 2
    (card,) = data_block(html)["records"]
    assert card["src"] is None and card["path"] == f"{STEM}.nii.gz" and card["name"] == "script>.nii.gz"
    assert [(p["method"], p["src"], p["label"]) for p in card["preds"]] == [
        ("gradcam", f"{STEM_URL}.top1-lesion.gradcam.montage.png", "<b>lesion</b>"),
        ("scorecam", f"{STEM_URL}.top1-lesion.scorecam.montage.png", "<b>lesion</b>")]
    assert ".nii.gz" not in html.split("report-data")[0] and "lesion.gradcam.nii" not in html
