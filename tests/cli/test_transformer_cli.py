"""Users' own transformers through the CLI: a functional ViT from MultiHeadAttention layers saved as
.keras and .h5, and one nested as the backbone of another model, explain with --model and write
overlays; the token layout flags reach the run header; refusals are one line and exit 2."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from helpers import invoke
from PIL import Image
from transformer_builders import small_vit

SIZE = 32


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit")
    small_vit(size=SIZE, depth=2, prefix=1, pool="cls", seed=1).save(root / "vit.keras")
    small_vit(size=SIZE, depth=2, positions=False, seed=2).save(root / "vit.h5")  # .h5: layers only
    inner = small_vit(size=SIZE, depth=2, prefix=1, pool="cls", seed=3, name="inner")
    backbone = keras.Model(inner.inputs[0], inner.get_layer("norm").output, name="vit_backbone")
    inp = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(backbone(inp))
    keras.Model(inp, keras.layers.Dense(4, activation="softmax", name="predictions")(pooled),
                name="outer").save(root / "nested.keras")
    keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")],
                     name="cnn").save(root / "cnn.keras")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    return root


@pytest.mark.parametrize("name,layer,prefix", [("vit.keras", "block1_norm1", 1), ("vit.h5", "norm", 0),
                                                ("nested.keras", "vit_backbone/norm", 1)])
def test_a_saved_vit_explains_with_model_and_writes_overlays(saved, tmp_path, name, layer, prefix):
    out = tmp_path / "out"
    result = invoke("explain", saved / "images", "--model", saved / name, "--out", out, "--top", "2",
                    "--method", "gradcam", "--method", "rollout", "--method", "gradrollout", "--save-raw", "--quiet")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "predictions.json").read_text())
    header = doc["model"] if "model" in doc and isinstance(doc["model"], dict) else doc
    text = json.dumps(header)
    assert f'"target_layer": "{layer}"' in text and f'"prefix_tokens": {prefix}' in text and '"grid": [4, 4]' in text
    overlays = sorted(p.name for p in out.glob("*.jpg"))
    assert len(overlays) == 3 * 2 * 3, overlays  # 3 images x top 2 x 3 methods
    assert json.loads((out / "predictions.json").read_text())["class_agnostic"] == ["rollout"]  # gradrollout is per class
    raws = sorted(out.glob("*.npy"))
    assert raws and all(np.load(p).shape == (4, 4) for p in raws)


def test_the_token_flags_reach_the_run(saved, tmp_path):
    out = tmp_path / "out"
    result = invoke("explain", saved / "images", "--model", saved / "vit.keras", "--out", out, "--top", "1",
                    "--layer", "block0_norm1", "--token-grid", "2x8", "--prefix-tokens", "1", "--quiet")
    assert result.exit_code == 0, result.output
    header = json.dumps(json.loads((out / "predictions.json").read_text()))
    assert '"model.token_grid": [2, 8]' in header and '"model.prefix_tokens": 1' in header
    assert '"tokens": {"prefix_tokens": 1, "grid": [2, 8]}' in header


def raw_run(saved, out, model: str, method: str, *flag) -> tuple[dict, list]:
    """``explain`` of the images with ``model``, top 1, ``method`` and ``flag`` (an option and its value),
    raw maps only: (the header's options, the raw maps in file order)."""
    result = invoke("explain", saved / "images", "--model", saved / model, "--out", out, "--top", "1",
                    "--method", method, *flag, "--save-raw", "--no-overlays", "--quiet")
    assert result.exit_code == 0, result.output
    options = json.loads((out / "predictions.json").read_text())["options"]
    return options, [np.load(p) for p in sorted(out.glob("*.npy"))]


def test_centre_reaches_the_run_and_the_raw_maps(saved, tmp_path):
    """--centre-activations auto (a transformer: centred) vs off: the header says which, and the maps differ; on the CNN,
    auto is off: its maps equal --centre-activations off's."""
    raws = {}
    for model, centre in (("vit.keras", "auto"), ("vit.keras", "off"), ("cnn.keras", "auto"), ("cnn.keras", "off")):
        options, raws[model, centre] = raw_run(saved, tmp_path / f"{model}-{centre}", model, "layercam",
                                               "--centre-activations", centre)
        assert options["centre_activations"] == centre
        assert options["centred"] is (model == "vit.keras" and centre == "auto")  # what it resolved to
    assert max(np.abs(a - b).max() for a, b in zip(raws["vit.keras", "auto"], raws["vit.keras", "off"])) > 0.05
    for a, b in zip(raws["cnn.keras", "auto"], raws["cnn.keras", "off"]):
        np.testing.assert_array_equal(a, b)  # the same computation: off both times


def test_a_folder_from_before_centred_maps_resumes_only_as_it_was_made(saved, tmp_path):
    """A run file without the ``centred`` key (an older version: its transformer maps were not centred):
    --resume with the default would mix centred maps in, so it is refused in one line naming the flag;
    with --centre-activations off it resumes."""
    out = tmp_path / "out"
    args = ("explain", saved / "images", "--model", saved / "vit.keras", "--out", out, "--top", "1", "--quiet")
    assert invoke(*args, "--centre-activations", "off").exit_code == 0
    run_file = out / ".gradcam-run.json"
    doc = json.loads(run_file.read_text())
    assert doc["settings"]["centred"] is False
    for key in ("centred", "centre_activations"):
        del doc["settings"][key]
    run_file.write_text(json.dumps(doc))
    refused = invoke(*args, "--resume")
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert "centred False -> True" in refused.stderr and "--centre-activations off" in refused.stderr
    resumed = invoke(*args, "--resume", "--centre-activations", "off")
    assert resumed.exit_code == 0, resumed.output


def test_scorecam_baseline_reaches_the_run_and_the_raw_maps(saved, tmp_path):
    """--scorecam-baseline auto masks a transformer's inputs toward each image's mean and a CNN's toward zero; the
    header records the flag and, for a run with Score-CAM, what it resolved to (``masked_toward``)."""
    raws = {}
    for model, baseline in (("vit.keras", "auto"), ("vit.keras", "zero"), ("cnn.keras", "auto"), ("cnn.keras", "mean")):
        options, raws[model, baseline] = raw_run(saved, tmp_path / f"{model}-{baseline}", model, "scorecam",
                                                 "--scorecam-baseline", baseline)
        assert options["scorecam_baseline"] == baseline
        assert options["masked_toward"] == ("mean" if (model, baseline) in (("vit.keras", "auto"), ("cnn.keras", "mean"))
                                            else "zero")
    for model, other in (("vit.keras", "zero"), ("cnn.keras", "mean")):
        assert max(np.abs(a - b).max() for a, b in zip(raws[model, "auto"], raws[model, other])) > 0.01, model
    out = tmp_path / "gradcam-only"
    assert invoke("explain", saved / "images", "--model", saved / "vit.keras", "--out", out, "--quiet").exit_code == 0
    assert "masked_toward" not in json.loads((out / "predictions.json").read_text())["options"]  # its maps ignore it


def test_a_folder_from_before_the_scorecam_baseline_resumes_only_as_it_was_made(saved, tmp_path):
    """A run file without ``masked_toward`` (an older version: Score-CAM masked toward zero): --resume of a
    transformer's Score-CAM run with the default (the mean) is refused in one line naming the flag; with
    --scorecam-baseline zero it resumes, as does an older Grad-CAM run with the default."""
    for methods, refused_by_default in ((("--method", "scorecam"), True), ((), False)):
        out = tmp_path / f"out{len(methods)}"
        args = ("explain", saved / "images", "--model", saved / "vit.keras", "--out", out, "--top", "1", *methods, "--quiet")
        assert invoke(*args, "--scorecam-baseline", "zero").exit_code == 0
        run_file = out / ".gradcam-run.json"
        doc = json.loads(run_file.read_text())
        assert doc["settings"].get("masked_toward") == ("zero" if methods else None)
        for key in ("masked_toward", "scorecam_baseline"):
            doc["settings"].pop(key, None)
        run_file.write_text(json.dumps(doc))
        resumed = invoke(*args, "--resume")
        if refused_by_default:
            assert resumed.exit_code != 0 and "Traceback" not in resumed.output
            assert "masked_toward 'zero' -> 'mean'" in resumed.stderr and "--scorecam-baseline zero" in resumed.stderr
            resumed = invoke(*args, "--resume", "--scorecam-baseline", "zero")
        assert resumed.exit_code == 0, resumed.output


@pytest.mark.parametrize("args,line", [
    (["--layer", "block0_norm1", "--token-grid", "2x2"],
     ("layer 'block0_norm1' has token output shape (None, 17, 32): 17 tokens are not 0 to 8 prefix tokens + "
      "a 2x2 grid; pass --token-grid HxW and --prefix-tokens N (or the profile's token_grid / prefix_tokens), or "
      "another --layer")),
    (["--layer", "predictions"],
     ("layer 'predictions' of model 'vit' has output shape (None, 3), not 4-D (batch, height, width, "
      "channels) nor 3-D tokens (batch, tokens, channels); pass --layer with a 4-D or token layer (`gradcam layers` "
      "lists them)")),
    (["--token-grid", "14"], ("Invalid value for '--token-grid': a token grid is HEIGHTxWIDTH in tokens, e.g. "
                              "14x14; got '14'")),
])
def test_refusals_exit_2_with_one_line(saved, tmp_path, args, line):
    result = invoke("explain", saved / "images", "--model", saved / "vit.keras", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2
    said = [text for text in result.stderr.splitlines() if line in text]  # the whole reason on one line
    assert len(said) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_rollout_on_a_model_without_attention_is_refused_before_the_run(saved, tmp_path):
    result = invoke("explain", saved / "images", "--model", saved / "cnn.keras", "--out", tmp_path / "out",
                    "--method", "gradcam", "--method", "rollout")
    assert result.exit_code == 2
    line = ("model 'cnn' has no keras.layers.MultiHeadAttention layer on the way to its output: attention methods "
            "need global self-attention over the image's patch tokens; use a gradient method")
    assert [text for text in result.stderr.splitlines() if line in text] != [] and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_layers_lists_the_token_layers_and_marks_the_automatic_one(saved):
    result = invoke("layers", "--model", saved / "vit.keras", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["layer"]: row for row in json.loads(result.stdout)}
    assert rows["block0_norm1"]["shape"] == [17, 32] and rows["patch_embed"]["shape"] == [4, 4, 32]
    # a class-token head reads one token of the final norm: auto is the last block's first norm
    assert [name for name, row in rows.items() if row["auto"]] == ["block1_norm1"]


def test_evaluate_sweeps_token_layers(saved, tmp_path):
    """`evaluate --layers sweep` on a ViT: its token layers that the automatic layer is chosen from (the
    last block's two norms and the final one), a column per method and layer."""
    out = tmp_path / "sweep"
    methods = ("gradcam", "layercam", "scorecam")  # Score-CAM runs per layer, outside the sweep's pass
    result = invoke("evaluate", saved / "images", "--model", saved / "vit.h5", "--out", out,
                    *[a for m in methods for a in ("--method", m)], "--layers", "sweep", "--metrics", "deletion",
                    "--steps", 4, "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["summary"] == {"images": 3, "done": 3, "failed": 0}
    assert list(doc["aggregate"]) == [f"{m}@{layer}" for layer in ("block1_norm1", "block1_norm2", "norm")
                                      for m in methods] + ["random", "centre"]
    assert all(0 <= v["deletion"]["mean"] <= 1 for v in doc["aggregate"].values())


def test_evaluate_refuses_a_swept_token_layer_without_a_grid_before_the_run(saved, tmp_path):
    """A named --layers token layer whose tokens do not form the given grid: one line naming --layers, exit 2,
    checked with the layer names before the run begins, so the folder holds no run file and no records. Then a
    sweep from the patch embedding (a CNN layer) to a norm records what each layer's auto options resolved to."""
    out = tmp_path / "ev"
    result = invoke("evaluate", saved / "images", "--model", saved / "vit.keras", "--out", out, "--method", "gradcam",
                    "--layer", "patch_embed", "--layers", "block0_norm1,norm", "--token-grid", "2x2", "--metrics", "deletion", "--steps", 4)
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.output
    line = ("layer 'block0_norm1' has token output shape (None, 17, 32): 17 tokens are not 0 to 8 prefix tokens + a "
            "2x2 grid; pass --token-grid HxW and --prefix-tokens N (or the profile's token_grid / prefix_tokens), or "
            "another --layers")
    assert [text for text in result.stderr.splitlines() if line in text] != [], result.stderr
    assert not out.exists() or sorted(q.name for q in out.iterdir()) == [], sorted(q.name for q in out.iterdir())
    result = invoke("evaluate", saved / "images", "--model", saved / "vit.keras", "--out", out, "--method", "scorecam",
                    "--layers", "patch_embed,block1_norm1", "--metrics", "deletion", "--steps", 2, "-q")
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "evaluation.json").read_text())["settings"]
    assert settings["resolved_by_layer"] == {"patch_embed": {"centred": False, "masked_toward": "zero"},  # before attention
                                             "block1_norm1": {"centred": True, "masked_toward": "mean"}}


def test_evaluate_scores_gradient_methods_and_both_rollouts_on_a_vit(saved, tmp_path):
    out = tmp_path / "ev"
    result = invoke("evaluate", saved / "images", "--model", saved / "vit.keras", "--out", out, "--method", "gradcam",
                    "--method", "rollout", "--method", "gradrollout", "--metrics", "deletion", "--steps", 4, "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["summary"] == {"images": 3, "done": 3, "failed": 0}
    assert list(doc["aggregate"]) == ["gradcam", "rollout", "gradrollout", "random", "centre"]
    assert all(0 <= doc["aggregate"][m]["deletion"]["mean"] <= 1 for m in doc["aggregate"])
