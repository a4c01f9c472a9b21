"""CAM methods: one small function each, registered by name (see :mod:`.registry`)."""

from gradcam_cli.methods import gradient  # noqa: F401  (fills the registry)
from gradcam_cli.methods.registry import METHODS, Method, get_method, register

__all__ = ["METHODS", "Method", "get_method", "register", "method_names"]


def method_names() -> list[str]:
    """Every registered method's name, in registration order (the CLI's --method choices)."""
    return list(METHODS)
