"""Test-set labels: a CSV of ``path,label`` rows."""

from __future__ import annotations

import csv
import os
import pathlib

from gradcam_cli.errors import InputError


def load_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """``path,label`` rows (an optional ``path,label`` header) -> {real path: label}.

    Relative image paths are taken from the CSV's folder when they exist there,
    else from the current folder.
    """
    path = pathlib.Path(path)
    truth: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or not "".join(row).strip():
                    continue
                if number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise InputError(f"{path}:{number}: expected 'path,label', got {','.join(row)!r}")
                image = pathlib.Path(row[0].strip())
                if not image.is_absolute() and (path.parent / image).exists():
                    image = path.parent / image
                truth[os.path.realpath(image)] = row[1].strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"labels CSV {path} cannot be read: {exc}; pass --labels-csv with a readable CSV") from None
    return truth
