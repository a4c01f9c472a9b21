"""``--target`` and its files: the settings record and every check that needs no model (docs/targets.md)."""

from __future__ import annotations

import os

import click

from gradcam_cli.cli.common import errors
from gradcam_cli.settings import TargetSettings


def target_settings(p: dict, classes: tuple, methods: tuple) -> TargetSettings:
    """The :class:`TargetSettings` the flags describe; a one-line usage error for a flag that does not
    fit the target, a method that makes no sense for it, or a missing mask or reference."""
    kind, mask, reference, embedding = p["target_kind"], p["mask"], p["reference"], p["embedding"]
    if mask is not None and kind != "segmentation":
        raise click.UsageError(f"--mask applies to --target segmentation, not --target {kind}")
    for flag, value in (("--reference", reference), ("--embedding", embedding)):
        if value is not None and kind != "similarity":
            raise click.UsageError(f"{flag} applies to --target similarity, not --target {kind}")
    for flag, value in (("--boxes-top", p.get("boxes_top")), ("--box-score-threshold", p.get("box_score_threshold"))):
        if value is not None and kind != "box":
            raise click.UsageError(f"{flag} applies to --target box, not --target {kind}")
    if kind == "box" and (classes or p["aug_smooth"]):
        raise click.UsageError("--target box explains each image's top detections (--boxes-top N): leave out "
                               + ("--class" if classes else "--aug-smooth (a flipped image has other detections)"))
    if kind == "similarity" and reference is None:
        raise click.UsageError("--target similarity needs --reference IMAGE_OR_NPY (or a folder of them)")
    if kind != "class":
        given = [flag for flag, value in (("--threshold", p["threshold"]), ("--labels-csv", p["labels_csv"]))
                 if value is not None]
        if given:
            raise click.UsageError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to --target class (class probabilities and labels), "
                                   f"not --target {kind}")
        if mask is not None and p["aug_smooth"]:
            raise click.UsageError("--aug-smooth flips the image but not its --mask: leave out one of them")
    from gradcam_cli.methods import get_method
    from gradcam_cli.targets import check_methods, get_target

    with errors():
        check_methods(get_target(kind), [get_method(m) for m in methods])
        if reference is not None:
            from gradcam_cli.io.target_files import reference_files

            reference_files(reference)
        if mask is not None:
            from gradcam_cli.io.target_files import Masks

            Masks(mask)
    absolute = lambda v: None if v is None else os.path.abspath(v)
    from gradcam_cli.targets.boxes import DEFAULT_BOXES_TOP

    top = (p.get("boxes_top") or DEFAULT_BOXES_TOP) if kind == "box" else p["top"]
    return TargetSettings(top=top, classes=tuple(classes), threshold=p["threshold"],
                          labels_csv=absolute(p["labels_csv"]), kind=kind, mask=absolute(mask),
                          reference=absolute(reference), embedding=embedding, sidecar=p["sidecar"],
                          box_score_threshold=p.get("box_score_threshold"))


def check_mask_sizes(settings: TargetSettings, refs: list) -> None:
    """Each input's mask is there and of the image's size (headers only), and its sidecar is there,
    before the model loads."""
    if settings.sidecar:
        from gradcam_cli.errors import InputError
        from gradcam_cli.io.sidecar import sidecar_path

        with errors():
            for ref in refs:
                if not sidecar_path(ref.path).is_file():
                    raise InputError(f"image {ref.path} has no sidecar ({sidecar_path(ref.path)} or its .csv); "
                                     "write its non-image inputs there, or leave out --sidecar")
    if settings.mask is None:
        return
    from gradcam_cli.io.target_files import Masks, image_size

    masks = Masks(settings.mask)
    with errors():
        for ref in refs:
            size = image_size(ref.path)
            if size != (0, 0):  # an unreadable image gets its own error record
                masks.check_size(ref.path, size)
