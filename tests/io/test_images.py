"""Tests for gradcam_cli.io.images.decode: every input is generated in tmp_path."""

from __future__ import annotations

import os
import struct
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from gradcam_cli.errors import GradcamError, ImageError
from gradcam_cli.io.images import DEFAULT_MAX_PIXELS, decode
from gradcam_cli.io.pixels import BACKGROUND

RNG = np.random.default_rng(1234)


def _pattern(h=6, w=10):
    """A small asymmetric RGB pattern (random, so any flip/rotation shows)."""
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_array(arr, h, w):
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint8
    assert arr.shape == (h, w, 3)
    assert arr.flags["C_CONTIGUOUS"]
    assert arr.flags["WRITEABLE"]


def _error(path, **kw) -> ImageError:
    with pytest.raises(ImageError) as info:
        decode(str(path), **kw)
    err = info.value
    assert isinstance(err, GradcamError)
    assert err.path == str(path)
    assert "\n" not in err.message and err.message
    return err


# --------------------------------------------------------------------------- #
# formats and modes


@pytest.mark.parametrize("fmt,ext,kw", [
    ("PNG", "png", {}),
    ("BMP", "bmp", {}),
    ("TIFF", "tif", {}),
    ("WEBP", "webp", {"lossless": True}),
])
def test_lossless_rgb_formats_exact(tmp_path, fmt, ext, kw):
    a = _pattern()
    p = tmp_path / f"img.{ext}"
    Image.fromarray(a).save(p, fmt, **kw)
    out = decode(str(p))
    _check_array(out, 6, 10)
    np.testing.assert_array_equal(out, a)


def test_rgb_jpeg_close(tmp_path):
    a = np.zeros((32, 48, 3), np.uint8)
    a[:, :24] = (200, 30, 40)
    a[:, 24:] = (20, 180, 90)
    p = tmp_path / "img.jpg"
    Image.fromarray(a).save(p, quality=95)
    out = decode(str(p))
    _check_array(out, 32, 48)
    # away from the block edge the colours are accurate
    assert np.abs(out[4:28, 2:18].astype(int) - (200, 30, 40)).max() <= 6
    assert np.abs(out[4:28, 30:46].astype(int) - (20, 180, 90)).max() <= 6


def test_gif_exact(tmp_path):
    pal = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
    idx = RNG.integers(0, 4, (5, 7), dtype=np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(pal.flatten().tolist())
    p = tmp_path / "img.gif"
    im.save(p)
    out = decode(str(p))
    _check_array(out, 5, 7)
    np.testing.assert_array_equal(out, pal[idx])


def test_mode_1(tmp_path):
    bits = np.array([[0, 1, 1], [1, 0, 0]], bool)
    p = tmp_path / "bw.png"
    Image.fromarray(bits).save(p)
    assert Image.open(p).mode == "1"
    out = decode(str(p))
    _check_array(out, 2, 3)
    np.testing.assert_array_equal(out, np.repeat((bits * 255).astype(np.uint8)[..., None], 3, 2))


def test_mode_L(tmp_path):
    g = RNG.integers(0, 256, (4, 5), dtype=np.uint8)
    p = tmp_path / "grey.png"
    Image.fromarray(g, "L").save(p)
    out = decode(str(p))
    np.testing.assert_array_equal(out, np.stack([g, g, g], axis=2))


def test_mode_P_without_transparency(tmp_path):
    pal = [(1, 2, 3), (250, 100, 0), (0, 0, 0)]
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([c for rgb in pal for c in rgb])
    p = tmp_path / "pal.png"
    im.save(p)
    assert Image.open(p).mode == "P"
    out = decode(str(p))
    np.testing.assert_array_equal(out, np.array(pal, np.uint8)[idx])


def test_mode_P_with_transparency_index(tmp_path):
    pal = [(10, 20, 30), (250, 100, 0), (0, 0, 0)]
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([c for rgb in pal for c in rgb])
    p = tmp_path / "pal_t.png"
    im.save(p, transparency=2)
    reopened = Image.open(p)
    assert reopened.mode == "P" and reopened.info["transparency"] == 2
    out = decode(str(p))
    expected = np.array(pal, np.uint8)[idx]
    expected[idx == 2] = BACKGROUND
    np.testing.assert_array_equal(out, expected)
    assert tuple(out[0, 2]) == (255, 255, 255)
    assert tuple(out[0, 0]) == (10, 20, 30)


def test_mode_PA(tmp_path):
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    alpha = np.array([[255, 0], [255, 0]], np.uint8)
    im = Image.merge("PA", [Image.fromarray(idx, "L"), Image.fromarray(alpha, "L")])
    im.putpalette([200, 10, 10, 10, 200, 10])
    p = tmp_path / "pa.tif"
    im.save(p)
    assert Image.open(p).mode == "PA"
    out = decode(str(p))
    np.testing.assert_array_equal(out[0, 0], (200, 10, 10))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
    np.testing.assert_array_equal(out[1, 0], (10, 200, 10))
    np.testing.assert_array_equal(out[1, 1], (255, 255, 255))


def test_rgba_composited_on_white(tmp_path):
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0]],
                     [[200, 100, 0, 128], [0, 0, 0, 0]]], np.uint8)
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p)
    out = decode(str(p))
    _check_array(out, 2, 2)
    assert BACKGROUND == (255, 255, 255)
    assert tuple(out[0, 0]) == (10, 20, 30)  # opaque: unchanged
    assert tuple(out[0, 1]) == (255, 255, 255)  # fully transparent: white
    assert tuple(out[1, 1]) == (255, 255, 255)
    # half transparent: round((v * a + 255 * (255 - a)) / 255)
    expected = [round((v * 128 + 255 * 127) / 255) for v in (200, 100, 0)]
    assert list(out[1, 0]) == expected


def test_LA_composited_on_white(tmp_path):
    la = np.array([[[40, 255], [40, 0]]], np.uint8)
    p = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(p)
    out = decode(str(p))
    np.testing.assert_array_equal(out, [[[40, 40, 40], [255, 255, 255]]])


def test_16bit_png_scaled_not_clipped(tmp_path):
    vals = np.array([[0, 255, 256, 0x8080], [0x7FFF, 0xFF00, 0xFFFF, 1000]], np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(vals).save(p)
    assert Image.open(p).mode == "I;16"
    out = decode(str(p))
    expected = (vals >> 8).astype(np.uint8)
    np.testing.assert_array_equal(out, np.stack([expected] * 3, axis=2))
    assert out[0, 1, 0] == 0  # 255 of 65535 is nearly black, not clipped to white
    assert out[1, 2, 0] == 255


def test_16bit_big_endian_tiff(tmp_path):
    vals = np.array([[0, 0x0100, 0xABCD], [0xFFFF, 0x00FF, 0x1234]], np.uint16)
    im = Image.frombytes("I;16B", (3, 2), vals.astype(">u2").tobytes())
    p = tmp_path / "g16b.tif"
    im.save(p)
    assert Image.open(p).mode == "I;16B"
    out = decode(str(p))
    np.testing.assert_array_equal(out[..., 0], (vals >> 8).astype(np.uint8))


def test_mode_I_16bit_values_from_pgm(tmp_path):
    # A 16-bit PGM is decoded by Pillow as mode "I" with no bit-depth metadata.
    vals = np.array([[0, 300, 0x8000], [0xFFFF, 0x00FF, 0x4000]], np.uint16)
    p = tmp_path / "g16.pgm"
    Image.fromarray(vals).save(p)
    assert Image.open(p).mode == "I"
    out = decode(str(p))
    np.testing.assert_array_equal(out[..., 1], (vals >> 8).astype(np.uint8))


def test_mode_I_32bit_signed_tiff(tmp_path):
    vals = np.array([[-(2**31), 0, 2**31 - 1]], np.int32)
    p = tmp_path / "i32.tif"
    Image.fromarray(vals, "I").save(p)
    assert Image.open(p).mode == "I"
    out = decode(str(p))
    np.testing.assert_array_equal(out[0, :, 2], [0, 128, 255])


def test_mode_F_unit_range(tmp_path):
    vals = np.array([[0.0, 0.5, 1.0], [0.25, 0.75, 0.1]], np.float32)
    p = tmp_path / "f.tif"
    Image.fromarray(vals, "F").save(p)
    assert Image.open(p).mode == "F"
    out = decode(str(p))
    np.testing.assert_array_equal(out[..., 0], np.rint(vals * 255).astype(np.uint8))


def test_mode_F_byte_range_and_nan(tmp_path):
    vals = np.array([[0.0, 12.4, 254.6, np.nan]], np.float32)
    p = tmp_path / "f255.tif"
    Image.fromarray(vals, "F").save(p)
    out = decode(str(p))
    np.testing.assert_array_equal(out[0, :, 0], [0, 12, 255, 0])


def test_cmyk_jpeg_pure_red(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95)
    assert Image.open(p).mode == "CMYK"
    out = decode(str(p))
    _check_array(out, 16, 16)
    assert np.abs(out.astype(int) - (255, 0, 0)).max() <= 3


def test_cmyk_jpeg_two_colours(tmp_path):
    # left: pure cyan ink -> (0, 255, 255); right: 50% black -> mid grey
    im = Image.new("CMYK", (32, 16), (255, 0, 0, 0))
    im.paste((0, 0, 0, 128), (16, 0, 32, 16))
    p = tmp_path / "cmyk2.jpg"
    im.save(p, quality=100)
    out = decode(str(p)).astype(int)
    assert np.abs(out[4:12, 2:12] - (0, 255, 255)).max() <= 4
    assert np.abs(out[4:12, 20:30] - (127, 127, 127)).max() <= 4


# -- a minimal baseline JPEG writer, to produce an Adobe YCCK file (Pillow
#    cannot write one). Uniform colour, all-ones quantisation: DC only.

def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


class _BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value: int, length: int):
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)  # byte stuffing
                self.acc = self.n = 0

    def flush(self) -> bytes:
        while self.n:
            self.put(1, 1)
        return bytes(self.out)


def _uniform_jpeg(samples, size=16, adobe_transform=None) -> bytes:
    nc = len(samples)
    out = b"\xff\xd8"
    if adobe_transform is not None:
        out += _segment(0xEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, adobe_transform))
    out += _segment(0xDB, b"\x00" + b"\x01" * 64)
    sof = struct.pack(">BHHB", 8, size, size, nc)
    for c in range(nc):
        sof += bytes([c + 1, 0x11, 0])
    out += _segment(0xC0, sof)
    # DC: categories 0..11 as 4-bit codes; AC: only EOB, as the 1-bit code "0"
    out += _segment(0xC4, b"\x00" + bytes([0, 0, 0, 12] + [0] * 12) + bytes(range(12)))
    out += _segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    out += _segment(0xDA, bytes([nc]) + b"".join(bytes([c + 1, 0]) for c in range(nc)) + bytes([0, 63, 0]))
    bits = _BitWriter()
    pred = [0] * nc
    for _ in range((size // 8) ** 2):
        for c, v in enumerate(samples):
            dc = 8 * (int(v) - 128)
            diff, pred[c] = dc - pred[c], dc
            cat = abs(diff).bit_length()
            bits.put(cat, 4)
            if cat:
                bits.put(diff if diff >= 0 else diff + (1 << cat) - 1, cat)
            bits.put(0, 1)  # EOB
    return out + bits.flush() + b"\xff\xd9"


def _ycck_samples(c, m, y, k):
    """Adobe YCCK samples for ink values (Adobe stores CMYK inverted)."""
    sc, sm, sy, sk = 255 - c, 255 - m, 255 - y, 255 - k
    r, g, b = 255 - sc, 255 - sm, 255 - sy
    yy = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    return [round(yy), round(cb), round(cr), sk]


def test_adobe_cmyk_jpeg_handwritten(tmp_path):
    p = tmp_path / "adobe_cmyk.jpg"
    p.write_bytes(_uniform_jpeg([255, 0, 0, 255], adobe_transform=0))  # stored inverted
    out = decode(str(p))
    _check_array(out, 16, 16)
    assert np.abs(out.astype(int) - (255, 0, 0)).max() <= 2


@pytest.mark.parametrize("ink,rgb", [
    ((0, 255, 255, 0), (255, 0, 0)),      # red
    ((255, 0, 255, 0), (0, 255, 0)),      # green
    ((0, 0, 0, 255), (0, 0, 0)),          # black
])
def test_adobe_ycck_jpeg(tmp_path, ink, rgb):
    p = tmp_path / "ycck.jpg"
    p.write_bytes(_uniform_jpeg(_ycck_samples(*ink), adobe_transform=2))
    im = Image.open(p)
    assert im.mode == "CMYK" and im.info.get("adobe_transform") == 2
    out = decode(str(p))
    _check_array(out, 16, 16)
    assert np.abs(out.astype(int) - rgb).max() <= 3


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 4), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(p).n_frames == 3
    out = decode(str(p))
    _check_array(out, 4, 6)
    assert (out == (255, 0, 0)).all()


def test_animated_webp_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 4), c) for c in ((0, 0, 255), (255, 0, 0))]
    p = tmp_path / "anim.webp"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, lossless=True)
    assert Image.open(p).n_frames == 2
    out = decode(str(p))
    assert (out == (0, 0, 255)).all()


def test_animated_png_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 4), c) for c in ((0, 200, 0), (255, 0, 0))]
    p = tmp_path / "anim.png"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(p).n_frames == 2
    out = decode(str(p))
    assert (out == (0, 200, 0)).all()


def test_gif_with_transparency(tmp_path):
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 200, 9, 9, 9])
    p = tmp_path / "t.gif"
    im.save(p, transparency=1)
    out = decode(str(p))
    np.testing.assert_array_equal(out, [[[0, 0, 200], [255, 255, 255]], [[255, 255, 255], [0, 0, 200]]])


# --------------------------------------------------------------------------- #
# EXIF orientation

_ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),                      # rotate 90 clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),                       # rotate 90 counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(_ORIENT))
def test_exif_orientation_png_exact(tmp_path, orientation):
    a = _pattern(3, 5)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.png"
    im.save(p, exif=exif.tobytes())
    out = decode(str(p))
    expected = np.ascontiguousarray(_ORIENT[orientation](a))
    _check_array(out, *expected.shape[:2])
    np.testing.assert_array_equal(out, expected)


def test_exif_orientation_6_jpeg_marked_corner(tmp_path):
    # stored 64 wide x 32 high, red block in the stored top-left corner
    a = np.full((32, 64, 3), 255, np.uint8)
    a[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot6.jpg"
    Image.fromarray(a).save(p, quality=95, exif=exif.tobytes())
    out = decode(str(p))
    # displayed: 32 wide x 64 high, the marked corner is now top-right
    _check_array(out, 64, 32)
    assert np.abs(out[2:14, 18:30].astype(int) - (255, 0, 0)).max() <= 8
    assert np.abs(out[2:14, 2:14].astype(int) - (255, 255, 255)).max() <= 8
    assert np.abs(out[50:62, 18:30].astype(int) - (255, 255, 255)).max() <= 8


# --------------------------------------------------------------------------- #
# bad inputs


def test_missing(tmp_path):
    err = _error(tmp_path / "nope.jpg")
    assert err.kind == "missing"


def test_missing_parent_is_a_file(tmp_path):
    f = tmp_path / "file.jpg"
    f.write_bytes(b"x")
    assert _error(f / "child.jpg").kind == "missing"


def test_vanished_between_listing_and_reading(tmp_path):
    from gradcam_cli.io.discover import iter_inputs

    p = tmp_path / "gone.png"
    Image.new("RGB", (2, 2)).save(p)
    refs = list(iter_inputs([str(tmp_path)]))
    assert [r.out_stem for r in refs] == ["gone"]
    p.unlink()
    assert _error(refs[0].path).kind == "missing"


def test_vanished_between_stat_and_open(tmp_path, monkeypatch):
    import builtins

    import gradcam_cli.io.images as images

    p = tmp_path / "race.png"
    Image.new("RGB", (2, 2)).save(p)
    real_open = builtins.open

    def vanishing_open(file, *args, **kwargs):
        if str(file) == str(p):
            os.unlink(p)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(images, "open", vanishing_open, raising=False)
    assert _error(p).kind == "missing"


def test_directory_is_unreadable(tmp_path):
    d = tmp_path / "folder.jpg"
    d.mkdir()
    err = _error(d)
    assert err.kind == "unreadable"
    assert "directory" in err.message


def test_permission_denied(tmp_path):
    p = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(p)
    os.chmod(p, 0)
    try:
        try:
            with open(p, "rb"):
                can_read_anyway = True  # running as root: chmod 000 does not stop reading
        except PermissionError:
            can_read_anyway = False
        if can_read_anyway:
            # cannot test a real permission error here; check the other
            # ``unreadable`` case (a directory given as the path) instead
            d = tmp_path / "dir_instead.png"
            d.mkdir()
            assert _error(d).kind == "unreadable"
        else:
            err = _error(p)
            assert err.kind == "unreadable"
            assert "permission" in err.message.lower()
    finally:
        os.chmod(p, 0o644)


def test_fifo_is_unreadable_without_blocking(tmp_path):
    p = tmp_path / "pipe.jpg"
    os.mkfifo(p)
    assert _error(p).kind == "unreadable"


def test_empty(tmp_path):
    p = tmp_path / "zero.jpg"
    p.write_bytes(b"")
    err = _error(p)
    assert err.kind == "empty"


def test_text_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n")
    err = _error(p)
    assert err.kind == "not_an_image"


def _write_truncated(src, dst, keep):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg(tmp_path, keep):
    src = tmp_path / "full.jpg"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(src, quality=90)
    dst = tmp_path / "cut.jpg"
    _write_truncated(src, dst, keep)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    err = _error(dst)
    assert err.kind == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.95])
def test_truncated_png(tmp_path, keep):
    src = tmp_path / "full.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(src)
    dst = tmp_path / "cut.png"
    _write_truncated(src, dst, keep)
    assert _error(dst).kind == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_webp(tmp_path):
    src = tmp_path / "full.webp"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(src)
    dst = tmp_path / "cut.webp"
    _write_truncated(src, dst, 0.5)
    assert _error(dst).kind == "truncated"


def test_corrupt_png_data(tmp_path):
    src = tmp_path / "full.png"
    Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src)
    data = bytearray(src.read_bytes())
    start = data.index(b"IDAT") + 4
    for i in range(start + 2, start + 40):  # garble the zlib stream
        data[i] ^= 0x5A
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    assert _error(bad).kind == "corrupt"


def _png_header_only(width, height):
    import zlib

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # an IDAT with only the start of a zlib stream: the pixels are not there
    idat = zlib.compress(b"\x00" * 64)[:8]
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)


def test_too_large_small_limit(tmp_path):
    p = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(p)
    err = _error(p, max_pixels=1000)
    assert err.kind == "too_large"
    assert "1,200" in err.message and "1,000" in err.message
    assert "--max-pixels" in err.message
    # at the limit it is fine
    _check_array(decode(str(p), max_pixels=1200), 30, 40)


def test_too_large_checked_from_header_before_pixels(tmp_path):
    # A header that claims 100000 x 100000 pixels and has almost no pixel
    # data: too_large (from the header), not truncated, nothing allocated.
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(100_000, 100_000))
    assert DEFAULT_MAX_PIXELS == 178_956_970
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes
        err = _error(p)
    assert err.kind == "too_large"
    assert "10,000,000,000" in err.message


def test_pillow_limit_is_ours_not_pillows(tmp_path, monkeypatch):
    # Pillow's own limit is far below this image; ours allows it. No warning
    # or DecompressionBombError escapes, and Pillow's setting is restored.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    p = tmp_path / "medium.png"
    a = _pattern(30, 40)
    Image.fromarray(a).save(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = decode(str(p))
    np.testing.assert_array_equal(out, a)
    assert Image.MAX_IMAGE_PIXELS == 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _error(p, max_pixels=500).kind == "too_large"
    assert Image.MAX_IMAGE_PIXELS == 100


def test_decode_closes_file(tmp_path):
    p = tmp_path / "c.png"
    Image.new("RGB", (3, 3), (1, 2, 3)).save(p)
    fd_dir = "/proc/self/fd"
    before = len(os.listdir(fd_dir))
    for _ in range(20):
        decode(str(p))
    for _ in range(5):
        with pytest.raises(ImageError):
            decode(str(p), max_pixels=1)
    assert len(os.listdir(fd_dir)) <= before


def test_unicode_and_space_path(tmp_path):
    p = tmp_path / "chat d'été \"x\".png"
    Image.new("RGB", (2, 3), (9, 8, 7)).save(p)
    out = decode(str(p))
    _check_array(out, 3, 2)
    assert (out == (9, 8, 7)).all()
