"""`gradcam layers`: the layers Grad-CAM can target (models built without weights)."""

from __future__ import annotations

import fnmatch
import json
import sys

import click

from gradcam_cli.cli.common import errors as _errors, make_cam_without_weights
from gradcam_cli.cli.options import model_options, model_settings
from gradcam_cli.cli.main import main


@main.command()
@model_options
@click.option("--filter", "pattern", default=None, metavar="PATTERN",
              help="Only the layers whose name matches: a glob (block6*_add) or, without * ? [, a part of the "
                   "name (case-insensitive). Exit 1 when none does.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def layers(pattern, as_json, **model_params) -> None:
    """List the layers Grad-CAM can target (4-D outputs with spatial extent), marking the one
    `auto` picks (*) and the one in use (>). Backbones are built without weights.

    \b
    Example:
      gradcam layers --backbone resnet50 --filter 'conv5*out'
    """
    settings = model_settings(model_params)
    from gradcam_cli.models.input_rank import saved_input_rank

    if saved_input_rank(settings.model) == 5:  # a 3-D model: its 5-D layers (docs/medical.md, volumes)
        from types import SimpleNamespace

        from gradcam_cli.run.volumes import load_volume_model
        from gradcam_cli.settings import RunSettings

        with _errors():
            vm = load_volume_model(RunSettings(model=settings))
        cam = SimpleNamespace(model=vm.model, layer=vm.split.layer_name, profile=SimpleNamespace(output=settings.output))
    else:
        cam = make_cam_without_weights(settings)
    from gradcam_cli.models.targets import auto_layer, candidate_layers

    with _errors():
        rows = candidate_layers(cam.model)
        auto = auto_layer(cam.model, output=cam.profile.output)
    table = [
        {"layer": r.name, "shape": list(r.shape), "type": r.kind, "auto": r.name == auto, "target": r.name == cam.layer}
        for r in rows if pattern is None or _matches(r.name, pattern)
    ]
    if not table:
        click.echo(f"gradcam: no layer matches {pattern!r} (of {len(rows)} candidate layers; run without --filter "
                   "to list them)", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    width = max([len(r["layer"]) for r in table] + [5])
    for r in table:
        mark = (">" if r["target"] else " ") + ("*" if r["auto"] else " ")
        shape = "x".join(map(str, r["shape"]))
        click.echo(f"{mark} {r['layer'].ljust(width)}  {shape.ljust(14)}  {r['type']}")
    click.echo(f"\n* picked by --layer auto   > in use ({cam.layer})")


def _matches(name: str, pattern: str) -> bool:
    """A glob when the pattern has one of * ? [, else a case-insensitive part of the name."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern.lower() in name.lower()
