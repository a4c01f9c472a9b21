"""`gradcam merge` (a sharded run in one predictions.json) and `gradcam export` (CSV), end to end on a
small own model; the merged records equal the unsharded run's."""

from __future__ import annotations

import csv
import io
import json

from helpers import assert_close, document, invoke


def test_shards_merge_into_the_whole_runs_predictions(tmp_path, tiny):
    options, images = tiny
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert invoke("explain", images, "--out", whole, *options).exit_code == 0
    sharded.mkdir()
    missing = invoke("merge", sharded)
    assert (missing.exit_code, missing.stderr) == (2, f"Error: no shard files (predictions.K-of-N.json) in {sharded}: "
                                                      "nothing to merge; `gradcam explain ... --shard K/N` writes them\n")
    for k in (1, 3):
        assert invoke("explain", images, "--out", sharded, "--shard", f"{k}/3", *options).exit_code == 0
    gap = invoke("merge", sharded)
    assert (gap.exit_code, gap.stderr) == (2, f"Error: shard 2 of 3 is missing in {sharded}: run `gradcam explain ... "
                                              "--shard 2/3` into it first\n")
    assert invoke("explain", images, "--out", sharded, "--shard", "2/3", *options).exit_code == 0
    merged = invoke("merge", sharded, "--report")
    assert merged.exit_code == 0, merged.stderr
    assert merged.stdout.splitlines() == [str(sharded / "predictions.json"), str(sharded / "report.html")]
    ours, theirs = document(sharded), document(whole)
    assert_close(ours["images"], sorted(theirs["images"], key=lambda r: r["path"]))  # other batches: FLOAT_ATOL
    assert ours["summary"] == theirs["summary"] == {"images": 6, "done": 6, "failed": 0}
    assert ours["merged_from"] == [f"predictions.{k}-of-3.json" for k in (1, 2, 3)]
    assert ours["options"] == {**theirs["options"], "shard": None}


def test_shards_of_other_settings_are_refused(tmp_path, tiny):
    options, images = tiny
    out = tmp_path / "o"
    assert invoke("explain", images, "--out", out, "--shard", "1/2", *options).exit_code == 0
    assert invoke("explain", images, "--out", out, "--shard", "2/2", "--alpha", 0.7, *options).exit_code == 0
    refused = invoke("merge", out)
    assert (refused.exit_code, refused.stderr) == (2, "Error: predictions.2-of-2.json was made with other settings "
                                                      "than predictions.1-of-2.json (alpha); merge the shards of one "
                                                      "run\n")
    assert not (out / "predictions.json").exists()


def test_export_writes_one_row_per_explained_class(tmp_path, tiny):
    options, images = tiny
    out = tmp_path / "o"
    (images.parent / "broken").mkdir(exist_ok=True)
    broken = images.parent / "broken" / "empty.png"
    broken.write_bytes(b"")
    top2 = [o for o in options if o not in ("--top", 1)]
    assert invoke("explain", images, broken, "--out", out, "--top", 2, *top2).exit_code == 1
    result = invoke("export", out)
    assert result.exit_code == 0 and result.stdout == f"{out / 'predictions.csv'}\n"
    rows = list(csv.DictReader(io.StringIO((out / "predictions.csv").read_text())))
    records = json.loads((out / "predictions.json").read_text())["images"]
    expected = []
    for r in records:
        for p in r.get("predictions") or [{}]:
            expected.append([r["path"], r["status"], str(p.get("rank", "")), p.get("label", ""),
                             str(p.get("probability", "")), p.get("overlay", ""), r.get("message", "")])
    assert [[row[k] for k in ("path", "status", "rank", "label", "probability", "overlay", "message")]
            for row in rows] == expected
    assert len(rows) == 6 * 2 + 1 and rows[-1]["status"] == "error"
