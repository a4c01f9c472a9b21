"""What the library's ``GradCAM.explain`` accepts: every array form of an image gives the same maps,
anything else one ValueError."""

from __future__ import annotations

import numpy as np
import pytest

from builders import small_cnn


# ---------------------------------------------------------------------------
# 9. what the library's explain accepts


@pytest.fixture(scope="module")
def tiny_cam():
    from gradcam_cli.cam import GradCAM

    return GradCAM(model=small_cnn("softmax"), preprocessing="scale")


def test_explain_accepts_grey_rgba_and_float_with_a_range(tiny_cam):
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (30, 50), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    [reference] = tiny_cam.explain([rgb], top=2)
    opaque = np.dstack([rgb, np.full_like(grey, 255)])
    half = np.dstack([rgb, np.full_like(grey, 128)])
    on_white = ((rgb.astype(np.uint32) * 128 + 255 * 127 + 127) // 255).astype(np.uint8)
    same = {
        "(H, W)": tiny_cam.explain([grey], top=2),
        "(H, W, 1)": tiny_cam.explain([grey[..., None]], top=2),
        "(H, W, 4) opaque": tiny_cam.explain([opaque], top=2),
        "float 0..1": tiny_cam.explain([rgb.astype(np.float32) / 255], top=2, value_range=(0, 1)),
        "float 0..255": tiny_cam.explain([rgb.astype(np.float64)], top=2, value_range=(0, 255)),
        "(N, H, W, C) batch": tiny_cam.explain(rgb[None], top=2),
    }
    for what, [result] in same.items():
        np.testing.assert_array_equal(result.maps, reference.maps, err_msg=what)
        assert result.predictions == reference.predictions, what
    [blended] = tiny_cam.explain([half], top=2)
    [expected] = tiny_cam.explain([on_white], top=2)
    np.testing.assert_array_equal(blended.maps, expected.maps)  # alpha composited on white


@pytest.mark.parametrize("image,kwargs,message", [
    (np.zeros((8, 8, 3), np.float32), {},
     "got an array of shape (8, 8, 3) and dtype float32: a float image needs value_range=(0, 1) or (0, 255) to "
     "say its scale"),
    (np.zeros((8, 8, 2), np.uint8), {}, "images must be {accepted}; got an array of shape (8, 8, 2) and dtype uint8"),
    (np.zeros((8, 8, 3, 1), np.uint8), {},
     "images must be {accepted}; got an array of shape (8, 8, 3, 1) and dtype uint8"),
    (np.zeros(8, np.uint8), {}, "images must be {accepted}; got an array of shape (8,) and dtype uint8"),
    (np.zeros((8, 8, 3), np.int16), {}, "images must be {accepted}; got an array of shape (8, 8, 3) and dtype int16"),
    (np.zeros((8, 8, 3), bool), {}, "images must be {accepted}; got an array of shape (8, 8, 3) and dtype bool"),
    (np.zeros((8, 8, 3), np.uint8), {"value_range": (0, 1)},
     "images must be {accepted}; got an array of shape (8, 8, 3) and dtype uint8 and value_range=(0, 1)"),
    (np.zeros((8, 8, 3), np.float32), {"value_range": (-1, 1)}, "value_range must be (0, 1) or (0, 255), got (-1, 1)"),
    (np.full((8, 8, 3), np.nan, np.float32), {"value_range": (0, 1)},
     "got an array of shape (8, 8, 3) and dtype float32: it holds NaN or infinite values"),
])
def test_explain_refuses_other_arrays_with_one_line(tiny_cam, image, kwargs, message):
    from gradcam_cli.io.pixels import ACCEPTED_ARRAYS

    with pytest.raises(ValueError) as info:
        tiny_cam.explain([image], **kwargs)
    assert str(info.value) == message.format(accepted=ACCEPTED_ARRAYS)


def test_explain_refuses_one_image_given_without_a_list(tiny_cam):
    with pytest.raises(ValueError) as info:
        tiny_cam.explain(np.zeros((8, 8, 3), np.uint8))
    assert str(info.value) == ("images must be a list of images or an (N, H, W, C) batch; got one array of shape "
                               "(8, 8, 3) and dtype uint8: pass [image] for one image")
