"""`gradcam evaluate`: are the maps faithful? Deletion / insertion, average drop / increase, ROAD,
pointing game and the sanity check, for every method and the random / centre baselines."""

from __future__ import annotations

import json

import click

from gradcam_cli.cli.common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    class_names_before_loading,
    errors,
    make_cam,
    precheck_out,
    print_table,
)
from gradcam_cli.cli.interrupt import run_stopping_cleanly
from gradcam_cli.cli.main import main
from gradcam_cli.cli.options import (
    depth_options,
    depth_settings,
    input_options,
    io_threads_option,
    method_option,
    method_options,
    method_settings,
    model_options,
    model_settings,
    quiet_option,
)
from gradcam_cli.metrics import get_metric, metric_names
from gradcam_cli.metrics.baselines import BASELINES
from gradcam_cli.metrics.perturbation import BASELINES as FILLS
from gradcam_cli.metrics.registry import default_metric_names
from gradcam_cli.settings import EvalSettings
from gradcam_cli.targets import DEFAULT_TARGET, get_target, target_names

DEFAULTS = EvalSettings()
ALL = ("all",)  # --metrics all: every metric that applies to the inputs given (see _chosen_metrics)


def _layer_list(ctx, param, value):
    """``--layers``: None, a sweep's count (``sweep``, ``sweep:K``) or layer names; resolved on the model."""
    if value is None:
        return None
    from gradcam_cli.models.sweep import parse_layers

    try:
        return parse_layers(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _chosen_metrics(asked: tuple, boxes_csv: str | None) -> tuple:
    """The metrics to measure: ``all`` -> every metric that applies (the box metrics only with
    --boxes-csv; the ones left out said in one stderr line); named ones needing boxes without
    them -> a usage error."""
    boxed = [m for m in metric_names() if get_metric(m).needs_boxes]
    if asked == ALL:
        if boxes_csv is None and boxed:
            click.echo(f"gradcam: --metrics all: left out {', '.join(boxed)} (they need --boxes-csv "
                       "path,label,x0,y0,x1,y1)", err=True)
        return tuple(m for m in metric_names() if boxes_csv is not None or m not in boxed)
    if any(m in boxed for m in asked) and boxes_csv is None:
        raise click.UsageError(f"--metrics {' / '.join(m for m in asked if m in boxed)} need --boxes-csv "
                               "path,label,x0,y0,x1,y1")
    return asked


def _check_boxes_before_loading(p: dict) -> None:
    """``--boxes-csv`` read, and its labels resolved where the class list is known without the model
    (``--labels``, a registry backbone's list), so a malformed row or an unknown or ambiguous class
    is one line before the model loads; the labels are resolved again on the model's own list."""
    if p["boxes_csv"] is None:
        return
    from gradcam_cli.errors import TargetError
    from gradcam_cli.metrics.pointing import read_boxes_csv

    with errors():
        labels = sorted({box.label for boxes in read_boxes_csv(p["boxes_csv"]).values() for box in boxes})
        names = class_names_before_loading(model_settings(p))
        for label in labels if names is not None else ():
            try:
                names.resolve(label)
            except TargetError as exc:
                raise TargetError(f"--boxes-csv {p['boxes_csv']}: {exc}") from None


def _metric_list(ctx, param, value):
    if value.strip() == "all":
        return ALL
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise click.BadParameter(f"no metric given; choose 'all' or a comma-separated list of: {', '.join(metric_names())}")
    try:
        return tuple(get_metric(name).name for name in names)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", default="gradcam_eval", show_default=True, type=click.Path(file_okay=False),
              help="Output folder: evaluation.json(l), curves.png, sanity.png.")
@input_options
@depth_options
@model_options
@method_option("Repeatable: each is evaluated. The random and centre maps are always added.")
@method_options
@click.option("-c", "--class", "classes", multiple=True, help="Explain this class for every image (default: top-1).")
@click.option("--target", "target_kind", type=click.Choice(target_names()), default=DEFAULT_TARGET, show_default=True,
              help="What the maps explain; the metrics are defined for class scores only (docs/targets.md).")
@click.option("--metrics", "metrics", default=",".join(default_metric_names()), show_default=True,
              callback=_metric_list, help=f"'all' (every metric that applies: the box metrics with --boxes-csv) "
                                          f"or a comma-separated list of: {', '.join(metric_names())}.")
@click.option("--layers", "layers", default=None, callback=_layer_list, metavar="A,B,C|sweep[:K]",
              help="Score every method at each of these layers (columns method@layer), all from one compiled "
                   "pass per batch; 'sweep': the last 4 block outputs found from the graph ('sweep:K': K).")
@click.option("--score", type=click.Choice(["probability", "logit"]), default=DEFAULTS.score, show_default=True,
              help="The score the metrics read: after the head's softmax / sigmoid, or the logit before it.")
@click.option("--steps", default=DEFAULTS.steps, show_default=True, type=click.IntRange(2, 1000),
              help="Deletion / insertion steps.")
@click.option("--deletion-baseline", type=click.Choice(FILLS), default=DEFAULTS.deletion_baseline, show_default=True)
@click.option("--insertion-baseline", type=click.Choice(FILLS), default=DEFAULTS.insertion_baseline,
              show_default=True)
@click.option("--boxes-csv", default=None, type=click.Path(dir_okay=False),
              help="path,label,x0,y0,x1,y1 rows (original pixels): enables pointing and localisation.")
@click.option("--tolerance", default=DEFAULTS.tolerance, show_default=True, type=click.FloatRange(0),
              help="Pointing game: a hit within this many pixels of a box.")
@click.option("--sanity", "sanity_images", default=0, type=click.IntRange(0, 256), metavar="N",
              help="Cascading randomisation on the first N images (0: off).")
@click.option("--seed", default=DEFAULTS.seed, show_default=True, type=int,
              help="Seed of the random map, ROAD noise, bootstrap.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 1024))
@io_threads_option
@click.option("--resume", is_flag=True,
              help="Keep the images already evaluated in --out (same settings required); redo the rest.")
@quiet_option
def evaluate(**p) -> None:
    """Score each method's maps on a folder: a table (mean [95% bootstrap interval]) and a line
    recommending the best method (and layer, with --layers) or saying there is no clear winner
    on stdout; evaluation.json, curves.png and sanity.png in --out.

    Ctrl-C (or SIGTERM) finishes the batch in flight, writes evaluation.json for what is done
    and exits 130 (143); rerun with --resume to go on.

    \b
    Example:
      gradcam evaluate sample_images/ --method gradcam --metrics all --sanity 4 --out eval/
      gradcam evaluate images/ --layers sweep --metrics pointing --boxes-csv boxes.csv --out eval/
    """
    run_stopping_cleanly(lambda stop: _evaluate(stop, p))


def _evaluate(stop, p: dict) -> int:
    """The command's work (``p``: its parameters); returns the exit code."""
    from gradcam_cli.run.evaluate import evaluate_folder, read_boxes

    target = get_target(p["target_kind"])
    if not target.evaluate:
        raise click.UsageError(f"--target {target.name} cannot be evaluated: the metrics (deletion, insertion, "
                               "confidence, ROAD, pointing) are defined on class scores; evaluate --target class")
    methods = tuple(m for m in p["methods"] if m not in BASELINES)  # always scored as baselines
    if not methods:
        raise click.UsageError("the random and centre maps are always scored; pass a --method to compare with them")
    p["metrics"] = _chosen_metrics(p["metrics"], p["boxes_csv"])
    _check_boxes_before_loading(p)
    from gradcam_cli.cli.volumes import evaluate_refs, volume_evaluate

    settings = EvalSettings(methods=methods, metrics=p["metrics"], classes=tuple(p["classes"]), score=p["score"],
                            steps=p["steps"], deletion_baseline=p["deletion_baseline"],
                            insertion_baseline=p["insertion_baseline"], boxes_csv=p["boxes_csv"],
                            tolerance=p["tolerance"], seed=p["seed"], method_options=method_settings(p),
                            depth=depth_settings(p))
    code = volume_evaluate(stop, p, settings, model_settings(p))  # a 3-D model: deletion / insertion in 3-D
    if code is not None:
        return code
    refs = evaluate_refs(p, model_settings(p).model)  # a volume: its slices (--slice-axis), or a refusal
    precheck_out(p["out_dir"], lock=True)
    cam = make_cam(model_settings(p), settings.methods)
    from gradcam_cli.cli.progress import Progress

    with errors():
        cam.resolve_classes(settings.classes)
        if p["layers"] is not None:  # checked on the model's graph before it runs
            from dataclasses import replace

            from gradcam_cli.models.sweep import resolve_layers

            settings = replace(settings, layers=tuple(resolve_layers(cam.model, p["layers"], cam.profile.output,
                                                                     cam.token_settings, cam.profile.input_size)))
        boxes = read_boxes(p["boxes_csv"], cam.class_names, cam.split.num_classes) if p["boxes_csv"] else None
    bar = Progress(len(refs), p["quiet"])

    def on_record(record: dict) -> None:
        bar.update(1)
        if record["status"] != "ok":
            bar.write(f"gradcam: skipped {record['path']}: {record['message']}")
        for warning in record.get("warnings", ()):
            bar.write(f"gradcam: warning: {record['path']}: {warning}")

    with stop.during_run(bar), errors():
        document, summary = evaluate_folder(
            cam, refs, settings, p["out_dir"], batch_size=p["batch_size"], resume=p["resume"], boxes=boxes,
            sanity_images=p["sanity_images"], on_record=on_record, stop=stop, workers=p["io_threads"])
    code = stop.interrupted_exit(summary)
    if code is not None:
        return code
    _print_table(document)
    click.echo(document["recommendation"]["line"])
    for method, result in document.get("sanity", {}).items():
        verdict = "FAILED (maps barely change)" if result["failed"] else "passed"
        click.echo(f"sanity {method}: Spearman {json.dumps([round(v, 3) for v in result['spearman']])} -> {verdict}")
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def _print_table(document: dict) -> None:
    """The aggregate on stdout: methods x tabled fields, mean [95% interval]; each column's head says
    how many images it covers (``n``: the pointing game only counts images with boxes), or each
    cell does where the methods' counts differ."""
    better, aggregate = document["better"], document["aggregate"]
    fields = [f for f in better if any(f in row for row in aggregate.values())]
    counts = {f: {row[f]["n"] for row in aggregate.values() if f in row} for f in fields}
    rows = []
    for method, row in aggregate.items():
        cells = [method]
        for f in fields:
            v = row.get(f)
            cell = "-" if v is None else f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"
            cells.append(cell if v is None or len(counts[f]) == 1 else f"{cell} n={v['n']}")
        rows.append(cells)
    heads = [f"{f} ({better[f]}, n={next(iter(counts[f]))})" if len(counts[f]) == 1 else f"{f} ({better[f]})"
             for f in fields]
    print_table(rows, ["method"] + heads)
