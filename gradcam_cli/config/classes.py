"""Class names: ImageNet (bundled, Keras order) or a user's file; lookup by index or name."""

from __future__ import annotations

import difflib
import json
import pathlib
from dataclasses import dataclass
from typing import Sequence

from gradcam_cli.errors import ProfileError, TargetError

_IMAGENET = pathlib.Path(__file__).resolve().parent.parent / "data" / "imagenet_classes.json"


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


@dataclass(frozen=True)
class ClassNames:
    """Labels (file-name safe, Keras style), optional WordNet ids, and synonyms."""

    labels: tuple[str, ...]
    ids: tuple[str | None, ...]
    synonyms: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class_{index}"

    def class_id(self, index: int) -> str | None:
        return self.ids[index] if 0 <= index < len(self.ids) else None

    def _described(self, index: int) -> str:
        """Its distinct names, then its WordNet id: ``crane, n02012849``."""
        names = list(dict.fromkeys(self.synonyms[index]))
        return ", ".join(names + ([self.ids[index]] if self.ids[index] else []))

    def resolve(self, token: str | int, num_classes: int | None = None) -> int:
        """A class index from an index (``386``), a WordNet id (``n02123159``), or a name
        (``"tabby"``, case-insensitive)."""
        limit = num_classes if num_classes is not None else len(self.labels)
        text = str(token).strip()
        if text.lstrip("-").isdigit():
            index = int(text)
            if not 0 <= index < limit:
                raise TargetError(f"class index {index} is out of range: the model has classes 0..{limit - 1}")
            return index
        if text in self.ids:  # a WordNet id (n02012849)
            return self.ids.index(text)
        key = _norm(text)
        hits = [i for i, names in enumerate(self.synonyms) if key in {_norm(n) for n in names}]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            options = ", ".join(f"{i} ({self._described(i)})" for i in hits)
            ids = " or the WordNet id" if all(self.ids[i] for i in hits) else ""
            raise TargetError(f"class name '{text}' is ambiguous: {options}; pass the index{ids} instead")
        vocabulary = {_norm(n): n for names in self.synonyms for n in names}
        close = difflib.get_close_matches(key, list(vocabulary), n=3, cutoff=0.6)
        hint = f"; close matches: {', '.join(repr(vocabulary[c]) for c in close)}" if close else ""
        raise TargetError(f"unknown class '{text}'{hint}; pass a class name or an index 0..{limit - 1}")


def imagenet() -> ClassNames:
    rows = json.loads(_IMAGENET.read_text(encoding="utf-8"))
    return ClassNames(
        labels=tuple(r[1] for r in rows),
        ids=tuple(r[0] for r in rows),
        synonyms=tuple(tuple([r[1], *r[2]]) for r in rows),
    )


def from_file(path: str | pathlib.Path) -> ClassNames:
    """Class names from a text file (one per line) or JSON (a list, or {"0": name, ...})."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"class names file {path} cannot be read: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"class names file {path} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            try:
                names: Sequence = [data[k] for k in sorted(data, key=int)]
            except ValueError:
                raise ProfileError(f"class names file {path}: JSON object keys must be class indices") from None
        elif isinstance(data, list):
            names = data
        else:
            raise ProfileError(f"class names file {path}: expected a JSON list or object of names")
        names = [n[-1] if isinstance(n, list) else n for n in names]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names or not all(isinstance(n, str) for n in names):
        raise ProfileError(f"class names file {path} holds no class names")
    return ClassNames(
        labels=tuple(n.replace(" ", "_") for n in names),
        ids=tuple(None for _ in names),
        synonyms=tuple((n,) for n in names),
    )


def load(source: str, base_dir: str | pathlib.Path | None = None) -> ClassNames:
    """``"imagenet"`` or a path (relative paths are taken from ``base_dir``)."""
    if source == "imagenet":
        return imagenet()
    path = pathlib.Path(source)
    if not path.is_absolute() and base_dir is not None:
        path = pathlib.Path(base_dir) / path
    return from_file(path)


def generic(count: int) -> ClassNames:
    """``class_0``, ``class_1``, ... for a model without a class names file."""
    names = tuple(f"class_{i}" for i in range(count))
    return ClassNames(labels=names, ids=tuple(None for _ in names), synonyms=tuple((n,) for n in names))


def for_model(source: str | None, base_dir, num_classes: int, head_type: str = "softmax") -> ClassNames:
    """Class names for a model with ``num_classes`` scores, checked to match.

    A binary head (one sigmoid unit) has two classes: 0 (the negative) and 1.
    """
    names = generic(num_classes) if source is None else load(source, base_dir)
    if len(names) != num_classes:
        what = "ImageNet's class list" if source == "imagenet" else f"class names file {source}"
        extra = " (a single sigmoid unit has 2 classes: the negative first, then the positive)" if head_type == "binary" else ""
        raise ProfileError(
            f"{what} has {len(names)} names but the model explains {num_classes} classes{extra}; "
            "pass --labels FILE with one name per line"
        )
    return names
