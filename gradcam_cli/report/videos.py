"""The report's videos: one row per video of the run's ``videos.json`` (its strip of frames, its
overlay videos, its top-1 timeline), rendered by the page's template with autoescaping, so every
string (file names, labels, messages) is escaped; file URLs are percent-encoded."""

from __future__ import annotations

import json
import os
import pathlib
import urllib.parse


def videos_name(predictions_name: str) -> str:
    """``predictions.json`` -> ``videos.json``; a shard's ``predictions.2-of-4.json`` -> ``videos.2-of-4.json``."""
    return "videos" + predictions_name[len("predictions"):] if predictions_name.startswith("predictions") else \
        "videos.json"


def load_videos(out_dir: pathlib.Path, predictions_name: str) -> dict | None:
    """The parsed videos document beside ``predictions_name``; None when the run has none (or it is unreadable)."""
    try:
        run = json.loads((out_dir / videos_name(predictions_name)).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return run if isinstance(run, dict) and isinstance(run.get("images"), list) else None


def video_rows(run: dict | None) -> list[dict]:
    """Per video record: what the template shows (plain strings and numbers, URLs percent-encoded)."""
    rows = []
    for record in (run or {}).get("images", []):
        if not isinstance(record, dict):
            continue
        row = {"name": os.path.basename(str(record.get("path", ""))), "path": str(record.get("path", "")),
               "error": None if record.get("status") == "ok" else f"{record.get('kind', 'error')}: "
                                                                  f"{record.get('message', '')}"}
        if row["error"] is None:
            overlays = [o for o in record.get("overlays") or [] if isinstance(o, dict)]
            strip = next((o["strip"] for o in overlays if o.get("strip")), None)
            row.update(frames=record.get("frames"), fps=float(record.get("output_fps") or 0.0),
                       size=f"{record.get('width')}×{record.get('height')}", strip=_url(strip) if strip else None,
                       frames_file=_url(str(record.get("frames_file", ""))),
                       overlays=[{"label": str(o.get("label", "")), "slot": o.get("slot"),
                                  "url": _url(str(o.get("video") or next(iter((o.get("videos") or {"": ""}).values()))))}
                                 for o in overlays],
                       timeline=[{"label": str(t.get("label", "")), "start": float(t.get("start", 0.0)),
                                  "end": float(t.get("end", 0.0)), "frames": t.get("frames")}
                                 for t in (record.get("summary") or {}).get("timeline", []) if isinstance(t, dict)])
        rows.append(row)
    return rows


def _url(relative_path: str) -> str:
    return urllib.parse.quote(str(relative_path).replace(os.sep, "/"), safe="/")
