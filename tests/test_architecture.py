"""The seams other work builds on: method hooks, the per-batch step, typed settings, and the
layering rules of the package (checked on the source, so a wrong import fails here)."""

from __future__ import annotations

import ast
import json
import pathlib

import keras
import numpy as np
import pytest
from helpers import assert_close, assert_same_pictures, assert_same_raws, invoke, random_images

from gradcam_cli.engine.explainer import Explainer
from gradcam_cli.methods import get_method, method_names, register
from gradcam_cli.methods.registry import unregister
from gradcam_cli.models.split import split_model

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "gradcam_cli"
#: stage -> the stages it may import (besides itself); io, render and the ground floor (settings,
#: results, errors, _version) are leaves for all. ``cam`` is the front door, gradcam_cli/cam.py; ``cam_targets`` its door for other targets.
ALLOWED = {
    "cli": {"cam", "cam_targets", "run", "methods", "metrics", "models", "config", "io", "render", "report", "inspect",
            "targets", "trackers"},
    "run": {"cam", "cam_targets", "engine", "methods", "models", "config", "io", "render", "metrics", "targets"},
    "cam": {"engine", "methods", "models", "config", "io", "render"},
    "cam_targets": {"cam", "cam_multi", "engine", "methods", "models", "config", "io", "render", "targets"},
    "cam_multi": {"engine", "methods", "models", "config", "io", "targets"},
    "targets": {"methods", "models", "config", "io"},
    "engine": {"methods", "models", "config", "io", "render"},
    "methods": {"config"},
    "models": {"config", "io"},
    "config": set(),
    "io": {"config"},
    "render": set(),
    "inspect": {"models", "config", "io", "render"},
    "metrics": {"io", "render", "config"},
    "report": {"io", "config"},
    "trackers": {"run", "io", "render", "config"},
    "keras": {"engine", "models", "render", "trackers"},  # gradcam_cli/keras.py: the training callback
}
#: single modules a stage may import from a stage it may not: the report finds a run's grids and
#: GIFs by the run's naming rule (a leaf: it imports no gradcam_cli module, checked below)
ALLOWED_MODULES = {"report": {"gradcam_cli.run.naming"}}
#: the ground floor: root modules that import no stage
GROUND = ("settings", "results", "errors", "_version")


def stage_of(path: pathlib.Path) -> str | None:
    """A module's stage: its folder under the package, or ``cam`` / a ground-floor name at the root."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imports_of(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_cli_imports_click_and_tqdm_and_stages_import_one_way():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        stage = stage_of(path)
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in ("click", "tqdm") and stage != "cli":
                problems.append(f"{path.relative_to(PACKAGE)} imports {name}")
            if name.startswith("gradcam_cli.") and stage in ALLOWED:
                target = name.split(".")[1]
                if name in ALLOWED_MODULES.get(stage, ()):
                    continue
                if target in ALLOWED and target != stage and target not in ALLOWED[stage]:
                    problems.append(f"{path.relative_to(PACKAGE)} ({stage}) imports {name}")
    assert problems == []
    assert len(list(PACKAGE.rglob("*.py"))) > 20  # the walk saw the package
    for module in set().union(*ALLOWED_MODULES.values()):  # each one allowed on its own is a leaf
        path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
        assert [n for n in imports_of(path) if n.startswith("gradcam_cli")] == [], module


def test_the_ground_floor_imports_no_stage():
    """The root records (settings, results, errors, the version) are leaves: every stage may import
    them, and they import neither a stage nor the front door (the facade ``__init__`` imports
    ``cam`` lazily; ``__main__``, ``python -m gradcam_cli``, is the CLI's door, not a floor)."""
    problems = []
    for path in PACKAGE.glob("*.py"):
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] != "gradcam_cli" or len(parts) < 2 or parts[1] in GROUND:
                continue
            if path.stem in GROUND or (path.name == "__init__.py" and name != "gradcam_cli.cam"):
                problems.append(f"{path.name} imports {name}")
    assert problems == []
    assert {f"{name}.py" for name in GROUND} <= {p.name for p in PACKAGE.glob("*.py")}


#: the size rule (issue 21 item 7): no module over MAX_MODULE_LINES lines, no function or method
#: over MAX_FUNCTION_LINES lines (from its ``def`` line to its last line, decorators excluded)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def functions_of(path: pathlib.Path) -> list[tuple[str, int]]:
    """(qualified name, length in lines) of every function and method in a module, nested ones too."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((prefix + child.name, child.end_lineno - child.lineno + 1))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def test_no_module_is_over_400_lines():
    oversize = {}
    for path in PACKAGE.rglob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            oversize[path.relative_to(PACKAGE).as_posix()] = lines
    assert oversize == {}


def test_no_function_is_over_80_lines():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for name, lines in functions_of(path):
            if lines > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(PACKAGE).as_posix()}:{name}"] = lines
    assert long == {}
    assert any(name == "split_model" for name, _ in functions_of(PACKAGE / "models" / "split.py"))  # the walk saw it


def test_images_are_encoded_in_render_only_and_the_package_holds_no_benchmarks():
    """One PNG and one JPEG encoder (render/overlay.py); benchmark code lives in benchmarks/, not the wheel."""
    encoders = []
    for path in PACKAGE.rglob("*.py"):
        stage = stage_of(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "imencode" and stage != "render":
                encoders.append(str(path.relative_to(PACKAGE)))
    assert encoders == []
    assert [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*bench*.py")] == []


def gap_model() -> keras.Model:
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(inp)
    x = keras.layers.GlobalAveragePooling2D()(a)
    out = keras.layers.Dense(4, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out)


@pytest.fixture
def temporary_methods():
    import tensorflow as tf

    @register("test_spatial", kind="spatial")
    def spatial(acts, grads):
        """sum_k g * A, per position."""
        return tf.reduce_sum(grads * acts, axis=-1)

    @register("test_forward", kind="spatial", needs_gradients=False)
    def forward(acts, grads):
        """The channel mean of the activations; no gradients."""
        assert grads is None
        return tf.reduce_mean(acts, axis=-1)

    yield
    unregister("test_spatial")
    unregister("test_forward")


def test_spatial_and_gradient_free_methods_go_through_the_hooks(temporary_methods):
    model = gap_model()
    split = split_model(model, "target")
    x = random_images(3, 8, seed=4)
    acts = keras.Model(model.inputs, model.get_layer("target").output)(x).numpy()  # (3, 8, 8, 5)
    kernel = model.get_layer("predictions").kernel.numpy()  # (5, 4)

    out = Explainer(split, classes=[1, 3], method="test_spatial")(x)
    for b in range(3):
        for n, c in enumerate([1, 3]):
            raw = (acts[b] * (kernel[:, c] / 64.0)).sum(-1)  # dy_c/dA = W[:, c] / (h w) through GAP
            expected = np.maximum(raw, 0) / max(np.maximum(raw, 0).max(), 1e-30)
            np.testing.assert_allclose(out.maps[b, n], expected, atol=1e-5)

    forward = Explainer(split, top=2, method="test_forward")
    assert forward.strategy == "forward"
    result = forward(x)
    for b in range(3):
        mean = np.maximum(acts[b].mean(-1), 0)
        for n in range(2):
            np.testing.assert_allclose(result.maps[b, n], mean / mean.max(), atol=1e-5)
    np.testing.assert_array_equal(result.classes, np.argsort(-result.scores, axis=1)[:, :2])


def test_unknown_method_names_the_list_and_a_close_match():
    assert "gradcam" in method_names()
    with pytest.raises(ValueError, match=r"unknown CAM method 'gradcm' \(did you mean 'gradcam'\?\); choose one of: gradcam"):
        get_method("gradcm")
    result = invoke("explain", "sample_images/", "--method", "gradcm")
    assert result.exit_code == 2
    assert "Invalid value for '--method': unknown CAM method 'gradcm' (did you mean 'gradcam'?)" in result.stderr


def test_the_per_batch_step_writes_what_the_folder_runner_writes(tmp_path, lite0_cam):
    from gradcam_cli.io.discover import iter_inputs
    from gradcam_cli.run.folder import run_folder
    from gradcam_cli.settings import RunOptions, RunSettings
    from gradcam_cli.run.step import BatchStep, decode_item

    refs = list(iter_inputs(["sample_images"]))
    settings = RunSettings.from_json({"top": 2, "save_raw": True})
    summary = run_folder(lite0_cam, refs, settings, RunOptions(out_dir=tmp_path / "folder", batch_size=3))
    assert summary.done == 4
    folder_records = json.loads((tmp_path / "folder" / "predictions.json").read_text())["images"]

    step = BatchStep(lite0_cam, settings, tmp_path / "step")
    records = step([decode_item(ref, lite0_cam.profile) for ref in refs])  # no executor: plain records
    assert_close(records, folder_records)  # batches of 4 and 3: equal to the last digits' noise
    for record in records:
        for entry in record["predictions"]:
            assert_same_raws(tmp_path / "step" / entry["raw"], tmp_path / "folder" / entry["raw"], entry["raw"])
            assert_same_pictures(tmp_path / "step" / entry["overlay"], tmp_path / "folder" / entry["overlay"],
                                 entry["overlay"])

    header = json.loads((tmp_path / "folder" / "predictions.json").read_text())
    assert header["method"] == "gradcam"
    assert header["options"]["top"] == 2 and header["options"]["model.backbone"] == "efficientnet_lite0"
    run_file = json.loads((tmp_path / "folder" / ".gradcam-run.json").read_text())
    assert run_file["settings"] == {k: v for k, v in header["options"].items() if k not in ("batch_size", "shard")}


def test_baseline_methods_for_comparison_overlays(tmp_path):
    """`explain --method random --method centre`: class-agnostic maps; centre is the Gaussian of its
    definition, random is reproducible per image and differs between images."""
    import numpy as np

    model = gap_model()
    split = split_model(model, "target")
    x = random_images(3, 8, seed=9)
    out = Explainer(split, top=2, method=["random", "centre"])(x)
    centre = out.method_maps[:, :, 1]
    y = np.arange(8) - 3.5
    sigma = 2.0
    expected = np.exp(-(y[:, None] ** 2 + y[None, :] ** 2) / (2 * sigma * sigma))
    np.testing.assert_allclose(centre[0, 0], expected / expected.max(), atol=1e-5)
    noise = out.method_maps[:, :, 0]
    assert np.all((noise >= 0) & (noise <= 1)) and noise[0, 0].std() > 0.1
    np.testing.assert_array_equal(noise[:, 0], noise[:, 1])  # the same for every class of an image
    assert not np.allclose(noise[0, 0], noise[1, 0])  # differs between images
    again = Explainer(split, top=2, method=["random", "centre"])(x[::-1])  # another batch order
    np.testing.assert_allclose(again.method_maps[::-1, :, 0], noise, atol=1e-6)


def test_no_test_file_imports_another():
    """Shared test code lives in helpers.py, builders.py and reference.py, never in a test file."""
    tests = pathlib.Path(__file__).resolve().parent
    names = {p.stem for p in tests.rglob("test_*.py")}
    problems = [f"{p.name} imports {name}" for p in tests.rglob("test_*.py") for name in imports_of(p)
                if name.split(".")[0] in names]
    assert problems == []


def test_tests_mirror_the_package():
    """Each test file lives in the folder of the stage it tests (the ground floor's and the layering
    rule's at tests/ itself), and no two share a name (tests/ has no __init__.py files)."""
    tests = pathlib.Path(__file__).resolve().parent
    files = list(tests.rglob("test_*.py"))
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {p.parent.name for p in files if p.parent != tests} <= stages
    assert len({p.name for p in files}) == len(files)
    assert len([p for p in files if p.parent != tests]) > 30  # the walk saw the folders
