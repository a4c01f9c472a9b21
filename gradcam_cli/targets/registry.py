"""The target registry, filled by :func:`register` where each target is defined.

A *target* turns the model's outputs into the scalars whose gradients the CAM methods use,
one per explained item of an image (a class, a segment, a reference): ``class`` is a
classifier's class score (the default, :mod:`gradcam_cli.engine.explainer`); the others run
in :mod:`gradcam_cli.engine.targeted`. A record says which outputs it takes, which methods make
sense for it and whether ``gradcam evaluate``'s metrics (defined on class scores) apply.

No TensorFlow at import: a target's scalar function imports it when called.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from gradcam_cli.errors import OptionError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    #: ``scalars(outputs, context) -> (values (B, C), rank (B, C), aux)``: the differentiable value of
    #: each candidate item, the order in which top-N picks them, what to hand back (see
    #: :mod:`gradcam_cli.targets.kinds`); a one-input classifier's class scores take the class engine
    scalars: Callable
    #: method kinds (:mod:`gradcam_cli.methods.registry`) that make sense for it; None: every kind
    method_kinds: tuple[str, ...] | None = None
    #: why the other kinds do not (the refusal's reason)
    refusal: str = ""
    #: ranks of the model output it takes ((batch, classes) = 2, (batch, h, w, classes) = 4); None: any
    output_ranks: tuple[int, ...] | None = (2,)
    #: whether ``gradcam evaluate``'s metrics (deletion, insertion, ... on class scores) are defined for it
    evaluate: bool = False


TARGETS: dict[str, Target] = {}
DEFAULT_TARGET = "class"


def register(name: str, *, method_kinds: tuple[str, ...] | None = None, refusal: str = "",
             output_ranks: tuple[int, ...] | None = (2,), evaluate: bool = False) -> Callable:
    """Decorator: register ``fn`` (the scalar function; its docstring's first line describes it)."""

    def add(fn: Callable) -> Callable:
        if name in TARGETS:
            raise ValueError(f"target {name!r} is registered twice")
        doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
        TARGETS[name] = Target(name, doc[0] if doc else "", fn, method_kinds,
                               refusal, output_ranks, evaluate)
        return fn

    return add


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: str) -> Target:
    """The registered target ``name``; OptionError with the list and a close match otherwise."""
    if name in TARGETS:
        return TARGETS[name]
    close = difflib.get_close_matches(name, list(TARGETS), n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise OptionError(f"unknown target '{name}'{hint}; choose one of: {', '.join(TARGETS)}")


def check_methods(target: Target, methods) -> None:
    """One line refusing the first method whose kind makes no sense for ``target``.

    ``methods``: :class:`gradcam_cli.methods.registry.Method` records."""
    if target.method_kinds is None:
        return
    for method in methods:
        if method.kind not in target.method_kinds:
            fit = [m for m in _method_names() if _kind(m) in target.method_kinds]
            raise OptionError(f"method '{method.name}' does not apply to --target {target.name}: {target.refusal}; "
                              f"use one of: {', '.join(fit)}")


def _method_names() -> list[str]:
    from gradcam_cli.methods import method_names

    return method_names()


def _kind(name: str) -> str:
    from gradcam_cli.methods import get_method

    return get_method(name).kind
