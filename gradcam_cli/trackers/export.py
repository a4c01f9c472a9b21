"""``gradcam export OUT_DIR --to tensorboard|mlflow|wandb``: a finished run folder to a tracker.

:class:`ExportTarget` holds where each tracker writes; :func:`export_run` checks the tracker's extra
first (one line naming it), then reads the folder (one line for an older version's folder or a
missing ``predictions.json``), then hands the run to :mod:`gradcam_cli.trackers.sinks`."""

from __future__ import annotations

import logging
import os
import pathlib
from dataclasses import dataclass

from gradcam_cli.run.naming import JSON_NAME
from gradcam_cli.trackers import require
from gradcam_cli.trackers.runfolder import read_run

DEFAULT_PROJECT = "gradcam"  # the MLflow experiment and the W&B project
WANDB_MODES = ("offline", "online")


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a local store: the SQLite file ``mlflow.db`` in the current
    folder (MLflow's own default since its file store is in maintenance mode)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{pathlib.Path('mlflow.db').resolve()}"


def default_wandb_mode() -> str:
    """``$WANDB_MODE`` when it names offline or online, else offline: no account, no network."""
    mode = os.environ.get("WANDB_MODE", "")
    return mode if mode in WANDB_MODES else "offline"


@dataclass(frozen=True)
class ExportTarget:
    """Where a run goes: ``to`` one of tensorboard, mlflow, wandb, and that tracker's settings."""

    to: str
    log_dir: str | None = None  # tensorboard: default OUT_DIR/tensorboard
    tracking_uri: str | None = None  # mlflow: default default_tracking_uri()
    experiment: str = DEFAULT_PROJECT  # mlflow
    project: str = DEFAULT_PROJECT  # wandb
    wandb_dir: str = "."  # wandb: its run folders go under DIR/wandb/
    wandb_mode: str | None = None  # wandb: default default_wandb_mode()
    run_name: str | None = None  # mlflow, wandb: default the run folder's name


def _sqlite_artifacts(uri: str) -> str | None:
    """A local SQLite store's artifact root beside its file (``mlartifacts/``); None for other stores,
    whose server or default decides."""
    if not uri.startswith("sqlite:///"):
        return None
    return (pathlib.Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()


def export_run(out_dir, target: ExportTarget, predictions: str = JSON_NAME, evaluation=None) -> str:
    """Export the finished run in ``out_dir``; returns where it went (a folder, or an MLflow run)."""
    from gradcam_cli.trackers.sinks import export_mlflow, export_tensorboard, export_wandb

    require(target.to)
    run = read_run(out_dir, predictions, evaluation)
    if target.to == "tensorboard":
        log_dir = target.log_dir if target.log_dir is not None else pathlib.Path(out_dir) / "tensorboard"
        return str(export_tensorboard(run, log_dir))
    if target.to == "mlflow":
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its database set-up chatter
        uri = target.tracking_uri or default_tracking_uri()
        run_id = export_mlflow(run, uri, target.experiment, target.run_name, _sqlite_artifacts(uri))
        return f"mlflow run {run_id} in {uri} (experiment {target.experiment})"
    os.environ.setdefault("WANDB_SILENT", "true")  # its banners would bury the one line
    return str(export_wandb(run, target.project, target.wandb_dir, target.wandb_mode or default_wandb_mode(),
                            target.run_name))
