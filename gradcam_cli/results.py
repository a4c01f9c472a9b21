"""What explaining an image gives: its predictions and maps, as plain records (NumPy only).

:func:`explained_targets` turns the engine's per-image arrays (the classes it explained, the
scores, the probabilities) into the kept targets with their ranks: the rank, threshold and
true-class rules live here once, for the library, the folder runner and the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gradcam_cli.settings import DEFAULT_METHOD


@dataclass(frozen=True)
class Prediction:
    rank: int  # 1 = most probable
    class_index: int
    class_id: str | None  # WordNet id for ImageNet
    label: str
    probability: float


@dataclass
class Explanation:
    """One image: the explained targets (in map order) and their maps (N, h, w) in [0, 1].

    ``maps`` are the first method's; ``maps_by_method`` holds every asked method's, in the
    asked order (``maps_by_method[methods[0]] is maps``). ``true_rank``: the rank of the
    image's true class among all classes, when one was given (test-set mode)."""

    predictions: list[Prediction]
    maps: np.ndarray
    probabilities: np.ndarray  # (C,) after the final softmax / sigmoid
    maps_by_method: dict[str, np.ndarray] = field(default_factory=dict)
    #: Guided Grad-CAM (N, H, W, 3) float32 at the model input's resolution, when ``guided`` is asked
    #: (its ``maps_by_method`` entry holds the Grad-CAM maps it multiplies)
    guided: np.ndarray | None = None
    true_rank: int | None = None
    #: per map, what a target beyond a class score adds to its record entry (a segment's pixel share,
    #: a similarity's reference); None for class scores
    details: list[dict] | None = None
    #: per map, the region a segmentation target summed over, bool (N, H, W) at the output's resolution
    regions: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.maps_by_method:
            self.maps_by_method = {DEFAULT_METHOD: self.maps}


def rank_of(values: np.ndarray, index: int) -> int:
    """1 + how many classes have a higher value than class ``index`` (ties share the better rank)."""
    return int(np.count_nonzero(values > values[index])) + 1


@dataclass(frozen=True)
class Target:
    """One kept target of an image: which map ``slot`` of the engine's output, its class and rank."""

    slot: int
    class_index: int
    rank: int


def explained_targets(classes: np.ndarray, scores: np.ndarray, probs: np.ndarray, *, top: int | None,
                      true: int | None = None, threshold: float | None = None) -> list[Target]:
    """The targets kept for one image, in map order.

    ``classes`` (N,): the classes the engine explained, in order: the ``top`` highest-scoring
    ones (``top`` given) or asked ones (``top=None``), then, when ``true`` is not None, the
    true class last (``true < 0``: the image has none). The true class's map is dropped when
    the image has none or when it is among the others already. A top-N target's rank is its
    position; any other's is :func:`rank_of` on the scores. ``threshold``: keep only targets
    at least this probable, and the true class."""
    targets = [int(c) for c in classes]
    slots = list(range(len(targets)))
    if true is not None and (true < 0 or true in targets[:-1]):
        targets, slots = targets[:-1], slots[:-1]
    kept = [
        Target(slot, c, position if top is not None and position <= top else rank_of(scores, c))
        for position, (slot, c) in enumerate(zip(slots, targets), start=1)
    ]
    if threshold is not None:
        kept = [t for t in kept if float(probs[t.class_index]) >= threshold or t.class_index == true]
    return kept
