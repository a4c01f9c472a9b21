"""A finished run folder, read once for every tracker: its overlays with their captions, its settings
as parameters, its ``evaluate`` figures as metrics, and the files to keep beside them.

Reads ``predictions.json`` (what ``gradcam explain --out`` writes) and, when there is one,
``evaluation.json`` (``gradcam evaluate --out``, in the same folder or named with ``evaluation=``).
A folder of an older version whose file lacks what this reads, or no ``predictions.json``, is an
:class:`~gradcam_cli.errors.InputError` of one line."""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass, field

from gradcam_cli._version import __version__
from gradcam_cli.errors import InputError
from gradcam_cli.run.merge import load_predictions
from gradcam_cli.run.naming import JSON_NAME

EVALUATION = "evaluation.json"
#: files of a run kept as artifacts where they exist (evaluate's beside them when read)
RUN_ARTIFACTS = ("predictions.json", "report.html")
EVALUATION_ARTIFACTS = ("evaluation.json", "curves.png", "sanity.png")
#: header fields recorded as parameters beside the settings
HEADER_PARAMS = ("version", "backbone", "model", "target_layer", "method", "head", "precision", "weights")


@dataclass(frozen=True)
class Shot:
    """One overlay file of a run: the map of ``label`` for the input ``image``."""

    file: pathlib.Path  # on disk
    name: str  # relative to the run folder (the tag it is logged under)
    image: str  # the input's path as the run recorded it
    label: str  # the explained class
    caption: str  # the input, this map's class, and the image's top-N


@dataclass(frozen=True)
class Row:
    """One input: its top prediction, its true class (test-set mode) and its first map's overlay."""

    image: str
    prediction: str
    score: float | None
    truth: str | None
    overlay: pathlib.Path | None


@dataclass(frozen=True)
class FinishedRun:
    folder: pathlib.Path
    version: str
    params: dict[str, str]
    metrics: dict[str, float]
    shots: list[Shot] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    artifacts: list[pathlib.Path] = field(default_factory=list)


def _score(entry: dict) -> float | None:
    value = entry.get("probability", entry.get("value"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _entry_text(entry: dict) -> str:
    score = _score(entry)
    return entry.get("label", "?") if score is None else f"{entry.get('label', '?')} {score:.3f}"


def top_caption(record: dict, top: int | None) -> str:
    """``top-2: blue 0.364, green 0.353`` (+ ``; truth: red (rank 3)``): an image's ranked classes,
    without the true class's extra map (test-set mode) when it is not among them; ``top`` None: the
    run asked classes (``--class``), shown as ``classes: ...``."""
    entries = [e for e in record.get("predictions") or [] if isinstance(e, dict) and isinstance(e.get("rank"), int)]
    if top is not None:
        entries = sorted((e for e in entries if not e.get("true_class") or e["rank"] <= top), key=lambda e: e["rank"])
    head = f"top-{len(entries)}" if top is not None else "classes"
    text = f"{head}: " + ", ".join(_entry_text(e) for e in entries)
    truth = record.get("true_label")
    if isinstance(truth, dict) and truth.get("label") is not None:
        text += f"; truth: {truth['label']} (rank {truth.get('rank', '?')})"
    return text


def _overlay_files(entry: dict) -> list[str]:
    """An entry's overlay names: one method's ``overlay``, or several methods' ``overlays`` dict."""
    if isinstance(entry.get("overlay"), str):
        return [entry["overlay"]]
    return [name for name in (entry.get("overlays") or {}).values() if isinstance(name, str)]


def _old(source: pathlib.Path, document: dict, missing: str) -> InputError:
    version = document.get("version", "unknown") if isinstance(document, dict) else "unknown"
    if version != __version__:
        return InputError(f"{source} was written by gradcam-cli {version}, whose format lacks {missing}; "
                          f"rerun `gradcam explain ... --out {source.parent}` with gradcam-cli {__version__} "
                          "and export that")
    return InputError(f"{source} is not a finished run's predictions file: it lacks {missing}; rerun `gradcam "
                      f"explain ... --out {source.parent}` and export that")


def _checked(folder: pathlib.Path, predictions: str) -> dict:
    document = load_predictions(folder, predictions)
    source = folder / predictions
    if not isinstance(document, dict) or document.get("tool") != "gradcam-cli":
        raise InputError(f"{source} is not a gradcam-cli predictions file (no \"tool\": \"gradcam-cli\"); "
                         "name the folder `gradcam explain --out` wrote")
    if not isinstance(document.get("images"), list):
        raise _old(source, document, "an 'images' list")
    options = document.get("options")
    if not isinstance(options, dict) or "methods" not in options:
        raise _old(source, document, "the run's settings ('options' with 'methods')")
    return document


def _params(document: dict) -> dict[str, str]:
    params = {key: str(document[key]) for key in HEADER_PARAMS if document.get(key) is not None}
    for key, value in document["options"].items():
        params[key] = value if isinstance(value, str) else json.dumps(value)
    return params


def numbers(tree, prefix: str) -> dict[str, float]:
    """Every finite number under ``tree`` (nested dicts; lists by position), as ``prefix.a.b.0``."""
    found = {}
    if isinstance(tree, bool):
        return found
    if isinstance(tree, (int, float)):
        return {prefix: float(tree)} if math.isfinite(tree) else found
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        found.update(numbers(value, f"{prefix}.{key}"))
    return found


def _evaluation(folder: pathlib.Path, evaluation: str | pathlib.Path | None) -> tuple[dict, list[pathlib.Path]]:
    """(metrics, artifacts) of ``evaluate``'s file: ``evaluation`` (a file, or a folder holding one),
    else the run folder's own; none there is no error unless it was named."""
    path = pathlib.Path(evaluation) if evaluation is not None else folder / EVALUATION
    if path.is_dir():
        path = path / EVALUATION
    if not path.is_file():
        if evaluation is None:
            return {}, []
        raise InputError(f"no {EVALUATION} at {path}: name the folder `gradcam evaluate --out` wrote")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read {path} as JSON ({exc}); rerun `gradcam evaluate` into that folder") from None
    if not isinstance(document, dict) or "aggregate" not in document:
        raise InputError(f"{path} holds no 'aggregate' figures: not a `gradcam evaluate` file of gradcam-cli "
                         f"{__version__}; rerun `gradcam evaluate` and export again")
    files = [path.parent / name for name in EVALUATION_ARTIFACTS if (path.parent / name).is_file()]
    return numbers(document["aggregate"], "evaluate"), files


def read_run(folder, predictions: str = JSON_NAME, evaluation=None) -> FinishedRun:
    """The finished run in ``folder``: overlays and captions, settings, figures and artifacts."""
    folder = pathlib.Path(folder)
    document = _checked(folder, predictions)
    shots, rows = [], []
    options = document["options"]
    asked_top = None if options.get("classes") else options.get("top")
    for record in document["images"]:
        if not isinstance(record, dict) or record.get("status") != "ok":
            continue
        image = str(record.get("path", "?"))
        caption = top_caption(record, asked_top if isinstance(asked_top, int) else None)
        entries = [e for e in record.get("predictions") or [] if isinstance(e, dict)]
        first = None
        for entry in entries:
            for name in _overlay_files(entry):
                if (folder / name).is_file():
                    first = first or folder / name
                    shots.append(Shot(folder / name, name, image, str(entry.get("label", "?")),
                                      f"{image}: map of {entry.get('label', '?')}; {caption}"))
        top = min((e for e in entries if isinstance(e.get("rank"), int)), key=lambda e: e["rank"], default={})
        truth = record.get("true_label") if isinstance(record.get("true_label"), dict) else {}
        rows.append(Row(image, str(top.get("label", "")), _score(top), truth.get("label"), first))
    metrics = numbers(document.get("summary") or {}, "run")
    evaluated, evaluation_files = _evaluation(folder, evaluation)
    metrics.update(evaluated)
    names = (predictions, *(n for n in RUN_ARTIFACTS if n != JSON_NAME))
    artifacts = [folder / name for name in names if (folder / name).is_file()] + evaluation_files
    return FinishedRun(folder, str(document.get("version", "")), _params(document), metrics, shots, rows, artifacts)
