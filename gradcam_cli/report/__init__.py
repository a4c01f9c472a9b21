"""The HTML report of a run: one self-contained ``report.html`` built from ``predictions.json``."""

from gradcam_cli.report.html import build_report

__all__ = ["build_report"]
