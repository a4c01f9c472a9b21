"""Registry validation: each broken profile gives one line naming the file and the field."""

from __future__ import annotations

import pytest

from gradcam_cli.errors import ProfileError
from gradcam_cli.config.profiles import get_profile, load_profile, load_registry

GOOD = """name = "mine"
builder = "keras.applications.MobileNetV2"
input_size = 160
target_layer = "out_relu"
preprocessing = "tf"
"""

BROKEN = [
    (GOOD + 'target_layr = "x"\n', "unknown key 'target_layr' (did you mean 'target_layer'?)"),
    (GOOD.replace('builder = "keras.applications.MobileNetV2"\n', ""), "give exactly one of 'builder' (a model-building function), 'model' (a .keras / .h5 file) or 'preset'"),
    (GOOD + 'preset = "vit_base_patch16_224_imagenet"\n', "give exactly one of 'builder'"),
    (GOOD.replace('builder = "keras.applications.MobileNetV2"', 'preset = "./my preset"'),
     "field 'preset' must be a keras-hub preset name (letters, digits, '_', '-', '.'), got './my preset'; a local preset "
     "directory is a saved model: pass it with --model"),
    (GOOD.replace("input_size = 160", ""), "missing required field 'input_size'"),
    (GOOD.replace("input_size = 160", 'input_size = "160px"'),
     "field 'input_size' must be an integer or [height, width], got '160px'"),
    (GOOD.replace("input_size = 160", "input_size = [160, 160, 3]"),
     "field 'input_size' must be an integer or [height, width], got [160, 160, 3]"),
    (GOOD.replace("input_size = 160", "input_size = 8"), "field 'input_size' must be between 32 and 4096 pixels, got [8, 8]"),
    (GOOD.replace("input_size = 160", "input_size = 0"), "field 'input_size' must be between 32 and 4096 pixels, got [0, 0]"),
    (GOOD.replace('preprocessing = "tf"', 'preprocessing = "cafe"'),
     "field 'preprocessing' must be one of caffe, tf, torch, none, scale, mean_std, converter, got 'cafe' (did you mean 'caffe' or 'scale'?)"),
    (GOOD.replace('preprocessing = "tf"', 'preprocessing = "mean_std"'), "preprocessing 'mean_std' needs both 'mean' and 'std'"),
    (GOOD + "mean = 127\nstd = 128\n", "'mean' and 'std' only apply to preprocessing 'mean_std', not 'tf'"),
    (GOOD.replace('preprocessing = "tf"', 'preprocessing = "mean_std"') + "mean = [1, 2]\nstd = 1\n",
     "field 'mean' must be a number or a list of 3 numbers (R, G, B), got [1, 2]"),
    (GOOD.replace('preprocessing = "tf"', 'preprocessing = "mean_std"') + "mean = 0\nstd = 0\n",
     "field 'std' must be positive, got [0, 0, 0]"),
    (GOOD.replace('target_layer = "out_relu"', "target_layer = 5"), "field 'target_layer' must be a non-empty string, got 5"),
    (GOOD.replace('name = "mine"', 'name = "my model"'), "field 'name' may hold letters, digits, '_', '-' and '.', got 'my model'"),
    (GOOD.replace('builder = "keras.applications.MobileNetV2"', 'builder = "MobileNetV2"'),
     "field 'builder' must be 'keras.applications.NAME' or 'module:function', got 'MobileNetV2'"),
    (GOOD + "input_size = 3\n", "not valid TOML"),
    ("name = \n", "not valid TOML"),
]


@pytest.mark.parametrize("text,message", BROKEN)
def test_broken_profile_gives_one_line_naming_file_and_field(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: ")
    assert message in line


def test_good_profile_loads(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(GOOD.replace("input_size = 160", "input_size = [160, 192]"))
    profile = load_profile(path)
    assert profile.input_size == (160, 192) and profile.classes == "imagenet" and profile.source == str(path)


def test_user_dirs_from_flag_and_environment(tmp_path, monkeypatch):
    flag_dir, env_dir = tmp_path / "flag", tmp_path / "env"
    flag_dir.mkdir(), env_dir.mkdir()
    (flag_dir / "a.toml").write_text(GOOD)
    (env_dir / "b.toml").write_text(GOOD.replace('"mine"', '"theirs"'))
    monkeypatch.setenv("GRADCAM_CONFIG_DIR", str(env_dir))
    registry = load_registry([flag_dir])
    assert {"mine", "theirs", "vgg16", "efficientnet_lite0"} <= set(registry)


def test_duplicate_names_are_an_error(tmp_path):
    (tmp_path / "a.toml").write_text(GOOD.replace('"mine"', '"vgg16"'))
    with pytest.raises(ProfileError, match=r"a\.toml: backbone name 'vgg16' is already defined in .*vgg16\.toml; rename one"):
        load_registry([tmp_path])


def test_missing_config_dir_is_an_error(tmp_path):
    with pytest.raises(ProfileError, match="config directory does not exist"):
        load_registry([tmp_path / "nope"])


def test_unknown_backbone_suggests_close_match(registry):
    with pytest.raises(ProfileError, match=r"unknown backbone 'resnet05' \(did you mean 'resnet50'"):
        get_profile(registry, "resnet05")
