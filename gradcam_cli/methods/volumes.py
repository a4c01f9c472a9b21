"""Which methods are defined on volumes (3-D models): those whose weights and maps are sums, means or
principal components over positions, whatever their layout (:mod:`gradcam_cli.engine.volume`)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["VOLUME_METHODS", "check_volume_methods"]

#: the methods defined on volumes (the issue's list); others are refused in one line
VOLUME_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam")


def check_volume_methods(names: Sequence[str]) -> None:
    """ValueError naming the first method not defined on volumes."""
    for name in names:
        if name not in VOLUME_METHODS:
            raise ValueError(f"method '{name}' is not defined on volumes (3-D models); use one of: "
                             f"{', '.join(VOLUME_METHODS)}")
