"""`gradcam activations` and `gradcam filters`: look inside the model (Deep Learning with Python 5.4)."""

from __future__ import annotations

import json

import click

from gradcam_cli.cli.common import discover_inputs, errors, make_cam, precheck_out
from gradcam_cli.cli.interrupt import run_stopping_cleanly
from gradcam_cli.cli.options import colormap_value, input_options, model_options, model_settings, quiet_option
from gradcam_cli.cli.main import main
from gradcam_cli.models.graph import PRECISIONS


def _filter_list(ctx, param, value):
    """``0-63``, ``0,5,9``, ``0-7,12``: a sorted list without repeats."""
    chosen: list[int] = []
    try:
        for part in value.split(","):
            part = part.strip()
            low, _, high = part.partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first:
                raise ValueError
            chosen.extend(range(first, last + 1))
    except ValueError:
        raise click.BadParameter(f"expected filter numbers and ranges like '0-63' or '0,5,9-12', got {value!r}") from None
    return sorted(set(chosen))


def _bar(total: int, quiet: bool, unit: str, noun: str):
    from gradcam_cli.cli.progress import Progress

    return Progress(total, quiet, unit=unit, noun=noun)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", default="gradcam_activations", show_default=True,
              type=click.Path(file_okay=False), help="Output folder: OUT/IMAGE/LAYER.png and activations.json.")
@input_options
@model_options
@click.option("--layers", "layer_list", default=None, help="Comma-separated layer names or nested paths.")
@click.option("--first", default=8, show_default=True, type=click.IntRange(1, 1000),
              help="Without --layers: the model's first N conv / pooling layers.")
@click.option("--per-row", default=16, show_default=True, type=click.IntRange(1, 256), help="Channels per row.")
@click.option("--colormap", default="viridis", show_default=True, help="Any OpenCV colormap name.")
@click.option("--save-raw", is_flag=True, help="Also write each layer's activations as float32 .npy.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 1024))
@quiet_option
def activations(inputs, out_dir, layer_list, first, per_row, colormap, save_raw, batch_size, quiet,
                no_recursive, extensions, null, **model_params) -> None:
    """Every channel of the first layers' outputs, one PNG grid per image and layer (each channel
    standardised, a dead channel flat grey, numbered above its tile), from one model call per
    batch for all layers.

    \b
    Example:
      gradcam activations sample_images/chelsea.jpg --out acts/ --first 8
    """
    colormap_value(None, None, colormap)
    refs = discover_inputs(inputs, no_recursive, extensions, null, out_dir=out_dir)
    precheck_out(out_dir)
    settings = model_settings(model_params)
    run_stopping_cleanly(lambda _: _activations(refs, out_dir, settings, layer_list, first, per_row, colormap, save_raw,
                                           batch_size, quiet),
                      f"the grids written so far are in {out_dir}; activations.json is written at the end")


def _activations(refs, out_dir, settings, layer_list, first, per_row, colormap, save_raw, batch_size, quiet) -> int:
    cam = make_cam(settings)
    from gradcam_cli.errors import ImageError
    from gradcam_cli.inspect.activations import ActivationProbe, default_layers, write_activation_grids
    from gradcam_cli.io.images import decode

    with errors():
        layers = [n.strip() for n in layer_list.split(",") if n.strip()] if layer_list else default_layers(cam.model, first)
        probe = ActivationProbe(cam.model, layers)
    images, failed = [], 0
    for ref in refs:
        try:
            images.append((ref.out_stem, decode(ref.path)))
        except ImageError as exc:
            failed += 1
            click.echo(f"gradcam: skipped {ref.path}: {exc.message}", err=True)
    bar = _bar(len(images), quiet, "img", "images")
    try:
        with errors():
            index = write_activation_grids(probe, images, cam.prepare, out_dir, batch_size=batch_size, per_row=per_row,
                                           colormap=colormap, save_raw=save_raw, progress=bar.update)
    finally:
        bar.close()
    click.echo(json.dumps({"out": str(out_dir), "images": len(index.get("images", images)), "layers": layers,
                           "index": "activations.json"}, ensure_ascii=False))
    return 1 if failed else 0


@main.command()
@click.option("--unit", "unit_mode", is_flag=True,
              help="Instead of a layer's filters, the model's output units (class visualisation, before softmax); "
                   "grid tiles are titled with their class names when the model's are known (else numbers).")
@click.option("-o", "--out", "out_dir", default="gradcam_filters", show_default=True, type=click.Path(file_okay=False),
              help="Output folder: grid.png, filter_NNNN.png, filters.json.")
@model_options
@click.option("--filters", "filters", default="0-63", show_default=True, callback=_filter_list,
              help="Filter numbers and ranges: 0-63, 0,5,9-12.")
@click.option("--steps", default=40, show_default=True, type=click.IntRange(0, 10000), help="Gradient-ascent steps.")
@click.option("--step-size", default=1.0, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--size", default=64, show_default=True, type=click.IntRange(8, 1024),
              help="Pattern size in pixels (square); a model with a fixed input size uses that.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the starting noise.")
@click.option("--per-row", default=8, show_default=True, type=click.IntRange(1, 256), help="Patterns per grid row.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Filters per compiled ascent batch.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="float32", show_default=True,
              help="The layers' compute precision (weights and images stay float32). bfloat16 is several times "
                   "faster on CPUs with AMX / AVX512-BF16 and on GPUs with bfloat16 units, slower elsewhere.")
@quiet_option
def filters(unit_mode, out_dir, filters, steps, step_size, size, seed, per_row, batch_size, precision, quiet,
            **model_params) -> None:
    """Filter patterns by gradient ascent (the book's recipe), all filters of the --layer in one
    batch through one compiled step; grid.png titles each pattern with its filter number.

    \b
    Example:
      gradcam filters --layer block2a_expand_activation --filters 0-15 --steps 30 --out patterns/
    """
    filter_layer = model_params["layer"]
    if (filter_layer is None) == (not unit_mode):
        raise click.UsageError("give --layer NAME (a layer's filters) or --unit (the output units), one of them")
    precheck_out(out_dir)
    settings = model_settings(model_params)
    run_stopping_cleanly(lambda _: _filters(settings, None if unit_mode else filter_layer, out_dir, filters, steps,
                                       step_size, size, seed, per_row, batch_size, precision, quiet),
                      f"the patterns written so far are in {out_dir}; filters.json is written at the end")


def _filters(settings, filter_layer, out_dir, filters, steps, step_size, size, seed, per_row, batch_size, precision,
             quiet) -> int:
    cam = make_cam(settings)
    from gradcam_cli.inspect.filters import FilterAscent, write_filter_outputs
    from gradcam_cli.io.preprocess import preprocess_tensor

    profile = cam.profile
    with errors():
        ascent = FilterAscent(cam.model, filter_layer, lambda x: preprocess_tensor(x, profile),
                              size=size, steps=steps, step_size=step_size, precision=precision)
        ascent.check_filters(filters)
    names = None  # a unit's tile shows its class name when the model's class names are known
    if ascent.units and profile.classes is not None and len(cam.class_names) == ascent.channels:
        names = cam.class_names.labels
    bar = _bar(len(filters) * steps, quiet, "step", "filter-steps")
    try:
        with errors():
            index = write_filter_outputs(ascent, filters, out_dir, batch_size=batch_size, seed=seed, per_row=per_row,
                                         progress=bar.update, class_names=names)
    finally:
        bar.close()
    click.echo(json.dumps({"out": str(out_dir), "layer": index.get("layer"), "filters": len(filters),
                           "index": "filters.json"}, ensure_ascii=False))
    return 0
