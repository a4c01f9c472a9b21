"""`explain` and `evaluate` on volumes: a 3-D model's run (NIfTI files, DICOM series folders; on the
local or the Ray engine), its evaluation (deletion / insertion in 3-D), and a 2-D model's inputs cut
into slices (``--slice-axis``). Decided before any model loads, from the saved model's input rank
(:func:`gradcam_cli.models.input_rank.saved_input_rank`)."""

from __future__ import annotations

import json
import os
import sys

import click

from gradcam_cli.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_NO_IMAGES,
    EXIT_OK,
    EXIT_SOME_FAILED,
    CliError,
    errors,
    precheck_out,
    quiet_tensorflow,
)


def _nifti_arguments(inputs) -> list[str]:
    from gradcam_cli.io.volume import is_nifti
    from gradcam_cli.run.volumes import volume_refs

    named = [a for a in inputs if os.path.isfile(a) and is_nifti(a)]
    folders = [a for a in inputs if os.path.isdir(a)]
    return named + [r.path for r in volume_refs(folders) if is_nifti(r.path)]


def volume_run(stop, p: dict, settings, shard, ray_options=None) -> int | None:
    """The exit code of a volume run (a 3-D model), or None when the inputs are images (then a
    2-D model given a NIfTI volume without ``--slice-axis`` is a usage error here, exit 2)."""
    from gradcam_cli.models.input_rank import saved_input_rank

    rank = saved_input_rank(settings.model.model)
    axis = settings.depth.slice_axis
    if rank != 5:
        if axis is None:
            volumes = _nifti_arguments(p["inputs"])
            if volumes:
                raise click.UsageError(
                    f"input {volumes[0]} is a volume (NIfTI) but the model takes 2-D images; pass --slice-axis 0, 1 "
                    "or 2 to explain it slice by slice, or a 3-D model (--model) to explain it whole")
        return None
    if axis is not None:
        raise click.UsageError("--slice-axis applies to 2-D models; this model takes volumes whole: drop it")
    from gradcam_cli.run.volumes import volume_refs

    check_whole_input_run(p, "a volume run writes NIfTI maps, montages and GIFs")
    if settings.targets.kind != "class" or settings.targets.sidecar:
        raise click.UsageError(f"--target {settings.targets.kind}{' --sidecar' if settings.targets.sidecar else ''} "
                               "applies to 2-D images; a volume (3-D model) run explains class scores: drop it")
    refs = volume_refs(p["inputs"], not p["no_recursive"], shard)
    if not refs and not volume_refs(p["inputs"], not p["no_recursive"]):
        raise CliError(f"no volumes found in {' '.join(map(str, p['inputs']))} (looked for .nii, .nii.gz and "
                       "folders of DICOM files)", EXIT_NO_IMAGES)
    if p["dry_run"]:
        for ref in refs:
            click.echo(ref.path)
        return EXIT_OK
    precheck_out(p["out_dir"], None if shard is None else f"{shard[0]}-of-{shard[1]}", lock=True)
    return _run(stop, p, settings, shard, refs, ray_options)


def _run(stop, p: dict, settings, shard, refs, ray_options=None) -> int:
    from gradcam_cli.cli.progress import Progress
    from gradcam_cli.run.volumes import load_volume_model, run_volumes
    from gradcam_cli.settings import RunOptions

    quiet_tensorflow()
    if ray_options is not None:  # the actors take the GPUs; the driver's model only describes the run
        from gradcam_cli.run.ray_engine import keep_driver_off_gpus

        keep_driver_off_gpus()
    with errors():
        vm = load_volume_model(settings)
    progress = Progress(len(refs), p["quiet"])

    def on_record(record: dict) -> None:
        progress.update(1)
        if record["status"] != "ok":
            progress.write(f"gradcam: skipped {record['path']}: {record['message']}")
        if p["jsonl"] and not stop.pipe_closed:
            try:
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                stop.close_stdout()

    options = RunOptions(out_dir=p["out_dir"], batch_size=1, resume=p["resume"], shard=shard)
    with stop.during_run(progress), errors():
        if ray_options is None:
            summary = run_volumes(vm, refs, settings, options, on_record=on_record, stop=stop)
        else:  # split by volume over the actors
            from gradcam_cli.run.ray_volumes import run_volumes_ray

            summary = run_volumes_ray(vm, refs, settings, options, ray_options, on_record=on_record, stop=stop)
    if stop.pipe_closed:
        return EXIT_BROKEN_PIPE
    return finish_run(stop, p, summary, shard, "volumes")  # the volume in flight was finished; --resume goes on


def check_whole_input_run(p: dict, writes: str) -> None:
    """A run of whole inputs (volumes, or clips through a video model): a method not defined on them, or
    a flag for images, is a UsageError naming it (``writes``: what such a run writes instead)."""
    from gradcam_cli.methods.volumes import check_volume_methods

    try:
        check_volume_methods(p["methods"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for flag in ("grid", "boxes", "save_raw", "labels_csv"):
        if p.get(flag):
            raise click.UsageError(f"--{flag.replace('_', '-')} applies to images; {writes}: drop it")


def finish_run(stop, p: dict, summary, shard, what: str) -> int:
    """The end of a run of whole inputs (volumes, or clips through a video model): the interrupted
    line and 128 + the signal, or the summary line (``what``: the inputs' plural), the report where
    asked, and the exit code."""
    code = stop.interrupted_exit(summary)
    if code is not None:
        return code
    if not p["quiet"]:
        kept = f" ({summary.resumed} kept from the previous run)" if summary.resumed else ""
        click.echo(f"gradcam: {summary.done} {what} explained{kept}, {summary.failed} failed; results in "
                   f"{summary.out_dir}", err=True)
    if p["make_report"]:
        from gradcam_cli.report import build_report
        from gradcam_cli.run.naming import JSON_NAME, result_names

        with errors():
            build_report(p["out_dir"], result_names(shard)[JSON_NAME])
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def slice_refs(refs: list, axis: int, shard) -> list:
    """Each NIfTI input replaced by its slices along ``axis`` (``frame`` 1..N, stems ``NAME.sliceK``),
    then the shard taken."""
    from dataclasses import replace

    from gradcam_cli.io.discover import in_shard
    from gradcam_cli.io.volume import is_nifti, slice_count

    out = []
    for ref in refs:
        if not is_nifti(ref.path):
            if not ref.path.lower().endswith(".gz"):  # a .gz is never an image: only .nii.gz was looked for
                out.append(ref)
            continue
        count = slice_count(ref.path, axis)
        stem = ref.out_stem.removesuffix(".nii")
        width = len(str(count))
        out.extend(replace(ref, out_stem=f"{stem}.slice{k:0{width}d}", frame=k) for k in range(1, count + 1))
    return [ref for ref in out if shard is None or in_shard(ref, *shard)]


def evaluate_refs(p: dict, model_path: str | None) -> list:
    """``evaluate``'s inputs for a 2-D model: with ``--slice-axis`` each NIfTI input becomes its
    slices, as for ``explain``; without it a NIfTI input is refused in one line."""
    from gradcam_cli.cli.common import discover_inputs
    from gradcam_cli.io.discover import DEFAULT_EXTENSIONS

    axis = p.get("slice_axis")
    if axis is None:
        volumes = _nifti_arguments(p["inputs"])
        if volumes:
            raise click.UsageError(f"input {volumes[0]} is a volume (NIfTI) but the model takes 2-D images; pass "
                                   "--slice-axis 0, 1 or 2 to evaluate it slice by slice")
        return discover_inputs(p["inputs"], p["no_recursive"], p["extensions"], p["null"], out_dir=p["out_dir"])
    exts = (*(p["extensions"] or DEFAULT_EXTENSIONS), ".nii", ".gz")
    refs = discover_inputs(p["inputs"], p["no_recursive"], exts, p["null"], out_dir=p["out_dir"])
    return slice_refs(refs, axis, None)


def volume_evaluate(stop, p: dict, settings, model) -> int | None:
    """``evaluate`` with a 3-D model: deletion / insertion in 3-D on every volume (exit code), or None
    for a 2-D model. What is not defined on volumes is refused in one line before the model loads:
    a metric other than deletion / insertion named in ``--metrics`` (without it, those two are
    measured), ``--sanity``, ``--boxes-csv``, ``--slice-axis``, ``--layers``, a method not defined in 3-D."""
    from dataclasses import replace

    from click.core import ParameterSource

    from gradcam_cli.metrics.volumes import VOLUME_METRICS, check_volume_metrics
    from gradcam_cli.methods.volumes import check_volume_methods
    from gradcam_cli.models.input_rank import saved_input_rank

    if saved_input_rank(model.model) != 5:
        return None
    named = click.get_current_context().get_parameter_source("metrics") not in (ParameterSource.DEFAULT, None)
    metrics = settings.metrics if named else VOLUME_METRICS
    try:
        check_volume_metrics(metrics)
        check_volume_methods(settings.methods)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for flag, value in (("sanity", p.get("sanity_images")), ("boxes-csv", p.get("boxes_csv")),
                        ("slice-axis", p.get("slice_axis")), ("layers", p.get("layers"))):
        if value:
            raise click.UsageError(f"--{flag} is not defined on volumes (3-D models): evaluate measures deletion and "
                                   "insertion in 3-D; drop it")
    from gradcam_cli.run.volumes import volume_refs

    refs = volume_refs(p["inputs"], not p["no_recursive"])
    if not refs:
        raise CliError(f"no volumes found in {' '.join(map(str, p['inputs']))} (looked for .nii, .nii.gz and "
                       "folders of DICOM files)", EXIT_NO_IMAGES)
    precheck_out(p["out_dir"], lock=True)
    return _evaluate_volumes(stop, p, replace(settings, metrics=metrics), model, refs)


def _evaluate_volumes(stop, p: dict, settings, model, refs) -> int:
    from gradcam_cli.cli.common import print_table
    from gradcam_cli.cli.progress import Progress
    from gradcam_cli.run.evaluate_volumes import evaluate_volumes, run_settings_for
    from gradcam_cli.run.volumes import load_volume_model

    quiet_tensorflow()
    run = run_settings_for(settings, model)
    with errors():
        vm = load_volume_model(run)
        for c in settings.classes:
            vm.names.resolve(c, vm.split.num_classes)
    bar = Progress(len(refs), p["quiet"])

    def on_record(record: dict) -> None:
        bar.update(1)
        if record["status"] != "ok":
            bar.write(f"gradcam: skipped {record['path']}: {record['message']}")

    with stop.during_run(bar), errors():
        document, summary = evaluate_volumes(vm, refs, settings, run, p["out_dir"], resume=p["resume"],
                                             on_record=on_record, stop=stop)
    code = stop.interrupted_exit(summary)
    if code is not None:
        return code
    fields = list(document["better"])
    rows = [[method] + [f"{row[f]['mean']:.3f} [{row[f]['low']:.3f}, {row[f]['high']:.3f}]" if f in row else "-"
                        for f in fields] for method, row in document["aggregate"].items()]
    print_table(rows, ["method"] + [f"{f} ({document['better'][f]}, n={summary.done})" for f in fields])
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK
