"""The files a target reads besides the images: region masks (segmentation) and references (similarity).

A mask is an image whose non-zero pixels are the region, the size of the image it belongs to:
``--mask PATH`` gives one for every image, a ``.csv`` of ``image,mask`` rows one per image
(relative paths from the CSV's folder when they exist there). A reference is an image or a saved
embedding (``.npy``); a folder holds several (its images and ``.npy`` files, sorted by name).
Every mistake is one :class:`InputError` line naming the file and the fix.
"""

from __future__ import annotations

import csv
import os
import pathlib

import numpy as np

from gradcam_cli.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class Masks:
    """Where each image's mask is: one ``path`` for all, or a CSV's ``image,mask`` rows."""

    def __init__(self, source: str | os.PathLike):
        self.source = pathlib.Path(source)
        if not self.source.is_file():
            raise InputError(f"mask {self.source} does not exist; pass --mask with a mask image or a CSV of "
                             "image,mask rows")
        self.rows: dict[str, str] | None = _mask_rows(self.source) if self.source.suffix.lower() == ".csv" else None

    def path_for(self, image: str) -> str:
        if self.rows is None:
            return str(self.source)
        found = self.rows.get(os.path.realpath(image))
        if found is None:
            raise InputError(f"mask CSV {self.source} has no row for {image}; add 'image,mask' for it")
        return found

    def check_size(self, image: str, size: tuple[int, int]) -> str:
        """The image's mask path, checked (header only) to be ``size`` (height, width)."""
        from PIL import Image

        path = self.path_for(image)
        try:
            with Image.open(path) as im:
                width, height = im.size
        except (OSError, ValueError) as exc:
            raise InputError(f"mask {path} cannot be read as an image: {exc}; pass a PNG whose non-zero pixels "
                             "are the region") from None
        if (height, width) != tuple(size):
            raise InputError(f"mask {path} is {width}x{height} but image {image} is {size[1]}x{size[0]}; "
                             "give a mask of the image's own size")
        return path

    def read(self, image: str, size: tuple[int, int]) -> np.ndarray:
        """The image's region: bool (height, width), non-zero pixels of its mask."""
        from PIL import Image

        path = self.check_size(image, size)
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) > 0


def _mask_rows(path: pathlib.Path) -> dict[str, str]:
    rows: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or not "".join(row).strip():
                    continue
                if number == 1 and [c.strip().lower() for c in row[:2]] == ["image", "mask"]:
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise InputError(f"{path}:{number}: expected 'image,mask', got {','.join(row)!r}")
                image, mask = (_near(path, cell.strip()) for cell in row[:2])
                if not os.path.isfile(mask):
                    raise InputError(f"{path}:{number}: mask {mask} does not exist; fix the row")
                rows[os.path.realpath(image)] = mask
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"mask CSV {path} cannot be read: {exc}; pass --mask with a readable CSV") from None
    return rows


def _near(csv_path: pathlib.Path, cell: str) -> str:
    p = pathlib.Path(cell)
    return str(csv_path.parent / p) if not p.is_absolute() and (csv_path.parent / p).exists() else str(p)


def reference_files(source: str | os.PathLike) -> list[pathlib.Path]:
    """The reference files ``source`` names: itself, or a folder's images and ``.npy`` files by name."""
    path = pathlib.Path(source)
    if path.is_dir():
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in (*IMAGE_EXTENSIONS, ".npy"))
        if not found:
            raise InputError(f"reference folder {path} holds no image or .npy file; pass --reference with one")
        return found
    if not path.is_file():
        raise InputError(f"reference {path} does not exist; pass --reference with an image, a .npy embedding "
                         "or a folder of them")
    return [path]


def read_embedding(path: pathlib.Path, size: int) -> np.ndarray:
    """A saved embedding, flattened to ``size`` float32 values."""
    try:
        vector = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"reference {path} cannot be read as a .npy array: {exc}") from None
    vector = np.asarray(vector, np.float32).reshape(-1)
    if vector.size != size:
        raise InputError(f"reference {path} holds {vector.size} values but the model's embedding has {size}; "
                         "save it from the same model and --embedding")
    return vector


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of an image as it is decoded (upright: EXIF orientations 5-8 swap the sides),
    from its header; an unreadable file gives (0, 0) (its decode reports it, as an error record)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
            turned = im.getexif().get(0x0112) in (5, 6, 7, 8)
    except (OSError, ValueError):
        return 0, 0
    return (width, height) if turned else (height, width)
