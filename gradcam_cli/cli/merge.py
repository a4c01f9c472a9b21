"""`gradcam merge` (a sharded run's predictions in one file) and `gradcam export` (predictions as CSV, or a
finished run to TensorBoard, MLflow or W&B: :mod:`gradcam_cli.trackers`)."""

from __future__ import annotations

import click

from gradcam_cli.cli.common import errors, quiet_tensorflow
from gradcam_cli.cli.main import main


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--report", "make_report", is_flag=True, help="Also write OUT_DIR/report.html of the merged run.")
def merge(out_dir, make_report) -> None:
    """Merge the shards of one run (predictions.K-of-N.json, all N of them, the same settings) into
    OUT_DIR/predictions.json: every record sorted by path, the summary counted afresh.

    \b
    Example:
      gradcam explain photos/ --out heat/ --shard 1/2 & gradcam explain photos/ --out heat/ --shard 2/2; wait
      gradcam merge heat/ --report
    """
    from gradcam_cli.run.merge import merge_shards

    with errors():
        path = merge_shards(out_dir)
    click.echo(str(path))
    if make_report:
        from gradcam_cli.report import build_report

        with errors():
            click.echo(str(build_report(out_dir)))


EXPORT_TO = ("csv", "tensorboard", "mlflow", "wandb")
#: the options of one tracker each: given with another --to they are a usage error
_TRACKER_OPTIONS = {"log_dir": "tensorboard", "tracking_uri": "mlflow", "experiment": "mlflow", "project": "wandb",
                    "wandb_dir": "wandb", "wandb_mode": "wandb"}


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--predictions", default="predictions.json", show_default=True,
              help="The run's predictions file in OUT_DIR (predictions.K-of-N.json for a shard).")
@click.option("--to", "to", type=click.Choice(EXPORT_TO), default="csv", show_default=True,
              help="csv: OUT_DIR/predictions.csv; or a tracker: overlays (top-N in the caption), settings as "
                   "parameters, evaluate's figures as metrics, report.html and predictions.json as artifacts.")
@click.option("--log-dir", type=click.Path(file_okay=False), default=None,
              help="TensorBoard: the log folder to write  [default: OUT_DIR/tensorboard]")
@click.option("--tracking-uri", default=None,
              help="MLflow: any tracking URI  [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here]")
@click.option("--experiment", default=None, help="MLflow: the experiment (made when absent)  [default: gradcam]")
@click.option("--project", default=None, help="W&B: the project  [default: gradcam]")
@click.option("--wandb-dir", type=click.Path(file_okay=False), default=None,
              help="W&B: its run folders go under DIR/wandb/  [default: .]")
@click.option("--wandb-mode", type=click.Choice(("offline", "online")), default=None,
              help="W&B: offline needs no account (`wandb sync` later)  [default: $WANDB_MODE, else offline]")
@click.option("--run-name", default=None, help="MLflow, W&B: the run's name  [default: OUT_DIR's name]")
@click.option("--evaluation", type=click.Path(), default=None,
              help="`gradcam evaluate`'s output (its folder or evaluation.json) for the metrics  "
                   "[default: OUT_DIR/evaluation.json when there is one]")
def export(out_dir, predictions, to, run_name, evaluation, **trackers) -> None:
    """Export a finished run: as CSV (OUT_DIR/predictions.csv: one row per explained class with its
    rank, label, probability (or value), true-class flag and overlay; one row per failed image), or
    to TensorBoard, MLflow or Weights & Biases (the [tensorboard], [mlflow], [wandb] extras).

    \b
    Example:
      gradcam export heat/ && column -s, -t < heat/predictions.csv | head
      gradcam export heat/ --to tensorboard --log-dir logs/heat && tensorboard --logdir logs
      gradcam export heat/ --to mlflow --tracking-uri http://localhost:5000
      gradcam export heat/ --to wandb --project pets          # offline; `wandb sync` uploads it
    """
    for name, value in trackers.items():
        if value is not None and _TRACKER_OPTIONS[name] != to:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{flag} is for --to {_TRACKER_OPTIONS[name]}, not --to {to}: drop it, "
                                   f"or export with --to {_TRACKER_OPTIONS[name]}")
    if to == "csv":
        if run_name is not None or evaluation is not None:
            raise click.UsageError("--run-name and --evaluation are for --to tensorboard, mlflow or wandb, not csv")
        from gradcam_cli.run.merge import export_csv

        with errors():
            click.echo(str(export_csv(out_dir, predictions)))
        return
    from gradcam_cli.trackers.export import DEFAULT_PROJECT, ExportTarget, export_run

    target = ExportTarget(to=to, log_dir=trackers["log_dir"], tracking_uri=trackers["tracking_uri"],
                          experiment=trackers["experiment"] or DEFAULT_PROJECT,
                          project=trackers["project"] or DEFAULT_PROJECT, wandb_dir=trackers["wandb_dir"] or ".",
                          wandb_mode=trackers["wandb_mode"], run_name=run_name)
    quiet_tensorflow()  # the run's reader and TensorBoard's writer import it: no start-up chatter
    with errors():
        click.echo(export_run(out_dir, target, predictions, evaluation))
