"""`gradcam pictures OUT_DIR`: a finished run's grids, GIFs (and report), without running it again."""

from __future__ import annotations

import click

from gradcam_cli.cli.common import EXIT_OK, EXIT_SOME_FAILED, errors
from gradcam_cli.cli.interrupt import run_stopping_cleanly
from gradcam_cli.cli.main import main
from gradcam_cli.cli.options import after_run_picture_options, quiet_option

PICTURES_EXIT_CODES = """\b
Exit codes:
  0  every explained image got its pictures
  1  some images were passed over (one warning line each: no original, no maps)
  2  usage error, or no run in OUT_DIR (no predictions.json, shards not merged, an older
     run without its settings, one that kept neither maps nor overlays), or another run
     is writing into it
  3  OUT_DIR cannot be written
  130  interrupted by Ctrl-C (143: SIGTERM); the pictures written so far are whole
"""


@main.command(epilog=PICTURES_EXIT_CODES)
@click.argument("out_dir", type=click.Path(file_okay=False))
@after_run_picture_options
@click.option("--report", "make_report", is_flag=True, help="Also write OUT_DIR/report.html (`gradcam report`).")
@click.option("--predictions", default="predictions.json", show_default=True,
              help="The run's predictions file in OUT_DIR (predictions.K-of-N.json for a shard).")
@quiet_option
def pictures(out_dir, grid, grid_columns, grid_tile, gif, gif_ms, overlay_max_side, make_report, predictions,
             quiet) -> None:
    """Add grids and GIFs (--grid, --gif, as `explain` makes them) and a report to a finished run in
    OUT_DIR, without the model: from its --save-raw maps and the original images, the pictures
    `explain --grid --gif` would have written; without maps, from its overlay JPEGs (then the
    tiles are those JPEGs, decoded once more). Each setting defaults to the run's. Originals are
    read at the paths predictions.json records (relative to where `explain` ran). Written files
    go to stdout, one per line; predictions.json is not changed.

    \b
    Example:
      gradcam explain photos/ --out heat/ --save-raw && gradcam pictures heat/ --grid --gif --grid-columns 4
    """
    if not (grid or gif or make_report):
        raise click.UsageError("say what to add: --grid, --gif and / or --report")
    given = [flag for flag, value, wanted in (("--grid-columns", grid_columns, grid), ("--grid-tile", grid_tile, grid),
                                               ("--gif-ms", gif_ms, gif)) if value is not None and not wanted]
    if given:
        raise click.UsageError(f"{', '.join(given)} apply to --grid / --gif; add the picture they set")
    from gradcam_cli.run.pictures import PictureRequest

    request = PictureRequest(grid=grid, gif=gif, columns=grid_columns, tile=grid_tile, ms=gif_ms,
                             max_side=overlay_max_side)
    run_stopping_cleanly(lambda _: _pictures(out_dir, request, make_report, predictions, quiet),
                         f"the pictures written so far are in {out_dir}; rerun to make them all")


def _pictures(out_dir, request, make_report: bool, predictions: str, quiet: bool) -> int:
    import os

    from gradcam_cli.cli.progress import Progress
    from gradcam_cli.run.pictures import add_pictures, open_run

    summary = None
    if request.grid or request.gif:
        with errors():
            document, settings = open_run(out_dir, predictions)
        bar = Progress(len(document["images"]), quiet)
        try:
            with errors():
                summary = add_pictures(out_dir, document, settings, request, predictions,
                                       warn=lambda line: bar.write(f"gradcam: warning: {line}"), progress=bar.update)
        finally:
            bar.close()
        for name in summary.files:
            click.echo(os.path.join(out_dir, name))
        if not quiet:
            click.echo(f"gradcam: {summary.from_maps} images drawn from their maps, {summary.from_overlays} from their "
                       f"overlay JPEGs, {summary.skipped} passed over ({summary.failed_in_run} had failed in the run); "
                       f"in {out_dir}", err=True)
    if make_report:
        from gradcam_cli.report import build_report

        with errors():
            click.echo(str(build_report(out_dir, predictions)))
    return EXIT_SOME_FAILED if summary is not None and summary.skipped else EXIT_OK
