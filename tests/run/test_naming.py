"""The output naming rule read backwards: a record's stem from its map files' names."""

from __future__ import annotations

import pytest

from gradcam_cli.run.naming import gif_name, grid_name, map_name, method_name, stem_of

STEMS = ["chelsea", "cats/chelsea", "a.b.c", "x.top1-tabby", "<script>alert(\"q'1\")</script>", "ünï code~2"]


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("slot, n, by_class, rank", [(1, 1, False, 1), (2, 12, False, 2), (1, 3, True, 5),
                                                     (4, 3, False, 9)])  # the last: the true class's extra map
def test_the_stem_comes_back_from_every_kind_of_map_file(stem, slot, n, by_class, rank):
    label = "tiger cat/x"  # safe_label'd in the names: tiger_cat_x
    base = map_name(stem, label, rank, slot, n, by_class)
    entry = {"rank": rank, "label": label}
    for fields in ({"overlay": f"{base}.jpg"}, {"raw": f"{base}.npy"}, {"guided": f"{base}.png"},
                   {"overlays": {m: f"{method_name(base, m, True)}.jpg" for m in ("gradcam", "gradcam++")},
                    "guided": f"{method_name(base, 'guided', True)}.png"},
                   {"raws": {"layercam": f"{method_name(base, 'layercam', True)}.npy"}}):
        assert stem_of({"predictions": [{**entry, **fields}]}) == stem, fields


def test_no_stem_without_a_map_file_of_the_record():
    assert stem_of({"predictions": []}) is None
    assert stem_of({"status": "error", "path": "x.jpg"}) is None
    assert stem_of({"predictions": [{"rank": 1, "label": "tabby", "class_index": 281}]}) is None
    # a name the rule did not make (another label) is not read as one
    assert stem_of({"predictions": [{"rank": 1, "label": "tabby", "overlay": "chelsea.top1-beagle.jpg"}]}) is None
    assert stem_of({"predictions": [{"rank": 1, "label": "tabby", "overlay": "chelsea.top2-tabby.jpg"}]}) is None


def test_per_image_files_are_named_from_the_stem():
    assert grid_name("cats/chelsea") == "cats/chelsea.grid.jpg" and gif_name("cats/chelsea") == "cats/chelsea.gif"
