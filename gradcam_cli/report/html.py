"""``OUT_DIR/report.html`` from ``OUT_DIR/predictions.json``: Jinja2 (autoescaping on), one file.

The page is self-contained (inline CSS and JS, no network; its Content-Security-Policy
allows only its own script, by hash, and images from ``file:``/``data:``) and opens
from ``file://``. The run header, summary and per-class error table are rendered
here; the cards are built by the page's script, a page of 100 at a time, from an
embedded JSON block (``<``, ``>``, ``&`` escaped as ``\\u003c`` ...) with
``textContent`` only. Images are referenced by relative URLs, never embedded: the
original, the overlays, Guided Grad-CAM maps, and the image's grid and GIF, found by the
record or by the run's naming rule (:mod:`gradcam_cli.run.naming`, a leaf module).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import os
import pathlib
import urllib.parse
from functools import lru_cache

from gradcam_cli.io import writers
from gradcam_cli.errors import ReportError
from gradcam_cli.run.naming import gif_name, grid_name, stem_of

REPORT_NAME = "report.html"
PAGE_SIZE = 100
GUIDED = "guided"  # Guided Grad-CAM's maps: a PNG per map beside (or instead of) the overlays


def build_report(out_dir: str | os.PathLike, predictions_name: str = "predictions.json") -> pathlib.Path:
    """Write ``out_dir/report.html`` atomically from ``out_dir/predictions_name``; returns its path.

    Overlay paths in the records are relative to ``out_dir`` and stay so; an original
    image is linked by its path relative to ``out_dir`` when it exists from the
    current folder, else left out.
    """
    from gradcam_cli.report.videos import load_videos

    out_dir = pathlib.Path(out_dir)
    videos = load_videos(out_dir, predictions_name)
    if videos is not None and not (out_dir / predictions_name).exists():  # a run of videos alone
        run = {**{k: v for k, v in videos.items() if k != "images"}, "summary": {}, "images": []}
    else:
        run = load_run(out_dir / predictions_name)
    html = render_report(run, out_dir, videos)
    path = out_dir / REPORT_NAME
    writers.write_bytes(path, html.encode("utf-8"))
    return path


def load_run(path: pathlib.Path) -> dict:
    """The parsed ``predictions.json``; ReportError if it is missing, unreadable or not a run."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        shards = sorted(p.name for p in path.parent.glob("predictions.*-of-*.json"))
        if shards:
            raise ReportError(f"no {path.name} in {path.parent}, which holds the shards {', '.join(shards)}: "
                              f"pass --predictions {shards[0]} for one shard's report") from None
        raise ReportError(f"no {path.name} in {path.parent}: expected a folder that `gradcam explain ... --out "
                          f"{path.parent}` wrote; run it first, or name the right folder") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}; expected the JSON that `gradcam explain` writes") from None
    if not isinstance(run, dict) or not isinstance(run.get("images"), list):
        raise ReportError(f"{path} is not a gradcam-cli predictions file: expected an object with an "
                          "'images' list; point the report at a `gradcam explain` output folder")
    return run


def render_report(run: dict, out_dir: pathlib.Path, videos: dict | None = None) -> str:
    """The HTML text of the report of ``run`` (a parsed ``predictions.json``) written in ``out_dir``;
    ``videos``: the run's parsed ``videos.json`` (a strip of frames per video, :mod:`.videos`)."""
    from gradcam_cli.report.videos import video_rows

    on_disk = OnDisk(out_dir)
    records = [card_data(i, r, out_dir, on_disk) for i, r in enumerate(run["images"]) if isinstance(r, dict)]
    test_mode = any(r["truth"] is not None for r in records)
    header = {k: v for k, v in run.items() if k != "images"}
    script = _static("report.js")
    data = {"page_size": PAGE_SIZE, "test_mode": test_mode, "records": records}
    return _template().render(
        header=header,
        methods=_methods(header, records),
        options=[(k, _show(v)) for k, v in (header.get("options") or {}).items()],
        summary=_summary(header, records, test_mode),
        classes=_predicted_classes(records),
        class_errors=class_errors(records) if test_mode else [],
        test_mode=test_mode,
        data_json=_markup(embed_json(data)),
        script=_markup(script),
        script_hash=_sha256(script),
        style=_markup(_static("report.css")),
        videos=video_rows(videos),
    )


def embed_json(obj) -> str:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>``, ``&`` as unicode escapes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def card_data(index: int, record: dict, out_dir: pathlib.Path, on_disk: OnDisk | None = None) -> dict:
    """What one card shows, from one record of ``predictions.json`` (URLs relative to ``out_dir``)."""
    path = str(record.get("path", ""))
    frame = record.get("frame")
    name = os.path.basename(path) or path
    depth = record.get("full_depth") if isinstance(record.get("full_depth"), dict) else {}
    card = {
        "i": index,
        "path": path,
        "name": f"{name} · frame {frame}" if frame is not None else name,
        "status": str(record.get("status", "")),
        # a browser shows no DICOM file: its card shows the overlays only (drawn on its windowed view)
        # nor a volume (NIfTI, a DICOM series): its card shows each map's montage of slices
        "src": None if depth.get("format") == "DICOM" or _dicom_name(path) or "volume" in record
        else _original_url(path, out_dir),
        "size": [record.get("width"), record.get("height")],
        "preds": [],
        "top": None,
        "truth": None,
        "wrong": False,
    }
    if card["status"] != "ok":
        card["error"] = f"{record.get('kind', 'error')}: {record.get('message', '')}"
        return card
    for p in record.get("predictions") or []:  # "p": the class probability, or a detection's detector score
        for method, overlay in _map_files(p):
            card["preds"].append({
                "rank": p.get("rank"), "ci": p.get("class_index"), "label": str(p.get("label", "")),
                "p": p.get("probability", p.get("score")), "src": _url(overlay) if overlay else None,
                "method": method, "true": bool(p.get("true_class", False)),
            })
    if card["preds"]:
        top = next((p for p in card["preds"] if p["rank"] == 1), card["preds"][0])
        card["top"] = {"ci": top["ci"], "label": top["label"], "p": top["p"]}
    card.update(image_files(record, on_disk or OnDisk(out_dir)))
    truth = record.get("true_label")
    if isinstance(truth, dict):
        card["truth"] = {"ci": truth.get("class_index"), "label": str(truth.get("label", "")), "rank": truth.get("rank")}
        card["wrong"] = truth.get("rank") != 1
    return card


def _map_files(entry: dict) -> list[tuple]:
    """(method, file or None) of one prediction's pictures: its overlay (one method) or overlays
    (several), then its guided Grad-CAM map; an overlay-less slot only when there is no picture."""
    if isinstance(entry.get("maps"), dict):  # a volume's maps: method -> {nifti, montage, gif}
        return [(method, files.get("montage")) for method, files in entry["maps"].items() if isinstance(files, dict)]
    several = entry.get("overlays") if isinstance(entry.get("overlays"), dict) else {}
    files = list(several.items()) or [(entry.get("method"), entry.get("overlay"))]
    if isinstance(entry.get("guided"), str) and entry["guided"]:
        files = [(method, file) for method, file in files if file] + [(GUIDED, entry["guided"])]
    return files


def image_files(record: dict, on_disk: OnDisk) -> dict:
    """The image's grid and GIF as relative URLs (``{"grid": ..., "gif": ...}``, a key only for a
    file there is): named by the record, else by the run's naming rule when that file exists (a
    run's pictures added later by ``gradcam pictures`` are found whether or not it lists them)."""
    files, stem = {}, None
    for key, name_of in (("grid", grid_name), ("gif", gif_name)):
        name = record.get(key)
        if not (isinstance(name, str) and name):
            stem = (stem_of(record) or "") if stem is None else stem
            name = name_of(stem) if stem and name_of(stem) in on_disk else None
        if name:
            files[key] = _url(name)
    return files


class OnDisk:
    """``relative_name in on_disk``: is there such a file under ``root``? Each folder is listed once
    (a report of 10,000 images asks 20,000 names; one stat each took 1.1 s on the loaded machine)."""

    def __init__(self, root: pathlib.Path):
        self.root, self.folders = root, {}

    def __contains__(self, name: str) -> bool:
        folder, _, base = name.rpartition("/")
        if folder not in self.folders:
            try:
                with os.scandir(self.root / folder) as entries:
                    self.folders[folder] = {e.name for e in entries if e.is_file()}
            except OSError:  # no such folder, or not readable: no file of it is shown
                self.folders[folder] = set()
        return base in self.folders[folder]


def class_errors(cards: list[dict]) -> list[dict]:
    """Per true class: images, top-1 errors, accuracy and the commonest wrong predictions; most errors first."""
    table: dict = {}
    for card in cards:
        truth = card["truth"]
        if truth is None:
            continue
        row = table.setdefault(truth["ci"], {"ci": truth["ci"], "label": truth["label"], "images": 0, "errors": 0,
                                             "confused": collections.Counter()})
        row["images"] += 1
        if card["wrong"]:
            row["errors"] += 1
            if card["top"] is not None:
                row["confused"][f"{card['top']['label']} ({card['top']['ci']})"] += 1
    rows = sorted(table.values(), key=lambda r: (-r["errors"], -r["images"], str(r["label"])))
    for row in rows:
        row["accuracy"] = 1.0 - row["errors"] / row["images"]
        row["confused"] = [f"{name} ×{n}" for name, n in row["confused"].most_common(3)]
    return rows


def _predicted_classes(cards: list[dict]) -> list[dict]:
    """The top-1 predicted classes of the run, commonest first: the class filter's choices."""
    counts = collections.Counter((c["top"]["ci"], c["top"]["label"]) for c in cards if c["top"] is not None)
    return [{"ci": ci, "label": label, "count": n}
            for (ci, label), n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0][1])))]


def _summary(header: dict, cards: list[dict], test_mode: bool) -> dict:
    given = header.get("summary") or {}
    summary = {
        "images": given.get("images", len(cards)),
        "done": given.get("done", sum(c["status"] == "ok" for c in cards)),
        "failed": given.get("failed", sum(c["status"] != "ok" for c in cards)),
    }
    accuracy = given.get("accuracy")
    if test_mode:
        labelled = [c for c in cards if c["truth"] is not None]
        summary["labelled"] = len(labelled)
        summary["misclassified"] = sum(c["wrong"] for c in labelled)
        summary["top1"] = accuracy["top1"] if isinstance(accuracy, dict) else 1 - summary["misclassified"] / len(labelled)
        if isinstance(accuracy, dict) and "top5" in accuracy:
            summary["top5"] = accuracy["top5"]
    return summary


def _methods(header: dict, cards: list[dict]) -> list[str]:
    named = header.get("methods") or header.get("method") or []
    methods = [named] if isinstance(named, str) else list(named)  # one method: a name; several: a list
    seen = {p["method"] for c in cards for p in c["preds"] if p.get("method")}
    return [str(m) for m in methods] + sorted(str(m) for m in seen - set(methods))


def _dicom_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in (".dcm", ".dicom")


def _original_url(path: str, out_dir: pathlib.Path) -> str | None:
    if not path or not os.path.isfile(path):
        return None
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
    except ValueError:  # another drive (Windows): no relative path exists
        return None
    return _url(rel)


def _url(relative_path: str) -> str:
    """A relative URL for a relative file path: every character that means something in a URL is escaped."""
    return urllib.parse.quote(str(relative_path).replace(os.sep, "/"), safe="/")


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _markup(text: str):
    from markupsafe import Markup

    return Markup(text)


@lru_cache(maxsize=None)
def _static(name: str) -> str:
    return (pathlib.Path(__file__).parent / "templates" / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gradcam_cli.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2")
