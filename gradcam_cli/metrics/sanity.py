"""Sanity check: cascading model-parameter randomisation (Adebayo et al. 2018, "Sanity checks
for saliency maps", NeurIPS).

The model's layers are re-initialised from the top (output side) down, one block at a
time, cumulatively; after each block the maps are recomputed and compared with the
original maps by

- the absolute Spearman rank correlation (as Adebayo et al.; ties get average ranks), and
- SSIM (Wang, Bovik, Sheikh and Simoncelli 2004): an 11 x 11 Gaussian window with
  sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1 (maps in [0, 1]), population
  (co)variances, reflected borders, the mean over the pixels at least 5 from the border
  (what ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)`` computes).

A method whose maps still correlate (mean over images) above 0.5 with the original
maps once every block is randomised has failed: its maps do not depend on what the
model learned.

Blocks: the leaf layers that are trainable and hold trainable weights, in reverse graph
order (nested models are walked into); when there are more than ``max_steps`` of them,
consecutive layers are grouped into ``max_steps`` blocks of near-equal size. Every
weight of a block's layers is redrawn from the layer's own initialiser for it, reseeded
(``kernel_initializer`` for ``kernel``, ``depthwise_initializer`` for a depthwise
kernel, BatchNorm's ``moving_mean`` / ``moving_variance`` too: the layer is left as a
fresh one is); a trainable weight without one gets Glorot uniform (2-D and more) / zeros,
other state without one is kept. The caller's model is never touched: the cascade runs
on a clone (``keras.models.clone_model`` + ``set_weights``).

Two properties of the cascade on EfficientNet-Lite0 (conv -> BatchNorm -> ReLU6 blocks,
Keras's default initialisers):

- Had BatchNorm kept its pretrained moving statistics, each re-initialised BN layer would
  output about ``-moving_mean / sqrt(moving_variance)``, a constant per channel, and the
  target activations would stop depending on the image after about four of ten blocks:
  the maps, and Grad-CAM's correlation (0.271, 0.278, 0.275, 0.229, then 0.212 for six
  steps on the four sample images), stopped changing while the rest was randomised. They
  are reset, and the correlation keeps moving (0.41, 0.40, 0.19, 0.20, 0.17, 0.28, 0.30,
  0.28, 0.30, 0.21).
- Glorot uniform counts a depthwise kernel's fans as 9 C and 9, so a fresh Lite0's signal
  shrinks by orders of magnitude on its way up (the target activations' spread 1e-12
  once all is random, 0.35 trained): that is the model as its layers initialise it, and
  maps divided by their maximum do not see the scale. The maps of a randomised Lite0 by
  Grad-CAM++, LayerCAM and Eigen-CAM (whose channel weights are positive, or not the
  head's at all) are one centred blob for every image (zero padding: a position near
  the border sees fewer inputs; rank correlation 0.79-0.92 with a centred Gaussian);
  the sample images' objects are centred, so those maps keep correlating 0.6-0.8 with the
  originals and the check fails them: they do not depend on the weights there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gradcam_cli.errors import ModelError

FAIL_CORRELATION = 0.5
MAX_STEPS = 10
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
K1, K2 = 0.01, 0.03


@dataclass(frozen=True)
class Sanity:
    """Per step (one block more randomised each): ``spearman`` and ``ssim`` (S, B); the block names."""

    blocks: list[tuple[str, ...]]
    spearman: np.ndarray  # (S, B) absolute rank correlation with the original maps
    ssim: np.ndarray  # (S, B)
    threshold: float = FAIL_CORRELATION

    @property
    def mean_spearman(self) -> np.ndarray:
        return self.spearman.mean(axis=1)

    @property
    def mean_ssim(self) -> np.ndarray:
        return self.ssim.mean(axis=1)

    @property
    def failed(self) -> bool:
        """True when the mean correlation at the last step still exceeds ``threshold``."""
        return bool(self.mean_spearman[-1] > self.threshold)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM of two 2-D maps (see the module docstring for the constants)."""
    import cv2

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or min(a.shape) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs two 2-D maps of one shape, at least {SSIM_WINDOW} px a side; got {a.shape} and {b.shape}"
        )

    def blur(x):
        window = (SSIM_WINDOW, SSIM_WINDOW)
        return cv2.GaussianBlur(x, window, SSIM_SIGMA, sigmaY=SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = (SSIM_WINDOW - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Spearman rank correlation| of each pair of maps, (B, ...) x (B, ...) -> (B,).

    Ties get average ranks. A constant map carries no ranking: its correlation with a
    non-constant map is 0, with another constant map 1.
    """
    from gradcam_cli.metrics.stats import rank_correlation

    flat_a = np.asarray(a, np.float64).reshape(len(a), -1)
    flat_b = np.asarray(b, np.float64).reshape(len(b), -1)
    out = np.abs(rank_correlation(flat_a, flat_b))
    out[(np.ptp(flat_a, axis=1) == 0) & (np.ptp(flat_b, axis=1) == 0)] = 1.0
    return out


def _leaves(model: Any) -> list:
    """Leaf layers in graph order, walking into nested models."""
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            out.extend(_leaves(layer))
        else:
            out.append(layer)
    return out


def blocks(model: Any, max_steps: int = MAX_STEPS) -> list[list[int]]:
    """Indices into the leaf layers, one list per block, top (output side) first."""
    if int(max_steps) < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    leaves = _leaves(model)
    chosen = [i for i, layer in enumerate(leaves) if layer.trainable and layer.trainable_weights][::-1]
    if not chosen:
        raise ModelError(f"model '{model.name}' has no trainable layer with weights to randomise")
    if len(chosen) <= max_steps:
        return [[i] for i in chosen]
    return [[int(i) for i in group] for group in np.array_split(np.asarray(chosen), max_steps)]


def _clone(model: Any):
    import keras

    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    except Exception as exc:  # Keras raises many types here; one narrow error out
        raise ModelError(
            f"cannot clone model '{model.name}' for the sanity check ({type(exc).__name__}: {exc}); "
            "it needs a functional or sequential Keras model"
        ) from exc
    original, copied = _leaves(model), _leaves(clone)
    if [type(x) for x in original] != [type(x) for x in copied]:
        raise ModelError(f"the clone of model '{model.name}' does not mirror its layers; cannot randomise it")
    return clone, copied


def _initializer(layer: Any, name: str) -> Any:
    """The layer's own initialiser for its variable ``name``, or None: ``{name}_initializer``
    (``kernel``, ``bias``, BatchNorm's ``gamma`` ... ``moving_variance``), ``{stem}_initializer`` for a
    ``{stem}_kernel`` (SeparableConv's ``depthwise_kernel`` / ``pointwise_kernel``, a recurrent layer's
    ``recurrent_kernel``), and ``depthwise_initializer`` for a DepthwiseConv's ``kernel``."""
    candidates = [f"{name}_initializer"]
    if name.endswith("_kernel"):
        candidates.append(f"{name[: -len('_kernel')]}_initializer")
    if name == "kernel":
        candidates.append("depthwise_initializer")
    for attribute in candidates:
        init = getattr(layer, attribute, None)
        if init is not None:
            return init
    return None


def _reinitialise(layer: Any, seed: int) -> None:
    """Every trainable weight of ``layer``, and every other weight it names an initialiser for
    (BatchNorm's moving statistics), redrawn from that initialiser (reseeded)."""
    import keras

    for j, variable in enumerate(layer.weights):
        name = variable.name.split("/")[-1].split(":")[0]
        init = _initializer(layer, name)
        if init is None and not variable.trainable:
            continue  # state the layer does not initialise itself: left as it is
        if init is None:
            init = keras.initializers.GlorotUniform() if len(variable.shape) >= 2 else keras.initializers.Zeros()
        config = init.get_config()
        if "seed" in config:
            config["seed"] = int(seed * 1000 + j) % 2**31
        init = type(init).from_config(config)
        variable.assign(keras.ops.cast(init(tuple(variable.shape), dtype=variable.dtype), variable.dtype))


def cascading_randomisation(
    model: Any,
    maps_fn: Callable[[Any], np.ndarray],
    *,
    max_steps: int = MAX_STEPS,
    seed: int = 0,
    threshold: float = FAIL_CORRELATION,
) -> Sanity:
    """Run the cascade. ``maps_fn(model) -> maps`` float32 (B, H, W) in [0, 1] for a fixed set of
    images and classes (the same each call); it is called once on ``model`` and once per block
    on a clone. ``model`` itself is left as it was (its weights byte-equal)."""
    original = np.asarray(maps_fn(model), dtype=np.float32)
    clone, leaves = _clone(model)
    plan = blocks(model, max_steps)
    names, rho, sim = [], [], []
    for step, block in enumerate(plan, start=1):
        for i in block:
            _reinitialise(leaves[i], seed + step * 7919 + i)
        maps = np.asarray(maps_fn(clone), dtype=np.float32)
        if maps.shape != original.shape:
            raise ValueError(f"maps_fn returned {maps.shape} after randomisation, {original.shape} before")
        names.append(tuple(leaves[i].name for i in block))
        rho.append(spearman(original, maps))
        sim.append([ssim(a, b) for a, b in zip(original, maps)])
    return Sanity(blocks=names, spearman=np.asarray(rho), ssim=np.asarray(sim, dtype=np.float64), threshold=threshold)
