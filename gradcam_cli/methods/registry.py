"""The CAM method registry, filled by :func:`register` where each method is defined.

A method says how maps come from the target layer's activations A and the
gradients g = dy_c/dA, both (M, h, w, K) for M = images x classes:

- ``kind="weights"``: ``fn(A, g) -> (M, K)`` channel weights; the map is sum_k w_k A_k;
- ``kind="spatial"``: ``fn(A, g) -> (M, h, w)``, the map itself;
- ``kind="score"``: ``fn(A, s) -> (B, N, K)`` channel weights from ``s`` (B, N, K), each
  target class's score on the model input masked by each channel of A (the engine
  makes the masks and runs the masked passes; see :mod:`gradcam_cli.engine.score`);
  A is (B, h, w, K), one image each, K possibly a subset of the channels;
- ``kind="guided"``: ``fn(cams, dy/dx) -> (M, H, W, 3)``, an image at the model input's
  resolution from the Grad-CAM maps upsampled there and the guided input gradients
  (:mod:`gradcam_cli.methods.guided`); its map slot holds the Grad-CAM map.
- ``kind="attention"``: ``fn(attentions, prefix, grid) -> (B, h, w)``, a map from the attention
  scores (B, heads, T, T) of every MultiHeadAttention layer of a transformer, first layer first,
  whose T tokens are ``prefix`` tokens and then the ``grid`` (h, w) of patches, row-major
  (:mod:`gradcam_cli.methods.attention`); A and g are not used. With ``class_agnostic=False``:
  ``fn(attentions, gradients, prefix, grid) -> (M, h, w)``, ``gradients`` each layer's
  d y_c / d scores for M = images x classes (the engine differentiates the class scores with
  respect to the scores themselves; :mod:`gradcam_cli.engine.attention`).

``needs_gradients=False``: ``g`` is None and no backward pass to the target layer runs (a
class-specific attention method differentiates the class scores with respect to the attention
scores instead, in its own pass); with
``class_agnostic=True`` the map does not depend on the class (one per image, the
records mark it). ``sums_only``: the method uses only the per-channel sums of g
over positions, so a head whose input gradient is exact in those sums alone may be
used (VGG's pool -> flatten -> fc1; see :mod:`gradcam_cli.models.kernels`).
ReLU and per-map normalisation are applied once, after every method.

No TensorFlow at import: a method's function imports it when called.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Sequence

KINDS = ("weights", "spatial", "score", "guided", "attention")


@dataclass(frozen=True)
class Method:
    name: str
    kind: str
    fn: Callable
    needs_gradients: bool = True
    sums_only: bool = False
    description: str = ""
    class_agnostic: bool = False
    #: spatial methods: fn(A, g) -> (M, h, w, K), the per-position weighted activations whose
    #: channel sum is the map (``--eigen-smooth`` takes their first principal component instead)
    weighted: Callable | None = None


METHODS: dict[str, Method] = {}


def register(name: str, *, kind: str, needs_gradients: bool = True, sums_only: bool = False,
             class_agnostic: bool = False, weighted: Callable | None = None) -> Callable:
    """Decorator: register ``fn`` as the method ``name`` (a second registration of a name is an error)."""
    if kind not in KINDS:
        raise ValueError(f"method kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def add(fn: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"CAM method {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        METHODS[name] = Method(name, kind, fn, needs_gradients, sums_only, doc[0] if doc else "", class_agnostic,
                               weighted)
        return fn

    return add


def unregister(name: str) -> None:
    """Remove a method (tests register temporary ones)."""
    METHODS.pop(name, None)


def masks_input(names: Sequence[str]) -> bool:
    """Whether any of the methods ``names`` scores masked inputs (Score-CAM's kind, ``"score"``)."""
    return any(get_method(name).kind == "score" for name in names)


def get_method(name: str) -> Method:
    """The registered method ``name``; ValueError with the list and a close match otherwise."""
    if name in METHODS:
        return METHODS[name]
    close = difflib.get_close_matches(name, list(METHODS), n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(f"unknown CAM method '{name}'{hint}; choose one of: {', '.join(METHODS)}")
