"""A profile's token_grid / prefix_tokens: read as (h, w) and an integer, one-line errors otherwise,
and what GradCAM cuts a saved ViT with when its flags do not say otherwise."""

from __future__ import annotations

import pytest

from gradcam_cli.config.profiles import load_profile
from gradcam_cli.errors import ProfileError

GOOD = """name = "myvit"
model = "vit.keras"
target_layer = "block0_norm1"
preprocessing = "none"
"""


@pytest.mark.parametrize("text,grid,prefix", [
    (GOOD + 'token_grid = "2x8"\nprefix_tokens = 1\n', (2, 8), 1),
    (GOOD + "token_grid = [4, 4]\n", (4, 4), None),
    (GOOD, None, None),
])
def test_token_fields_are_read(tmp_path, text, grid, prefix):
    path = tmp_path / "myvit.toml"
    path.write_text(text)
    profile = load_profile(path)
    assert (profile.token_grid, profile.prefix_tokens) == (grid, prefix)


@pytest.mark.parametrize("extra,message", [
    ('token_grid = "14"\n', "field 'token_grid' must be 'HxW' or [height, width] in tokens, got '14'"),
    ("token_grid = [0, 4]\n", "field 'token_grid' must be 'HxW' or [height, width] in tokens, got [0, 4]"),
    ("prefix_tokens = -1\n", "field 'prefix_tokens' must be an integer >= 0, got -1"),
    ('prefix_tokens = "1"\n', "field 'prefix_tokens' must be an integer >= 0, got '1'"),
])
def test_bad_token_fields_are_one_line(tmp_path, extra, message):
    path = tmp_path / "myvit.toml"
    path.write_text(GOOD + extra)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(err.value) == f"{path}: {message}"


def test_a_profile_layout_reaches_the_cut(tmp_path):
    from transformer_builders import small_vit

    from gradcam_cli.cam import GradCAM

    small_vit(size=32, depth=1, prefix=1, pool="cls").save(tmp_path / "vit.keras")
    path = tmp_path / "myvit.toml"
    (tmp_path / "colours.txt").write_text("red\ngreen\nblue\n")
    path.write_text(GOOD + 'token_grid = "2x8"\nprefix_tokens = 1\nclasses = "colours.txt"\n')
    cam = GradCAM(profile=load_profile(path))
    assert cam.split.tokens.grid == (2, 8) and cam.describe()["tokens"] == {"prefix_tokens": 1, "grid": [2, 8]}
    assert GradCAM(profile=load_profile(path), token_grid=(4, 4)).split.tokens.grid == (4, 4)  # the flag wins
