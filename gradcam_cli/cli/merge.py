"""`gradcam merge` (a sharded run's predictions in one file) and `gradcam export` (predictions as CSV)."""

from __future__ import annotations

import click

from gradcam_cli.cli.common import errors
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


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--predictions", default="predictions.json", show_default=True,
              help="The run's predictions file in OUT_DIR (predictions.K-of-N.json for a shard).")
def export(out_dir, predictions) -> None:
    """Write a run's predictions as CSV (OUT_DIR/predictions.csv): one row per explained class with
    its rank, label, probability (or value), true-class flag and overlay; one row per failed image.

    \b
    Example:
      gradcam export heat/ && column -s, -t < heat/predictions.csv | head
    """
    from gradcam_cli.run.merge import export_csv

    with errors():
        click.echo(str(export_csv(out_dir, predictions)))
