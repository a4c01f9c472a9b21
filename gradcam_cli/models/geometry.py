"""Where the cells of a target layer lie in the image, and the upsampling that uses it.

Coordinates are continuous pixels with the pixel-area convention: pixel ``k`` of an
axis covers ``[k, k + 1)`` and its centre is at ``k + 0.5`` (OpenCV's ``resize`` uses
the same half-pixel centres). Cell ``(i, j)`` of the target layer's map has its
receptive-field centre at model-input coordinates
``(y, x) = (offset[0] + i * stride[0], offset[1] + j * stride[1])``.

A :class:`Geometry` is one of two kinds:

- ``"stretch"``: the map is spread evenly over the input, cell ``(i, j)`` covering
  ``1/h x 1/w`` of it (stride ``H/h``, offset half a stride). Chosen when every layer
  between the input and the target keeps TensorFlow 'same' sizes (``ceil(n / stride)``),
  explicit ``ZeroPadding2D`` before a 'valid' conv included (ResNet, MobileNet,
  EfficientNet, Lite0). Upsampled with ``cv2.resize`` exactly as overlays always were, so
  those backbones' maps do not change. Their true receptive-field centres (``rf_stride``,
  ``rf_offset``) differ from the stretch (by under half a cell on the shipped backbones);
  ``note`` says by how much. Also the fallback where the walk cannot place a layer.
- ``"receptive_field"``: a 'valid'-padded network, whose map covers only the middle of
  the input: each cell is placed at its receptive-field centre.

:func:`~gradcam_cli.models.layer_walk.layer_geometry` walks the layers once per model;
:func:`upsample` and :func:`cell_to_image` use the result. NumPy and OpenCV here; no Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

STRETCH = "stretch"
RECEPTIVE_FIELD = "receptive_field"
CONVENTION = (
    "cell (i, j) is centred at model-input pixel coordinates (offset[0] + i * stride[0], "
    "offset[1] + j * stride[1]); pixel k spans [k, k + 1)"
)


@dataclass(frozen=True)
class Geometry:
    """How the target layer's cells map onto the model input (see the module docstring).

    ``stride`` / ``offset``: (y, x) in model-input pixels, what :func:`upsample` and
    :func:`cell_to_image` use. ``rf_stride`` / ``rf_offset``: the real receptive-field
    geometry where the walk could compute it (equal to ``stride`` / ``offset`` for
    ``"receptive_field"``), else None. ``map_size`` (and then ``stride`` / ``offset``) is
    None only for a ``"stretch"`` fallback whose map size is not static: :meth:`for_map`.
    """

    stride: tuple[float, float] | None
    offset: tuple[float, float] | None
    input_size: tuple[int, int]
    map_size: tuple[int, int] | None
    kind: str
    note: str = ""
    rf_stride: tuple[float, float] | None = None
    rf_offset: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in (STRETCH, RECEPTIVE_FIELD):
            raise ValueError(f"Geometry kind must be '{STRETCH}' or '{RECEPTIVE_FIELD}', got {self.kind!r}")
        if self.map_size is None and (self.kind != STRETCH or self.stride is not None):
            raise ValueError("Geometry without a map size must be a 'stretch' one without stride / offset")

    def for_map(self, height: int, width: int) -> Geometry:
        """This geometry for a map of ``height x width``; ValueError if it was made for another size."""
        if self.map_size is None:
            return stretch_geometry(self.input_size, (height, width), self.note)
        if tuple(self.map_size) != (height, width):
            raise ValueError(
                f"the map is {height}x{width} but its geometry was computed for {self.map_size[0]}x"
                f"{self.map_size[1]}; pass the map of the layer the geometry was computed for"
            )
        return self

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the output header (lists, floats, None)."""

        def pair(value: tuple | None) -> list | None:
            return None if value is None else [float(v) for v in value]

        rf = None
        if self.rf_stride is not None:
            rf = {"stride": pair(self.rf_stride), "offset": pair(self.rf_offset)}
        return {
            "kind": self.kind,
            "stride": pair(self.stride),
            "offset": pair(self.offset),
            "input_size": list(self.input_size),
            "map_size": None if self.map_size is None else list(self.map_size),
            "receptive_field": rf,
            "note": self.note,
            "convention": CONVENTION,
        }


def geometry_from_json(data: dict[str, Any]) -> Geometry:
    """The :class:`Geometry` that :meth:`Geometry.to_json` wrote (a run header's ``geometry``)."""

    def pair(value: list | None, kind=float) -> tuple | None:
        return None if value is None else tuple(kind(v) for v in value)

    rf = data.get("receptive_field") or {}
    return Geometry(pair(data.get("stride")), pair(data.get("offset")), pair(data["input_size"], int),
                    pair(data.get("map_size"), int), data["kind"], data.get("note", ""), pair(rf.get("stride")),
                    pair(rf.get("offset")))


def stretch_geometry(
    input_size: tuple[int, int], map_size: tuple[int, int], note: str = "", rf: tuple | None = None
) -> Geometry:
    """The even stretch of an ``h x w`` map over an ``H x W`` input: stride ``H/h``, offset half of it.

    ``rf``: optional ``(rf_stride, rf_offset)`` to record alongside.
    """
    (height, width), (h, w) = input_size, map_size
    stride = (height / h, width / w)
    return Geometry(stride, (stride[0] / 2, stride[1] / 2), (int(height), int(width)), (int(h), int(w)),
                    STRETCH, note, *(rf or (None, None)))


# ---------------------------------------------------------------------------
# using a geometry


def _image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be (height, width) >= 1, got {tuple(image_size)}")
    return height, width


def upsample(cam: np.ndarray, geometry: Geometry, image_size: tuple[int, int]) -> np.ndarray:
    """``cam`` (h, w) float32 or uint8 -> the same dtype at ``image_size`` = (H_img, W_img).

    ``"stretch"``: exactly ``cv2.resize(cam, (W_img, H_img), interpolation=cv2.INTER_LINEAR)``,
    what overlays have always done. ``"receptive_field"``: image pixel ``x`` is mapped to
    model-input ``u = (x + 0.5) * W_in / W_img`` (the image is resized to the model input as
    a whole, aspect not kept), then to cell ``(u - offset_x) / stride_x``, read bilinearly
    with the border cells replicated (one ``cv2.warpAffine``; OpenCV quantises the sample
    positions to 1/32 of a cell; ~25x the stretch's time). A border cell's maximum is then
    a plateau reaching the image edge: find peaks on the map and place them with
    :func:`cell_to_image`, not with an argmax over the upsampled image.
    """
    cam = np.asarray(cam)
    if cam.ndim != 2 or cam.dtype not in (np.float32, np.uint8):
        raise ValueError(f"upsample expects a 2-D float32 or uint8 map, got shape {cam.shape} {cam.dtype}")
    geometry = geometry.for_map(*cam.shape)
    height, width = _image_size(image_size)
    if geometry.kind == STRETCH:
        return cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    (in_h, in_w), (sy, sx), (oy, ox) = geometry.input_size, geometry.stride, geometry.offset
    matrix = np.array(
        [[in_w / (width * sx), 0.0, (0.5 * in_w / width - ox) / sx],
         [0.0, in_h / (height * sy), (0.5 * in_h / height - oy) / sy]],
        dtype=np.float64,
    )
    return cv2.warpAffine(cam, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def cell_to_image(i: Any, j: Any, geometry: Geometry, image_size: tuple[int, int]) -> tuple[Any, Any]:
    """The image point ``(x, y)`` (continuous pixels, pixel k spans [k, k+1)) of cell ``(i, j)``'s centre.

    ``i`` (row) and ``j`` (column) may be fractional or NumPy arrays; ``int(x)`` is the
    pixel column. Consistent with :func:`upsample`: the upsampled map equals cell
    ``(i, j)``'s value there.
    """
    if geometry.map_size is None:
        raise ValueError("this geometry has no map size yet; call geometry.for_map(h, w) first")
    height, width = _image_size(image_size)
    (in_h, in_w), (sy, sx), (oy, ox) = geometry.input_size, geometry.stride, geometry.offset
    return (ox + np.asarray(j, np.float64) * sx) * width / in_w, (oy + np.asarray(i, np.float64) * sy) * height / in_h
