"""Text burnt into pictures: Pillow's built-in scalable font, so it works on a bare server."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: light text on a dark strip: readable over any photo or colormap
STRIP_RGB = (32, 32, 32)
TEXT_RGB = (245, 245, 245)


@lru_cache(maxsize=16)
def load_font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font (Aileron, embedded in Pillow >= 10.1) at ``size`` px.

    It covers ASCII and a little Latin punctuation; other characters draw as boxes.
    """
    return ImageFont.load_default(size=size)


def font_size_for(width: int) -> int:
    """A readable font size for a strip ``width`` px wide: 12..28 px."""
    return int(min(28, max(12, round(width / 24))))


def strip_height(size: int) -> int:
    """The height of a one-line strip for a font of ``size`` px (text plus padding)."""
    return int(round(size * 1.6))


def size_to_fit(text: str, width: int, smallest: int = 10) -> int:
    """The largest font size, from :func:`font_size_for` ``width`` down to ``smallest``, at which
    ``text`` fits whole in a :func:`text_strip` ``width`` px wide (``smallest`` when none does:
    the strip then cuts it with an ellipsis)."""
    for size in range(font_size_for(width), smallest, -1):
        if load_font(size).getlength(text) + 2 * _pad(size) <= width:
            return size
    return smallest


def _pad(size: int) -> int:
    """The space left and right of a strip's text."""
    return max(2, size // 3)


def fit_text(text: str, font, width: int) -> str:
    """``text``, cut with an ellipsis so that it is at most ``width`` px long in ``font``."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def text_strip(text: str, width: int, size: int | None = None) -> np.ndarray:
    """A one-line caption strip, RGB uint8 (strip_height(size), width, 3): ``text`` on a dark band."""
    size = size or font_size_for(width)
    font = load_font(size)
    height = strip_height(size)
    pad = _pad(size)
    strip = Image.new("RGB", (width, height), STRIP_RGB)
    draw = ImageDraw.Draw(strip)
    draw.text((pad, height // 2), fit_text(text, font, width - 2 * pad), font=font, fill=TEXT_RGB, anchor="lm")
    return np.asarray(strip)
