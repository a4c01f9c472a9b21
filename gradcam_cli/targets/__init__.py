"""Targets: what a map explains (a class score, a segment, a similarity); see :mod:`.registry`."""

from gradcam_cli.targets import kinds  # noqa: F401  (fills the registry)
from gradcam_cli.targets import boxes  # noqa: F401,I001  (after kinds: the registry keeps their order)
from gradcam_cli.targets.registry import (
    DEFAULT_TARGET,
    TARGETS,
    Target,
    check_methods,
    get_target,
    register,
    target_names,
)

__all__ = ["DEFAULT_TARGET", "TARGETS", "Target", "check_methods", "get_target", "register", "target_names"]
