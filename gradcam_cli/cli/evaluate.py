"""`gradcam evaluate`: are the maps faithful? Deletion / insertion, average drop / increase, ROAD,
pointing game and the sanity check, for every method and the random / centre baselines."""

from __future__ import annotations

import json
import sys

import click

from gradcam_cli.cli.common import EXIT_OK, EXIT_SOME_FAILED, errors, make_cam, model_options, model_settings
from gradcam_cli.cli.explain import _inputs, _methods
from gradcam_cli.cli.main import main

METRIC_NAMES = ("deletion", "insertion", "confidence", "road", "pointing", "localisation")


def _metric_list(ctx, param, value):
    names = list(METRIC_NAMES) if value.strip() == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or not names:
        raise click.BadParameter(f"unknown metric {', '.join(unknown) or '(none)'}; choose 'all' or a comma-separated "
                                 f"list of: {', '.join(METRIC_NAMES)}")
    return tuple(names)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", default="gradcam_eval", show_default=True, type=click.Path(file_okay=False),
              help="Output folder: evaluation.json(l), curves.png, sanity.png.")
@model_options
@click.option("--method", "methods", multiple=True, default=("gradcam",), show_default=True, callback=_methods,
              metavar="NAME", help="CAM method to evaluate; repeatable. The random and centre maps are always added.")
@click.option("-c", "--class", "classes", multiple=True, help="Explain this class for every image (default: top-1).")
@click.option("--metrics", "metrics", default="deletion,insertion,confidence,road", show_default=True,
              callback=_metric_list, help=f"'all' or a comma-separated list of: {', '.join(METRIC_NAMES)}.")
@click.option("--score", type=click.Choice(["probability", "logit"]), default="probability", show_default=True,
              help="The score the metrics read: after the head's softmax / sigmoid, or the logit before it.")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(2, 1000),
              help="Deletion / insertion steps.")
@click.option("--deletion-baseline", type=click.Choice(["black", "blur", "mean"]), default="black", show_default=True)
@click.option("--insertion-baseline", type=click.Choice(["black", "blur", "mean"]), default="blur", show_default=True)
@click.option("--boxes-csv", default=None, type=click.Path(dir_okay=False),
              help="path,label,x0,y0,x1,y1 rows (original pixels): enables pointing and localisation.")
@click.option("--tolerance", default=15.0, show_default=True, type=click.FloatRange(0),
              help="Pointing game: a hit within this many pixels of a box.")
@click.option("--sanity", "sanity_images", default=0, type=click.IntRange(0, 256), metavar="N",
              help="Cascading randomisation on the first N images (0: off).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random map, ROAD noise, bootstrap.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 1024))
@click.option("--resume", is_flag=True, help="Keep the images already in evaluation.jsonl (same settings).")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress (a bar on a terminal; a plain line every 10 s when stderr is a file).")
def evaluate(inputs, out_dir, methods, classes, metrics, score, steps, deletion_baseline, insertion_baseline,
             boxes_csv, tolerance, sanity_images, seed, batch_size, resume, quiet, **model_params) -> None:
    """Score each method's maps on a folder: a table (mean [95% bootstrap interval]) on stdout,
    evaluation.json, curves.png and sanity.png in --out.

    \b
    Example:
      gradcam evaluate sample_images/ --method gradcam --metrics all --sanity 4 --out eval/
    """
    from gradcam_cli.run.evaluate import EvalSettings, evaluate_folder, read_boxes, table

    methods = tuple(m for m in methods if m not in ("random", "centre"))  # always scored as baselines
    if not methods:
        raise click.UsageError("the random and centre maps are always scored; pass a --method to compare with them")
    if ({"pointing", "localisation"} & set(metrics)) and boxes_csv is None:
        raise click.UsageError("--metrics pointing / localisation need --boxes-csv path,label,x0,y0,x1,y1")
    refs = _inputs(inputs, False, (), False, None)
    settings = EvalSettings(methods=methods, metrics=metrics, classes=tuple(classes), score=score, steps=steps,
                            deletion_baseline=deletion_baseline, insertion_baseline=insertion_baseline,
                            boxes_csv=boxes_csv, tolerance=tolerance, seed=seed)
    cam = make_cam(model_settings(model_params))
    from gradcam_cli.cli.progress import Progress

    with errors():
        cam.resolve_classes(settings.classes)
        boxes = read_boxes(boxes_csv, cam.class_names, cam.split.num_classes) if boxes_csv else None
    bar = Progress(len(refs), quiet)
    failed = []

    def on_record(record: dict) -> None:
        bar.update(1)
        if record["status"] != "ok":
            failed.append(record)
            bar.write(f"gradcam: skipped {record['path']}: {record['message']}")

    try:
        with errors():
            document = evaluate_folder(cam, refs, settings, out_dir, batch_size=batch_size, resume=resume, boxes=boxes,
                                       sanity_images=sanity_images, on_record=on_record)
    finally:
        bar.close()
    for line in table(document):
        click.echo(line)
    for method, result in document.get("sanity", {}).items():
        verdict = "FAILED (maps barely change)" if result["failed"] else "passed"
        click.echo(f"sanity {method}: Spearman {json.dumps([round(v, 3) for v in result['spearman']])} -> {verdict}")
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)
