"""Every option bundle the commands share, each with the function that turns its values into its
settings record; choices and defaults come from their sources (the registries, ``settings``).

A bundle is a decorator adding its options to a command; the command passes ``**params`` on to
the bundle's record function. Nothing here loads a model or imports TensorFlow (``--help``).
"""

from __future__ import annotations

import os

import click

from gradcam_cli.config.profiles import DEFAULT_BACKBONE, PREPROCESSING
from gradcam_cli.methods import method_names
from gradcam_cli.settings import (
    BOX_THRESHOLD,
    CENTRES,
    DEFAULT_ALPHA,
    DEFAULT_COLORMAP,
    DEFAULT_METHOD,
    DEFAULT_QUALITY,
    INTENSITIES,
    SCORE_BASELINES,
    BoxSettings,
    DepthSettings,
    GifSettings,
    GridSettings,
    MethodOptions,
    ModelSettings,
    OutputSettings,
    OverlaySettings,
)


def _apply(command, options: list):
    for option in reversed(options):
        command = option(command)
    return command


config_dir_option = click.option(
    "--config-dir",
    "config_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Extra folder of backbone profiles (*.toml); repeatable. Also $GRADCAM_CONFIG_DIR.",
)


def model_options(command):
    """The options that choose and adapt the model (every command that builds one); their record:
    :func:`model_settings`."""
    return _apply(command, [
        click.option("-b", "--backbone", default=DEFAULT_BACKBONE, show_default=True,
                     help="Backbone profile name (see `gradcam backbones`)."),
        click.option("--weights", default=ModelSettings().weights, show_default=True,
                     help="'imagenet' (the profile's pretrained weights), 'none' (random), or a local weights file."),
        click.option("-m", "--model", "model_path", default=None, type=click.Path(),
                     help="Your own saved model (.keras or .h5, or a keras-hub preset directory) instead of a backbone."),
        click.option("--custom-objects", default=None, type=click.Path(),
                     help="A Python file defining the custom layers / functions your model needs."),
        click.option("--layer", default=None,
                     help="Target layer: a name, a nested path (resnet50/conv5_block3_out), or 'auto' "
                          "(the last 4-D layer with spatial extent; the default for --model)."),
        click.option("--output", default=None, help="Which output of a multi-output model to explain (name or index)."),
        click.option("--token-grid", default=None, callback=_token_grid, metavar="HxW",
                     help="A transformer's token layer: its patch grid in tokens, e.g. 14x14 (default: found from "
                          "the model's input and patch sizes)."),
        click.option("--prefix-tokens", default=None, type=click.IntRange(0, None),
                     help="A transformer's token layer: how many tokens (class, distillation, registers) come "
                          "before the patch tokens (default: found from the model)."),
        click.option("--input-size", default=None, type=click.IntRange(32, 4096),
                     help="Resize images to this many pixels square (default: the profile's or the model's)."),
        click.option("--preprocess", default=None,
                     type=click.Choice(list(PREPROCESSING)),
                     help="Input normalisation (default: the profile's; 'none' = raw 0..255 for --model; a keras-hub model: "
                          "its own image converter)."),
        click.option("--mean", default=None, type=float, help="With --preprocess mean_std: the mean (0..255)."),
        click.option("--std", default=None, type=float, help="With --preprocess mean_std: the std (0..255)."),
        click.option("--labels", default=None, type=click.Path(),
                     help="Class names: a text file (one per line) or JSON list, in output order."),
        config_dir_option,
    ])


def target_options(command):
    """What a map explains beyond a class score (docs/targets.md); checked by :func:`target_settings`."""
    from gradcam_cli.targets import DEFAULT_TARGET, TARGETS

    kinds = "; ".join(f"{t.name}: {t.description.rstrip('.')}" for t in TARGETS.values())
    return _apply(command, [
        click.option("--target", "target_kind", type=click.Choice(list(TARGETS)), default=DEFAULT_TARGET,
                     show_default=True, help=f"What each map explains ({kinds}). See docs/targets.md."),
        click.option("--mask", default=None, type=click.Path(),
                     help="--target segmentation: the region (an image, non-zero = inside, the image's size) "
                          "or a CSV of image,mask rows; default: each class's predicted region."),
        click.option("--reference", default=None, type=click.Path(),
                     help="--target similarity: a reference image, a saved embedding (.npy) or a folder of them; "
                          "each image is explained against each."),
        click.option("--embedding", default=None, metavar="OUTPUT_OR_LAYER",
                     help="--target similarity: the output or layer read as the embedding (default: the pooled "
                          "features before the classifier's last Dense, else the output)."),
        click.option("--boxes-top", type=click.IntRange(min=1), default=None, metavar="N",
                     help="--target box: explain each image's N highest-scoring detections [default: 5]."),
        click.option("--box-score-threshold", type=click.FloatRange(0.0, 1.0), default=None, metavar="SCORE",
                     help="--target box: explain detections scoring more than this (the detector's "
                          "confidence, after its non-max suppression) [default: 0.5]."),
        click.option("--sidecar", is_flag=True,
                     help="The model's non-image inputs from a file beside each image: photo.json "
                          "({\"input_name\": [values]}) or photo.csv (input_name,v1,v2,... rows); the image input first."),
    ])


def model_settings(params: dict, precision: str = "float32") -> ModelSettings:
    """The :class:`ModelSettings` that the model options describe (checks flags that exclude each other)."""
    ctx = click.get_current_context()
    model_path = params["model_path"]
    if model_path and ctx.get_parameter_source("backbone") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("give either --backbone or --model, not both")
    if model_path and ctx.get_parameter_source("weights") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--weights applies to --backbone; a saved --model carries its own weights")
    labels = params["labels"]
    return ModelSettings(
        backbone=None if model_path else params["backbone"], model=model_path, weights=params["weights"],
        layer=params["layer"], output=params["output"], input_size=params["input_size"],
        preprocessing=params["preprocess"], mean=params["mean"], std=params["std"],
        labels=None if labels is None else os.path.abspath(labels), custom_objects=params["custom_objects"],
        config_dirs=tuple(params["config_dirs"]), precision=precision,
        token_grid=params["token_grid"], prefix_tokens=params["prefix_tokens"],
    )


def _token_grid(ctx, param, value):
    """``--token-grid HxW`` -> (h, w), positive integers."""
    from gradcam_cli.models.tokens import parse_grid

    if value is None:
        return None
    try:
        return parse_grid(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def unit_interval(ctx, param, value):
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"must be between 0 and 1, got {value}")
    return value


def batch_size_value(ctx, param, value):
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= 4096:
        raise click.BadParameter(f"must be a whole number from 1 to 4096, or 'auto'; got {value!r}")
    return size


def method_names_value(ctx, param, value):
    from gradcam_cli.methods import get_method

    try:
        names = tuple(get_method(name).name for name in value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if len(set(names)) != len(names):
        raise click.BadParameter(f"each method may be given once, got {', '.join(names)}")
    return names


def colormap_value(ctx, param, value):
    from gradcam_cli.render.overlay import colormap_id

    try:
        colormap_id(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _grid_gif(after_run: bool) -> list:
    """--grid, --gif and their settings; ``after_run`` (``gradcam pictures``): their defaults are the run's."""
    grid, gif = GridSettings(), GifSettings()
    run = " (default: the run's)" if after_run else ""
    return [
        click.option("--grid", is_flag=True, help="Per image, one JPEG: the original and every overlay, titled."),
        click.option("--grid-columns", default=None if after_run else grid.columns, show_default=not after_run,
                     type=click.IntRange(1, 32), help=f"Tiles per row of --grid{run}."),
        click.option("--grid-tile", default=None if after_run else grid.tile, show_default=not after_run,
                     type=click.IntRange(64, 4096),
                     help=f"Long side of each --grid tile, in pixels (at most --overlay-max-side: no upscaled "
                          f"tiles){run}."),
        click.option("--gif", is_flag=True, help="Per image, an animated GIF: original, then each overlay, captioned."),
        click.option("--gif-ms", default=None if after_run else gif.ms, show_default=not after_run,
                     type=click.IntRange(1, 60000), help=f"Milliseconds per --gif frame{run}."),
    ]


def after_run_picture_options(command):
    """``gradcam pictures``: what to add to a finished run, each setting defaulting to the run's."""
    return _apply(command, [
        *_grid_gif(after_run=True),
        click.option("--overlay-max-side", default=None, type=click.IntRange(16, 65536), metavar="PX",
                     help="Grid tiles and GIF frames at most PX on their long side (default: the run's "
                          "--overlay-max-side, else the original size)."),
    ])


def picture_options(command):
    """Grids, GIFs and boxes (the output plug-ins beyond overlays)."""
    return _apply(command, [
        *_grid_gif(after_run=False),
        click.option("--boxes", is_flag=True,
                     help="The paper's localisation box per map: in the records ('box', original pixels) and drawn "
                          "on the overlays."),
        click.option("--box-threshold", default=BOX_THRESHOLD, show_default=True, type=float, callback=unit_interval,
                     help="--boxes: keep the map above this fraction of its maximum, then its largest segment."),
        click.option("--no-overlays", is_flag=True,
                     help="Write no overlay JPEGs: records, --save-raw maps and other asked outputs only (fastest)."),
        click.option("--overlay-max-side", default=None, type=click.IntRange(16, 65536), metavar="PX",
                     help="Overlays (grids, GIFs) at most PX on their long side (default: the original size); "
                          "large JPEGs are then decoded reduced for them, several times faster. Changes only "
                          "the pictures and overlay_size: the model input, predictions and maps are the same."),
    ])


def engine_options(command):
    """Where the job runs: here, or on a Ray cluster (actors with one model each)."""
    return _apply(command, [
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="'ray': run on a Ray cluster (the [ray] extra: pip install -e '.[ray]' in a clone); same "
                          "outputs, and --resume works across engines. See docs/cluster.md."),
        click.option("--ray-address", default=None, metavar="ADDRESS",
                     help="--engine ray: 'auto' (the cluster this machine belongs to), host:port or ray://host:port; "
                          "default: the cluster RAY_ADDRESS names, else a local Ray started for the run."),
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="--engine ray: actors, one model each (default: as many as the cluster's nodes hold)."),
        click.option("--gpus-per-worker", type=click.FloatRange(0, 64), default=None,
                     help="--engine ray: GPUs per actor (default: 1 when the cluster has GPUs, else 0)."),
        click.option("--cpus-per-worker", type=click.FloatRange(1, 1024), default=None,
                     help="--engine ray: CPUs per actor, and its TensorFlow threads (default: 1 with GPUs, else the CPUs / --workers, at most 4 and the largest node's)."),
    ])


def method_option(help: str):
    """``--method NAME`` (repeatable), its choices from the method registry; ``help`` says what the
    command does with several."""
    return click.option("--method", "methods", multiple=True, default=(DEFAULT_METHOD,), show_default=True,
                        callback=method_names_value, metavar="NAME",
                        help=f"CAM method: {', '.join(method_names())} (see docs/methods.md). {help}")


def method_options(command):
    """The options of particular methods (Score-CAM's, smoothing); their record: :func:`method_settings`."""
    defaults = MethodOptions()
    return _apply(command, [
        click.option("--scorecam-batch", default=defaults.scorecam_batch, show_default=True, type=click.IntRange(1),
                     help="Score-CAM: masked inputs per forward pass (bounds its memory)."),
        click.option("--scorecam-channels", default=None, type=click.IntRange(1), metavar="M",
                     help="Score-CAM: use only the M channels of highest spatial variance (Faster Score-CAM)."),
        click.option("--aug-smooth", is_flag=True,
                     help="Average each map over horizontal flip x input times 0.9/1.0/1.1 (6 passes; classes from the plain one)."),
        click.option("--eigen-smooth", is_flag=True,
                     help="Map = first principal component of the weighted activations instead of their sum."),
        click.option("--centre-activations", type=click.Choice(CENTRES), default=defaults.centre_activations, show_default=True,
                     help="Sum each method's weights times the activations less their mean over the image's "
                          "positions: auto = on for transformers, whose features have no zero that means absent "
                          "(docs/transformers.md)."),
        click.option("--scorecam-baseline", type=click.Choice(SCORE_BASELINES), default=defaults.scorecam_baseline,
                     show_default=True,
                     help="Score-CAM: what its masks blend the input toward, zero (the paper's) or each image's mean; "
                          "auto = the mean for transformers, whose LayerNorms hardly see a patch dimmed toward zero."),
    ])


def method_settings(p: dict) -> MethodOptions:
    return MethodOptions(scorecam_batch=p["scorecam_batch"], scorecam_channels=p["scorecam_channels"],
                         aug_smooth=p["aug_smooth"], eigen_smooth=p["eigen_smooth"], centre_activations=p["centre_activations"],
                         scorecam_baseline=p["scorecam_baseline"])


def overlay_options(command):
    """How overlays look and are saved (the picture outputs are :func:`picture_options`)."""
    return _apply(command, [
        click.option("--alpha", default=DEFAULT_ALPHA, show_default=True, type=float, callback=unit_interval,
                     help="Heatmap opacity in the overlay."),
        click.option("--colormap", default=DEFAULT_COLORMAP, show_default=True, callback=colormap_value,
                     help="Any OpenCV colormap name: jet, turbo, viridis, inferno, magma, hot, ...") ,
        click.option("--quality", default=DEFAULT_QUALITY, show_default=True, type=click.IntRange(1, 100),
                     help="JPEG quality."),
        click.option("--save-raw", is_flag=True,
                     help="Also write each map as float32 .npy at the target layer's resolution."),
        click.option("--caption", is_flag=True,
                     help="A strip under each overlay JPEG: class, probability, method, rank "
                          "('tabby 0.62 · gradcam · top-1'). Grids and GIFs title their tiles already."),
        click.option("--colorbar", is_flag=True,
                     help="A strip under each overlay JPEG: the --colormap from 0 (left) to 1 (right)."),
    ])


def output_settings(p: dict) -> OutputSettings:
    """The record of :func:`overlay_options` and :func:`picture_options`."""
    return OutputSettings(
        overlay=OverlaySettings(alpha=p["alpha"], colormap=p["colormap"], quality=p["quality"],
                                max_side=p["overlay_max_side"], enabled=not p["no_overlays"],
                                caption=p["caption"], colorbar=p["colorbar"]),
        raw=p["save_raw"], boxes=BoxSettings(enabled=p["boxes"], threshold=p["box_threshold"]),
        grid=GridSettings(enabled=p["grid"], columns=p["grid_columns"], tile=p["grid_tile"]),
        gif=GifSettings(enabled=p["gif"], ms=p["gif_ms"]),
    )


def window_value(ctx, param, value):
    """``--window CENTRE,WIDTH`` as two floats, the width positive."""
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",")]
    try:
        centre, width = (float(part) for part in parts)
    except ValueError:
        raise click.BadParameter(f"expected CENTRE,WIDTH (two numbers in the image's units, e.g. 40,400 for a CT "
                                 f"soft-tissue window); got {value!r}") from None
    if not width > 0:
        raise click.BadParameter(f"the width must be positive; got {value!r}")
    return centre, width


def depth_options(command):
    """How full-depth inputs (16-bit grey PNG / TIFF, DICOM) reach the model and the overlays; their
    record: :func:`depth_settings`. See docs/medical.md."""
    return _apply(command, [
        click.option("--intensity", type=click.Choice(INTENSITIES), default=DepthSettings().intensity,
                     show_default=True,
                     help="Full-depth inputs (16-bit grey PNG / TIFF, DICOM) only: how their values reach the "
                          "model's preprocessing, in float (never through 8 bits). 'range': the container's range "
                          "(0..65535 for 16-bit) mapped linearly onto 0..255; 'window': the --window (a DICOM's own, "
                          "else the 1st-99th percentiles) onto 0..255, clipped; 'raw': the values as they are (DICOM: "
                          "Hounsfield units for CT; use with --preprocess none or mean_std in those units). 'auto': "
                          "range for PNG / TIFF, raw for DICOM. 8-bit inputs are unaffected."),
        click.option("--window", default=None, callback=window_value, metavar="CENTRE,WIDTH",
                     help="Full-depth inputs: the window of the 8-bit view the overlays are drawn on, in the image's "
                          "units (e.g. 40,400 for CT soft tissue); default: a DICOM's own window, else the 1st-99th "
                          "percentiles. With --intensity window, the model's too."),
        click.option("--slice-axis", type=click.IntRange(0, 2), default=None,
                     help="A 2-D model on NIfTI volumes: explain each slice along this voxel axis (0, 1 or 2) as an "
                          "image (records carry the slice as 'frame' 1..N). A 3-D model takes volumes whole."),
    ])


def depth_settings(p: dict) -> DepthSettings:
    return DepthSettings(intensity=p["intensity"], window=p["window"], slice_axis=p.get("slice_axis"))


def input_options(command):
    """How folders are walked and stdin is read (every command that takes INPUTS); see
    :func:`gradcam_cli.cli.common.discover_inputs`."""
    return _apply(command, [
        click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders."),
        click.option("--ext", "extensions", multiple=True,
                     help="File extension to take from folders (repeatable; default: common image types and DICOM: "
                          ".dcm, .dicom, and extension-less files with the DICM preamble)."),
        click.option("--null", is_flag=True, help="With '-': paths on stdin are NUL-separated (find -print0)."),
    ])


quiet_option = click.option("-q", "--quiet", is_flag=True,
                            help="No progress (a bar on a terminal; a plain line every 10 s when stderr is a file).")
io_threads_option = click.option("--io-threads", default=None, type=click.IntRange(1, 256), metavar="N",
                                 help="Decode / write threads (default: one per CPU this process may use, at least 2).")
