"""The command-line interface: one module per command, over the library."""

from gradcam_cli.cli.main import main
from gradcam_cli.cli import backbones, evaluate, explain, inspect, layers, merge, pictures, report  # noqa: F401,E402  (register the commands)

__all__ = ["main"]
