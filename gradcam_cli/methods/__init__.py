"""CAM methods: one small function each, registered by name (see :mod:`.registry`)."""

# registration order is the order of --method's choices
from gradcam_cli.methods import gradient  # noqa: F401, I001  (fills the registry)
from gradcam_cli.methods import spatial  # noqa: F401, I001
from gradcam_cli.methods import eigen  # noqa: F401, I001
from gradcam_cli.methods import score  # noqa: F401, I001
from gradcam_cli.methods import guided  # noqa: F401, I001
from gradcam_cli.methods import attention  # noqa: F401, I001
from gradcam_cli.methods import baselines  # noqa: F401, I001
from gradcam_cli.methods.registry import METHODS, Method, get_method, register

__all__ = ["METHODS", "Method", "get_method", "register", "method_names"]


def method_names() -> list[str]:
    """Every registered method's name, in registration order (the CLI's --method choices)."""
    return list(METHODS)
