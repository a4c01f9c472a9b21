"""Maps to trackers: a finished run (:class:`~gradcam_cli.trackers.runfolder.FinishedRun`) exported
whole, and one epoch's overlays of a training callback (:mod:`gradcam_cli.keras`) logged.

- TensorBoard: overlays as images (``tf.summary.image``, the caption as the description),
  settings as a text table, figures as scalars. TensorBoard keeps no files: the artifacts are named
  in the settings' text.
- MLflow: settings as parameters, figures as metrics, overlays (with ``overlays/captions.json``),
  ``predictions.json``, ``report.html`` and evaluate's files as artifacts; any tracking URI.
- W&B: settings as the config, figures in the summary, a table of image, prediction, truth and
  map, overlays as captioned images, the files as an artifact; offline mode needs no account.

The trackers' own libraries write their files (event files, stores, run folders)."""

from __future__ import annotations

import pathlib
import re
import time
from typing import Sequence

import numpy as np

from gradcam_cli.io.images import decode
from gradcam_cli.trackers import require
from gradcam_cli.trackers.runfolder import FinishedRun

#: MLflow takes at most 100 parameters and 1000 metrics per batch call
PARAM_BATCH, METRIC_BATCH = 100, 1000
TABLE_COLUMNS = ["image", "prediction", "score", "truth", "map"]


def _markdown_table(params: dict[str, str], artifacts: Sequence[pathlib.Path]) -> str:
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {key} | {str(value).replace('|', '/')} |" for key, value in params.items()]
    return "\n".join(lines + [""] + [f"artifact: {path}" for path in artifacts])


def summary_images(images: Sequence[tuple[str, np.ndarray, str]], step: int) -> None:
    """Each (tag, (k, H, W, 3) uint8 RGB overlays, caption) as one ``tf.summary.image`` at ``step``,
    under the default summary writer."""
    require("tensorboard")
    import tensorflow as tf

    for tag, pictures, caption in images:
        tf.summary.image(tag, pictures, step=step, max_outputs=len(pictures), description=caption)


def export_tensorboard(run: FinishedRun, log_dir) -> pathlib.Path:
    """The run's overlays, settings and figures as one step (0) of a TensorBoard run in ``log_dir``."""
    require("tensorboard")
    import tensorflow as tf

    log_dir = pathlib.Path(log_dir)
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        summary_images([(f"overlays/{shot.name}", decode(str(shot.file))[None], shot.caption) for shot in run.shots],
                       step=0)
        tf.summary.text("gradcam/settings", _markdown_table(run.params, run.artifacts), step=0)
        tf.summary.text("gradcam/captions", "\n\n".join(f"{s.name}: {s.caption}" for s in run.shots) or "(none)",
                        step=0)
        for name, value in run.metrics.items():
            tf.summary.scalar(name, value, step=0)
    writer.flush()
    writer.close()
    return log_dir


def mlflow_key(key: str) -> str:
    """``key`` with every character MLflow refuses in a metric or parameter name (it takes letters,
    digits, ``_ - . / :`` and spaces) as ``_``: a layer sweep's ``gradcam@conv5_block3_out`` columns."""
    return re.sub(r"[^\w\-./: ]", "_", key)


def export_mlflow(run: FinishedRun, tracking_uri: str, experiment: str, run_name: str | None = None,
                  artifact_location: str | None = None) -> str:
    """One MLflow run in ``experiment`` of the store at ``tracking_uri``; its id. An absent experiment
    is made, its artifacts at ``artifact_location`` (None: where the store puts them)."""
    mlflow = require("mlflow")
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (found.experiment_id if found is not None
                     else client.create_experiment(experiment, artifact_location=artifact_location))
    created = client.create_run(experiment_id, run_name=run_name or run.folder.resolve().name,
                                tags={"gradcam.folder": str(run.folder.resolve()), "gradcam.version": run.version})
    run_id = created.info.run_id
    try:
        params = [Param(mlflow_key(key), value[:6000]) for key, value in run.params.items()]
        for start in range(0, len(params), PARAM_BATCH):
            client.log_batch(run_id, params=params[start:start + PARAM_BATCH])
        stamp = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(key), value, stamp, 0) for key, value in run.metrics.items()]
        for start in range(0, len(metrics), METRIC_BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + METRIC_BATCH])
        for path in run.artifacts:
            client.log_artifact(run_id, str(path))
        for shot in run.shots:
            parent = pathlib.PurePosixPath("overlays", shot.name).parent
            client.log_artifact(run_id, str(shot.file), artifact_path=str(parent))
        client.log_dict(run_id, {shot.name: shot.caption for shot in run.shots}, "overlays/captions.json")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


def export_wandb(run: FinishedRun, project: str, directory, mode: str = "offline",
                 run_name: str | None = None) -> pathlib.Path:
    """One W&B run (``mode`` offline: no account, no network; sync it later with ``wandb sync``)
    in ``directory``; the run's folder."""
    wandb = require("wandb")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    session = wandb.init(project=project, dir=str(directory), mode=mode, name=run_name or run.folder.resolve().name,
                         config=run.params, job_type="gradcam-export", reinit="create_new")
    try:
        table = wandb.Table(columns=TABLE_COLUMNS)
        for row in run.rows:
            picture = None if row.overlay is None else wandb.Image(str(row.overlay), caption=row.prediction)
            table.add_data(row.image, row.prediction, row.score, row.truth, picture)
        session.log({"gradcam/predictions": table,
                     "gradcam/overlays": [wandb.Image(str(shot.file), caption=shot.caption) for shot in run.shots]})
        session.summary.update(run.metrics)
        if run.artifacts:
            artifact = wandb.Artifact(f"gradcam-{session.id}", type="gradcam-run")
            for path in run.artifacts:
                artifact.add_file(str(path))
            session.log_artifact(artifact)
        folder = pathlib.Path(session.dir).parent  # .../wandb/offline-run-DATE-ID/files -> the run's folder
    finally:
        session.finish()
    return folder


def mlflow_images(images: Sequence[tuple[str, np.ndarray, str]], step: int) -> None:
    """Each overlay of (tag, (k, H, W, 3) uint8, caption) to the active MLflow run, at ``step``."""
    mlflow = require("mlflow")
    for tag, pictures, caption in images:
        for k, picture in enumerate(pictures):
            mlflow.log_image(picture, key=f"{tag}/{k}".replace(":", "_"), step=step)


def wandb_images(images: Sequence[tuple[str, np.ndarray, str]], step: int) -> None:
    """The overlays of (tag, (k, H, W, 3) uint8, caption) to the current W&B run, with the epoch."""
    wandb = require("wandb")
    if wandb.run is None:
        raise RuntimeError("GradCAMCallback(wandb=True) needs a W&B run: call wandb.init(...) before fit")
    wandb.log({tag: [wandb.Image(p, caption=caption) for p in pictures] for tag, pictures, caption in images}
              | {"epoch": step})

