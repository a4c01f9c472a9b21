"""`gradcam report OUT_DIR`: one self-contained HTML page to browse a whole run."""

from __future__ import annotations

import click

from gradcam_cli.cli.common import errors
from gradcam_cli.cli.main import main


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--predictions", default="predictions.json", show_default=True,
              help="The run's predictions file in OUT_DIR (predictions.K-of-N.json for a shard).")
def report(out_dir, predictions) -> None:
    """Write OUT_DIR/report.html from a run's predictions.json: search, class filter, sort by
    confidence; mistakes first for a labelled test set. One file, no network, opens from file://.

    \b
    Example:
      gradcam explain test_set/ --out o/ --labels-csv labels.csv && gradcam report o/
    """
    from gradcam_cli.report import build_report

    with errors():
        path = build_report(out_dir, predictions)
    click.echo(str(path))
