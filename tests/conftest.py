"""Shared fixtures. Tests never touch the user's caches: both live in a session temp dir."""

from __future__ import annotations

import os
import pathlib
import tempfile

_SESSION_TMP = pathlib.Path(tempfile.mkdtemp(prefix="gradcam-tests-"))
os.environ.setdefault("XDG_CACHE_HOME", str(_SESSION_TMP / "cache"))
os.environ["KERAS_HOME"] = str(_SESSION_TMP / "keras")  # empty: Keras-download weights are absent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def registry():
    from gradcam_cli.config.profiles import load_registry

    return load_registry()


@pytest.fixture(scope="session")
def lite0_cam():
    """The real offline default: EfficientNet-Lite0 with converted ImageNet weights."""
    from gradcam_cli.cam import GradCAM

    return GradCAM("efficientnet_lite0")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model options, folder of 6 images) for a fast own-model run."""
    from builders import small_cnn
    from helpers import make_images

    root = tmp_path_factory.mktemp("tiny")
    small_cnn("softmax").save(root / "model.keras")
    (root / "labels.txt").write_text("red\ngreen\nblue\n")
    images = make_images(root / "images", 6)
    return ["--model", root / "model.keras", "--labels", root / "labels.txt", "--preprocess", "scale", "--top", 1,
            "-q"], images


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray per test module (2 CPUs, no dashboard); its address, for drivers in other processes."""
    import ray  # the [ray] extra (CI installs it): a missing Ray fails here, loudly

    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway local cluster; other drivers connect without a token
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
