"""Tests for gradcam_cli.io.discover: every tree is generated in tmp_path."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from gradcam_cli.io import discover
from gradcam_cli.io.discover import (
    DEFAULT_EXTENSIONS,
    InputRef,
    in_shard,
    iter_inputs,
    parse_shard,
)

UNI = "über space's \"q\""  # Unicode, a space, quotes


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded here")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A tree in tmp_path/tree; the cwd is tmp_path so paths stay short."""
    root = tmp_path / "tree"
    for rel in [
        "b.jpg", "a.jpg", "a.png", "C.JPG", "notes.txt", ".hidden.jpg",
        ".secret/x.jpg", f"{UNI}.png",
        "sub/z.webp", "sub/deep/y.tif", "sub/.h/w.jpg", "zz/k.jpeg",
    ]:
        _touch(root / rel)
    os.symlink("../a.jpg", root / "sub" / "link_to_a.jpg")  # a file already included
    os.symlink("..", root / "sub" / "loop")  # a directory loop
    os.symlink("nowhere.jpg", root / "sub" / "broken.jpg")  # a dangling link
    monkeypatch.chdir(tmp_path)
    return root


def _pairs(refs):
    refs = list(refs)
    for r in refs:
        assert isinstance(r, InputRef)
        assert not os.path.isabs(r.out_stem) and not r.out_stem.startswith("/")
        assert ".." not in r.out_stem.split("/")
        assert "" not in r.out_stem.split("/")
        assert "\\" not in r.out_stem or "\\" in r.path
    stems = [r.out_stem for r in refs]
    assert len(set(s.casefold() for s in stems)) == len(stems), stems
    return [(r.path, r.out_stem) for r in refs]


WALK = [
    ("tree/C.JPG", "C"),
    ("tree/a.jpg", "a"),
    ("tree/a.png", "a_png"),
    ("tree/b.jpg", "b"),
    (f"tree/{UNI}.png", UNI),
    ("tree/sub/broken.jpg", "sub/broken"),  # a dangling link: handed on, decoding names its target
    ("tree/sub/z.webp", "sub/z"),
    ("tree/sub/deep/y.tif", "sub/deep/y"),
    ("tree/zz/k.jpeg", "zz/k"),
]


def test_walk_exact_order(tree):
    it = iter_inputs(["tree"])
    assert isinstance(it, Iterator)
    assert _pairs(it) == WALK


def test_walk_is_deterministic(tree):
    assert _pairs(iter_inputs(["tree"])) == _pairs(iter_inputs(["tree"]))


def test_walk_paths_open(tree):
    for ref in iter_inputs(["tree"]):
        if ref.path == "tree/sub/broken.jpg":
            continue
        with open(ref.path, "rb") as fh:
            assert fh.read() == b"not decoded here"


def test_walk_absolute_root(tree):
    got = _pairs(iter_inputs([str(tree)]))
    assert got == [(os.path.join(str(tree), p[len("tree/"):]), s) for p, s in WALK]


def test_trailing_slash_root(tree):
    got = _pairs(iter_inputs(["tree/"]))
    assert [s for _, s in got] == [s for _, s in WALK]
    assert got[0][0] == "tree/C.JPG"


def test_not_recursive(tree):
    assert _pairs(iter_inputs(["tree"], recursive=False)) == WALK[:5]


def test_custom_extensions(tree):
    got = _pairs(iter_inputs(["tree"], extensions=("PNG", ".Tif")))
    assert got == [("tree/a.png", "a"), (f"tree/{UNI}.png", UNI), ("tree/sub/deep/y.tif", "sub/deep/y")]


def test_default_extensions():
    assert DEFAULT_EXTENSIONS == (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom")


def test_explicit_files_always_kept(tree):
    got = _pairs(iter_inputs(["tree/.hidden.jpg", "tree/notes.txt", "tree/.secret/x.jpg"]))
    assert got == [("tree/.hidden.jpg", ".hidden"), ("tree/notes.txt", "notes"), ("tree/.secret/x.jpg", ".secret/x")]


def test_explicit_missing_is_yielded(tree):
    assert _pairs(iter_inputs(["tree/nope.jpg", "gone/also missing.png"])) == [
        ("tree/nope.jpg", "tree/nope"), ("gone/also missing.png", "gone/also missing"),
    ]


def test_explicit_dangling_symlink_is_yielded(tree):
    assert _pairs(iter_inputs(["tree/sub/broken.jpg"])) == [("tree/sub/broken.jpg", "broken")]


def test_explicit_hidden_directory_is_walked(tree):
    assert _pairs(iter_inputs(["tree/.secret"])) == [("tree/.secret/x.jpg", "x")]


def test_explicit_path_with_glob_chars_is_literal(tree):
    _touch(tree / "[x].jpg")
    _touch(tree / "x.jpg")
    assert _pairs(iter_inputs(["tree/[x].jpg"])) == [("tree/[x].jpg", "[x]")]


def test_glob_matching_nothing_yields_nothing(tree):
    assert list(iter_inputs(["tree/*.bmp"])) == []
    assert list(iter_inputs(["nowhere/*/*.jpg"])) == []


def test_glob_files_case_sensitive_hidden_skipped(tree):
    assert _pairs(iter_inputs(["tree/*.jpg"])) == [("tree/a.jpg", "a"), ("tree/b.jpg", "b")]
    assert _pairs(iter_inputs(["tree/?.JPG"])) == [("tree/C.JPG", "C")]
    assert _pairs(iter_inputs(["tree/[ab].*"])) == [
        ("tree/a.jpg", "a"), ("tree/a.png", "a_png"), ("tree/b.jpg", "b"),
    ]


def test_glob_filters_extensions(tree):
    # notes.txt matches the pattern but is not an image extension
    assert _pairs(iter_inputs(["tree/*t*"])) == []
    assert _pairs(iter_inputs(["tree/n*"])) == []


def test_glob_literal_hidden_component(tree):
    assert _pairs(iter_inputs(["tree/.secret/*.jpg"])) == [("tree/.secret/x.jpg", "x")]
    assert _pairs(iter_inputs(["tree/.*.jpg"])) == [("tree/.hidden.jpg", ".hidden")]


def test_glob_recursive_double_star(tree):
    # ** does not enter hidden directories and survives the symlink loop;
    # the link to a.jpg is the same file, so it is yielded once.
    assert _pairs(iter_inputs(["tree/**/*.jpg"])) == [
        ("tree/a.jpg", "a"), ("tree/b.jpg", "b"), ("tree/sub/broken.jpg", "sub/broken")]
    assert _pairs(iter_inputs(["tree/**/*.tif"])) == [("tree/sub/deep/y.tif", "y")]
    assert _pairs(iter_inputs(["**/*.webp"])) == [("tree/sub/z.webp", "z")]
    assert _pairs(iter_inputs(["tree/**/*.*"])) == [
        ("tree/C.JPG", "C"), ("tree/a.jpg", "a"), ("tree/a.png", "a_png"), ("tree/b.jpg", "b"),
        (f"tree/{UNI}.png", UNI), ("tree/sub/broken.jpg", "sub/broken"), ("tree/sub/z.webp", "sub/z"),
        ("tree/sub/deep/y.tif", "sub/deep/y"), ("tree/zz/k.jpeg", "zz/k"),
    ]


def test_glob_matched_directories_are_walked(tree):
    # Matches in sorted order; "sub" and "zz" are walked like directory
    # arguments. Walking "sub" follows its "loop" link back up to "tree" and
    # reaches two files before the glob does: first reached wins. Stems mirror
    # the tree below the inputs' common folder ("tree").
    assert _pairs(iter_inputs(["tree/*"])) == [
        ("tree/C.JPG", "C"), ("tree/a.jpg", "a"), ("tree/a.png", "a_png"), ("tree/b.jpg", "b"),
        ("tree/sub/broken.jpg", "sub/broken"), ("tree/sub/z.webp", "sub/z"), ("tree/sub/deep/y.tif", "sub/deep/y"),
        (f"tree/sub/loop/{UNI}.png", f"sub/loop/{UNI}"),
        ("tree/sub/loop/zz/k.jpeg", "sub/loop/zz/k"),
    ]
    assert _pairs(iter_inputs(["tree/z*"])) == [("tree/zz/k.jpeg", "k")]


def test_walk_into_loop_from_inner_directory(tree):
    # starting below the loop target, the loop is followed once, then stops;
    # a.jpg was already reached through link_to_a.jpg
    assert _pairs(iter_inputs(["tree/sub"])) == [
        ("tree/sub/broken.jpg", "broken"),
        ("tree/sub/link_to_a.jpg", "link_to_a"),
        ("tree/sub/z.webp", "z"),
        ("tree/sub/deep/y.tif", "deep/y"),
        ("tree/sub/loop/C.JPG", "loop/C"),
        ("tree/sub/loop/a.png", "loop/a"),
        ("tree/sub/loop/b.jpg", "loop/b"),
        (f"tree/sub/loop/{UNI}.png", f"loop/{UNI}"),
        ("tree/sub/loop/zz/k.jpeg", "loop/zz/k"),
    ]


def test_glob_absolute_pattern(tree):
    pattern = os.path.join(str(tree), "sub", "*.webp")
    assert _pairs(iter_inputs([pattern])) == [(os.path.join(str(tree), "sub", "z.webp"), "z")]


def test_duplicates_yielded_once(tree):
    got = _pairs(iter_inputs([
        "tree/a.jpg", "tree", "tree/sub", "./tree/a.jpg", "tree/sub/link_to_a.jpg",
        str(tree / "b.jpg"), "tree/sub/loop/zz",
    ]))
    assert got == [
        ("tree/a.jpg", "a"),
        ("tree/C.JPG", "C"),
        ("tree/a.png", "a_png"),
        ("tree/b.jpg", "b"),
        (f"tree/{UNI}.png", UNI),
        ("tree/sub/broken.jpg", "sub/broken"),
        ("tree/sub/z.webp", "sub/z"),
        ("tree/sub/deep/y.tif", "sub/deep/y"),
        ("tree/zz/k.jpeg", "zz/k"),
    ]


def test_symlink_first_reached_wins(tree):
    # named through the link first: the link path is kept, the real one dropped
    got = _pairs(iter_inputs(["tree/sub/link_to_a.jpg", "tree/a.jpg"]))
    assert got == [("tree/sub/link_to_a.jpg", "link_to_a")]


def test_symlinked_directory_is_followed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "real" / "p.png")
    (tmp_path / "top").mkdir()
    os.symlink("../real", tmp_path / "top" / "linked")
    os.symlink("..", tmp_path / "top" / "up")  # loop back to top
    assert _pairs(iter_inputs(["top"])) == [("top/linked/p.png", "linked/p")]


def test_mutual_symlink_loop_terminates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _touch(tmp_path / "a" / "1.jpg")
    _touch(tmp_path / "b" / "2.jpg")
    os.symlink("../b", tmp_path / "a" / "to_b")
    os.symlink("../a", tmp_path / "b" / "to_a")
    assert _pairs(iter_inputs(["a"])) == [("a/1.jpg", "1"), ("a/to_b/2.jpg", "to_b/2")]
    assert _pairs(iter_inputs(["**/*.jpg"])) == [("a/1.jpg", "1"), ("a/to_b/2.jpg", "to_b/2")]


def test_stem_collisions(tmp_path, monkeypatch):
    """Equal names in one folder: the extension joins the stem, then ~2, ~3 (case-insensitive)."""
    monkeypatch.chdir(tmp_path)
    for rel in ["x/a_jpg.gif", "x/a.jpg", "x/A.jpg", "x/a.png", "u/noext", "t/noext"]:
        _touch(tmp_path / rel)
    got = _pairs(iter_inputs(["x/a_jpg.gif", "x/a.jpg", "x/A.jpg", "x/a.png", "u/noext", "t/noext"]))
    assert got == [
        ("x/a_jpg.gif", "x/a_jpg"),
        ("x/a.jpg", "x/a"),
        ("x/A.jpg", "x/A_jpg~2"),  # compared case-insensitively: x/a and x/a_jpg are taken
        ("x/a.png", "x/a_png"),
        ("u/noext", "u/noext"),
        ("t/noext", "t/noext"),
    ]


def test_inputs_mirror_the_tree_below_their_common_folder(tmp_path, monkeypatch):
    """Several arguments, globs and stdin lines: equal names in different folders do not collide."""
    monkeypatch.chdir(tmp_path)
    for rel in ["d/a.jpg", "d/a.png", "d/a.webp", "d/s/a.jpg", "e/s/a.jpg", "p/q/r/b.jpg", "p/q/t/b.jpg"]:
        _touch(tmp_path / rel)
    got = _pairs(iter_inputs(["d", "e/s/a.jpg", "e"]))
    assert got == [
        ("d/a.jpg", "d/a"), ("d/a.png", "d/a_png"), ("d/a.webp", "d/a_webp"),
        ("d/s/a.jpg", "d/s/a"),
        ("e/s/a.jpg", "e/s/a"),
    ]
    assert _pairs(iter_inputs(["p/*/*/b.jpg"])) == [("p/q/r/b.jpg", "r/b"), ("p/q/t/b.jpg", "t/b")]
    assert _pairs(iter_inputs(["-"], stdin=io.StringIO("p/q/t/b.jpg\np/q/r/b.jpg\n"))) == [
        ("p/q/t/b.jpg", "t/b"), ("p/q/r/b.jpg", "r/b")]
    assert _pairs(iter_inputs([str(tmp_path / "p/q/r/b.jpg"), "p/q/t"])) == [
        (str(tmp_path / "p/q/r/b.jpg"), "r/b"), ("p/q/t/b.jpg", "t/b")]
    assert _pairs(iter_inputs(["d/s"])) == [("d/s/a.jpg", "a")]  # one folder: relative to it
    assert _pairs(iter_inputs(["d/s/a.jpg"])) == [("d/s/a.jpg", "a")]  # one file: its name


def test_no_dotdot_or_absolute_stems(tmp_path, monkeypatch):
    (tmp_path / "w").mkdir()
    _touch(tmp_path / "up.jpg")
    monkeypatch.chdir(tmp_path / "w")
    got = _pairs(iter_inputs(["../up.jpg", str(tmp_path / "up.jpg"), "..", "/", ""], recursive=False))
    assert got[0] == ("../up.jpg", (tmp_path / "up").relative_to("/").as_posix())  # "/" is an input
    for _, stem in got:
        assert not stem.startswith("/") and ".." not in stem.split("/")


def test_stdin_lines(tree):
    text = "tree/a.jpg\r\n\n   \ntree/notes.txt\ntree/sub/deep\nmissing one.jpg\ntree/*.jpg\n"
    got = _pairs(iter_inputs(["-"], stdin=io.StringIO(text)))
    assert got == [
        ("tree/a.jpg", "tree/a"),
        ("tree/notes.txt", "tree/notes"),
        ("tree/sub/deep/y.tif", "tree/sub/deep/y"),
        ("missing one.jpg", "missing one"),
        ("tree/*.jpg", "tree/*"),  # stdin lines are literal names, never globs
    ]


def test_stdin_mixed_with_arguments_and_read_once(tree):
    got = _pairs(iter_inputs(["tree/b.jpg", "-", "tree/zz", "-"], stdin=io.StringIO("tree/a.jpg\ntree/b.jpg\n")))
    assert got == [("tree/b.jpg", "b"), ("tree/a.jpg", "a"), ("tree/zz/k.jpeg", "zz/k")]


def test_stdin_nul_separated(tree):
    odd = tree / "line\nbreak.jpg"
    _touch(odd)
    data = "tree/a.jpg\0" + str(odd.relative_to(tree.parent)) + "\0\0" + f"tree/{UNI}.png\0"
    got = _pairs(iter_inputs(["-"], stdin=io.StringIO(data), null=True))
    assert got == [("tree/a.jpg", "a"), ("tree/line\nbreak.jpg", "line\nbreak"), (f"tree/{UNI}.png", UNI)]


def test_stdin_nul_large_stream_chunks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = [f"dir{i % 7}/img_{i:05d}_{'x' * 40}.jpg" for i in range(3000)]
    stream = io.StringIO("\0".join(names))
    got = _pairs(iter_inputs(["-"], stdin=stream, null=True))
    assert [p for p, _ in got] == names  # missing, but all yielded, in order
    assert got[0][1] == f"dir0/img_00000_{'x' * 40}"


def test_stdin_defaults_to_sys_stdin(tree, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("tree/b.jpg\n"))
    assert _pairs(iter_inputs(["-"])) == [("tree/b.jpg", "b")]


def test_unlistable_directory_is_yielded_not_dropped(tree, monkeypatch):
    real_scandir = os.scandir
    blocked = os.path.join("tree", "sub", "deep")

    def scandir(path="."):
        if os.fspath(path) == blocked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(discover.os, "scandir", scandir)
    got = _pairs(iter_inputs(["tree"]))
    assert ("tree/sub/deep", "sub/deep") in got
    assert ("tree/sub/deep/y.tif", "sub/deep/y") not in got


def test_unicode_names_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ["日本語 写真.jpg", "naïve café.PNG", "it's \"quoted\".webp", "emoji 🐱.gif"]
    for n in names:
        _touch(tmp_path / "u" / n)
    got = _pairs(iter_inputs(["u"]))
    assert got == sorted((f"u/{n}", os.path.splitext(n)[0]) for n in names)
    explicit = _pairs(iter_inputs([f"u/{n}" for n in names]))
    assert [s for _, s in explicit] == [os.path.splitext(n)[0] for n in names]


# --------------------------------------------------------------------------- #
# shards


@pytest.mark.parametrize("text,expected", [("1/1", (1, 1)), ("2/4", (2, 4)), (" 3 / 3 ", (3, 3)), ("10/12", (10, 12))])
def test_parse_shard_ok(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["", "1", "0/3", "4/3", "1/0", "-1/2", "a/b", "1/2/3", "1.0/2", "²/3"])
def test_parse_shard_bad(text):
    with pytest.raises(ValueError) as info:
        parse_shard(text)
    msg = str(info.value)
    assert "\n" not in msg and "K/N" in msg


def test_in_shard_rejects_bad_numbers():
    ref = InputRef("a.jpg", "a")
    for k, n in [(0, 3), (4, 3), (1, 0)]:
        with pytest.raises(ValueError):
            in_shard(ref, k, n)


def test_shards_partition_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(60):
        _touch(tmp_path / "s" / f"d{i % 4}" / f"img{i}.jpg")
    _touch(tmp_path / "s" / "d0" / "img0.png")  # a collision, img0_png
    refs = list(iter_inputs(["s"]))
    assert len(refs) == 61
    for n in range(1, 6):
        shards = [[r for r in refs if in_shard(r, k, n)] for k in range(1, n + 1)]
        assert sum(len(s) for s in shards) == len(refs)
        assert sorted((r.path, r.out_stem) for s in shards for r in s) == sorted((r.path, r.out_stem) for r in refs)
        if n > 1:
            assert all(len(s) > 0 for s in shards)  # 61 inputs spread over <= 5 shards
        # stable: re-listing (in another order) gives the same assignment
        relisted = {r.out_stem: r for r in iter_inputs(["s"])}
        for k, shard in enumerate(shards, start=1):
            for r in shard:
                assert in_shard(relisted[r.out_stem], k, n)


def test_shard_of_a_ref_is_a_fixed_function():
    # independent of order and of anything machine-specific: same stem, same shard
    a = InputRef("/machine/one/cats/chelsea.jpg", "cats/chelsea")
    b = InputRef("elsewhere/cats/chelsea.jpg", "cats/chelsea")
    for n in range(1, 6):
        assert [in_shard(a, k, n) for k in range(1, n + 1)] == [in_shard(b, k, n) for k in range(1, n + 1)]
        assert sum(in_shard(a, k, n) for k in range(1, n + 1)) == 1
