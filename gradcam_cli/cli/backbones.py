"""`gradcam backbones`: the registry as a table or JSON (no TensorFlow)."""

from __future__ import annotations

import json

import click

from gradcam_cli.cli.common import print_table, registry as _registry
from gradcam_cli.cli.options import config_dir_option
from gradcam_cli.cli.main import main
from gradcam_cli.config.profiles import DEFAULT_BACKBONE


@main.command()
@config_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def backbones(config_dirs, as_json) -> None:
    """List the registered backbones (name, input size, target layer, weights).

    \b
    Example:
      gradcam backbones --json
    """
    registry = _registry(config_dirs)
    rows = [
        {
            "name": p.name,
            "input_size": list(p.input_size) if p.input_size else None,
            "target_layer": p.target_layer,
            "preprocessing": p.preprocessing,
            "weights_source": p.weights_source(),
            "offline": p.weights_offline(),
            "default": p.name == DEFAULT_BACKBONE,
            "profile": p.source,
        }
        for p in registry.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ("name", "input", "target layer", "weights", "offline")
    table = [
        (
            r["name"] + (" *" if r["default"] else ""),
            "x".join(map(str, r["input_size"])) if r["input_size"] else "model's",
            r["target_layer"],
            r["weights_source"],
            "yes" if r["offline"] else "no",
        )
        for r in rows
    ]
    print_table(table, headers)
    click.echo("\n* default. 'offline: no' means the weights must be downloaded once or passed with --weights PATH.")
