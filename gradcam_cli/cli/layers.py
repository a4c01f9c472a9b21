"""`gradcam layers`: the layers Grad-CAM can target (models built without weights)."""

from __future__ import annotations

import json

import click

from gradcam_cli.cli.common import errors as _errors, make_cam_without_weights
from gradcam_cli.cli.options import model_options, model_settings
from gradcam_cli.cli.main import main


@main.command()
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def layers(as_json, **model_params) -> None:
    """List the layers Grad-CAM can target (4-D outputs with spatial extent), marking the one
    `auto` picks (*) and the one in use (>). Backbones are built without weights.

    \b
    Example:
      gradcam layers --backbone resnet50
    """
    cam = make_cam_without_weights(model_settings(model_params))
    from gradcam_cli.models.targets import auto_layer, candidate_layers

    with _errors():
        rows = candidate_layers(cam.model)
        auto = auto_layer(cam.model, output=cam.profile.output)
    table = [
        {"layer": r.name, "shape": list(r.shape), "type": r.kind, "auto": r.name == auto, "target": r.name == cam.layer}
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    width = max([len(r["layer"]) for r in table] + [5])
    for r in table:
        mark = (">" if r["target"] else " ") + ("*" if r["auto"] else " ")
        shape = "x".join(map(str, r["shape"]))
        click.echo(f"{mark} {r['layer'].ljust(width)}  {shape.ljust(14)}  {r['type']}")
    click.echo(f"\n* picked by --layer auto   > in use ({cam.layer})")
