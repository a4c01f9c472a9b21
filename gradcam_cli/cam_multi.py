"""Models with several inputs: one map per image input (tf-keras-vis's contract).

    from gradcam_cli.cam_multi import MultiInputCAM
    cam = MultiInputCAM(model)                                 # two image inputs and a vector
    [result] = cam.explain({"left": l, "right": r, "meta": m}, top=1)
    result.maps["left"].shape, result.maps["right"].shape      # (1, h, w) each

Every image input (a 4-D input) gets its own target layer (``layers="auto"``: the last 4-D
layer that depends on that input alone) and its own maps, all from one compiled pass
(:class:`gradcam_cli.engine.targeted.TargetExplainer`). Non-image inputs are fed as given;
:func:`gradcam_cli.io.sidecar.read_sidecar` reads them from a file beside each image. Any
registered target works (``class``, ``segmentation``; ``similarity`` with ``references``).
Inputs are the model's own values (preprocess them as the model expects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from gradcam_cli.errors import OptionError
from gradcam_cli.settings import DEFAULT_METHOD, MethodOptions
from gradcam_cli.targets import check_methods, get_target


@dataclass
class MultiExplanation:
    """One sample: the explained items (classes, segments or references) and, per image input,
    the maps (N, h, w) in [0, 1]: ``maps[name]`` the first method's, ``maps_by_method[name][method]``."""

    items: list[int]
    values: list[float]  # each item's scalar (a class logit, a summed segment logit, a similarity)
    maps: dict[str, np.ndarray]
    maps_by_method: dict[str, dict[str, np.ndarray]]


def input_names(model: Any) -> list[str]:
    return [str(getattr(t, "name", f"input_{i}")).split(":")[0] for i, t in enumerate(model.inputs)]


class MultiInputCAM:
    """A model with several inputs (see the module docstring). ``layers``: one target layer per
    image input, or ``"auto"``; ``output``: which output (required with several); ``target``: a
    registered target; ``references`` (R, D): the similarity target's reference embeddings."""

    def __init__(self, model: Any, *, target: str = "class", layers: Sequence[str] | str = "auto",
                 output: str | int | None = None, embedding: str | None = None,
                 references: np.ndarray | None = None):
        from gradcam_cli.models.tap import tap_model

        self.model, self.target = model, get_target(target)
        if self.target.name == "similarity" and references is None:
            raise OptionError("--target similarity needs reference embeddings: pass references= (R, D)")
        emb = (embedding or "auto") if self.target.name == "similarity" else None
        self.tap = tap_model(model, layers, output=output, embedding=emb)
        shape = self.tap.out_shape
        if self.target.output_ranks is not None and len(shape) + 1 not in self.target.output_ranks:
            raise OptionError(f"--target {self.target.name} does not take output '{self.tap.out_name}' of shape "
                              f"{(None, *shape)}; pick another with output=")
        self.names = input_names(model)
        self.image_names = [self.names[i] for i in self.tap.image_inputs]
        if references is not None:
            refs = np.asarray(references, np.float32).reshape(len(references), -1)
            self.references = refs / np.maximum(np.linalg.norm(refs, axis=1, keepdims=True), 1e-12)
        else:
            self.references = None
        self.num_items = len(self.references) if self.references is not None else int(shape[-1]) if shape else 1
        self._explainers: dict = {}

    @property
    def layers(self) -> dict[str, str]:
        """Image input name -> its target layer."""
        return dict(zip(self.image_names, self.tap.layer_names))

    def _ordered(self, inputs: Sequence[np.ndarray] | dict) -> list[np.ndarray]:
        if isinstance(inputs, dict):
            missing = [n for n in self.names if n not in inputs]
            if missing:
                raise OptionError(f"model '{self.model.name}' takes inputs {', '.join(self.names)}; "
                                  f"missing {', '.join(missing)}")
            return [np.asarray(inputs[n], np.float32) for n in self.names]
        if len(inputs) != len(self.names):
            raise OptionError(f"model '{self.model.name}' takes {len(self.names)} inputs ({', '.join(self.names)}), "
                              f"got {len(inputs)}")
        return [np.asarray(x, np.float32) for x in inputs]

    def explainer(self, top: int | None, items: Sequence[int] | None, method, options: MethodOptions | None,
                  masked: bool):
        from gradcam_cli.engine.explainer import resolve_methods
        from gradcam_cli.engine.targeted import TargetExplainer
        from gradcam_cli.targets.kinds import Context

        methods = resolve_methods(method)
        check_methods(self.target, methods)
        key = (top, None if items is None else tuple(items), tuple(m.name for m in methods), options, masked)
        if key not in self._explainers:
            refs, scalars = self.references, self.target.scalars
            self._explainers[key] = TargetExplainer(
                self.tap, lambda out, mask: scalars(out, Context(mask, refs)), top=top, items=items, method=methods,
                options=options, mask_shape=tuple(self.tap.out_shape[:2]) if masked else None)
        return self._explainers[key]

    def explain(self, inputs: Sequence[np.ndarray] | dict, *, top: int | None = 1,
                items: Sequence[int] | None = None, method: str | Sequence[str] = DEFAULT_METHOD,
                options: MethodOptions | None = None, mask: np.ndarray | None = None) -> list[MultiExplanation]:
        """Explain a batch: ``inputs`` one array (B, ...) per model input (a list in input order, or a
        dict by input name); ``top`` items of highest rank, or ``items`` for every sample (similarity:
        every reference by default); ``mask`` (B, H, W) at the output's resolution (segmentation)."""
        xs = self._ordered(inputs)
        if self.target.name == "similarity" and items is None:
            items = range(self.num_items)
        if items is not None:
            items, top = [int(i) for i in items], None
        else:
            top = min(int(top), self.num_items)
        explainer = self.explainer(top, items, method, options, mask is not None)
        out = explainer(xs, mask)
        names = [m.name for m in explainer.methods]
        results = []
        for b in range(len(xs[0])):
            chosen = [int(i) for i in out.items[b]]
            by_method = {
                name: {m: maps[b][:, k] for k, m in enumerate(names)}
                for name, maps in zip(self.image_names, out.input_maps)
            }
            results.append(MultiExplanation(chosen, [float(out.values[b][i]) for i in chosen],
                                            {name: by[names[0]] for name, by in by_method.items()}, by_method))
        return results
