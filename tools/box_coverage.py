"""How much of the image the paper's localisation box covers, at several thresholds.

Explains the top-3 classes of each photo (the sample images and scikit-image's bundled
photos) with the default backbone and method, and prints, per threshold (a fraction of the
map's maximum), how many boxes cover more than 90% of the image, their mean area, and the
same for the centred-Gaussian baseline map of ``evaluate``. The boxes are made as
``explain --boxes`` makes them (:func:`gradcam_cli.render.boxes.map_box`, the model's upsampler).

    python tools/box_coverage.py [--top 3] [--thresholds 0.15,0.2,0.3,0.4,0.5]
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
from PIL import Image

from gradcam_cli.cam import GradCAM
from gradcam_cli.metrics.baselines import centre_maps
from gradcam_cli.render.boxes import map_box

REPO = pathlib.Path(__file__).resolve().parent.parent
#: scikit-image's bundled photographs (not its synthetic or binary pictures); grey ones are made RGB
#: the pictures that are one texture or a page over the whole frame, where a whole-image box is right
TEXTURES = ("page", "text", "brick", "grass", "gravel", "hubble_deep_field")
SKIMAGE = ("camera", "coins", "moon", "stereo_motorcycle", "hubble_deep_field", "retina", "immunohistochemistry",
           "page", "text", "brick", "grass", "gravel")


def photos() -> dict[str, np.ndarray]:
    import skimage.data

    found = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in sorted((REPO / "sample_images").glob("*.jpg"))}
    for name in SKIMAGE:
        image = getattr(skimage.data, name)()
        image = np.asarray(image[0] if isinstance(image, tuple) else image)  # the stereo pair's left view
        found[name] = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    return found


def coverage(box, size) -> float:
    return 0.0 if box is None else (box[2] - box[0]) * (box[3] - box[1]) / (size[0] * size[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--thresholds", default="0.15,0.2,0.3,0.4,0.5")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    cam = GradCAM()
    images = photos()
    rows = {t: [] for t in thresholds}
    centre = {t: [] for t in thresholds}
    for name, image in images.items():
        [explanation] = cam.explain([image], top=args.top)
        size = image.shape[:2]
        for t in thresholds:
            cover = [coverage(map_box(m, size, t, upsample=cam.upsampler), size) for m in explanation.maps]
            rows[t] += cover
            centre[t].append(coverage(map_box(centre_maps(1, size)[0], size, t), size))
        print(name, size, " ".join(f"{t}:{'/'.join(f'{c:.2f}' for c in rows[t][-args.top:])}" for t in thresholds))
    print(f"\n{len(images)} photos x top {args.top} = {len(rows[thresholds[0]])} boxes")
    objects = np.repeat([name not in TEXTURES for name in images], args.top)
    print("threshold  boxes>90%: all  without textures  mean area  median area | centre baseline: >90%  mean area")
    for t in thresholds:
        c, b = np.asarray(rows[t]), np.asarray(centre[t])
        print(f"{t:9.2f}  {int((c > 0.9).sum()):8d} of {len(c)}  {int((c[objects] > 0.9).sum()):9d} of "
              f"{int(objects.sum())}  {c.mean():9.2f}  {np.median(c):11.2f} |  {int((b > 0.9).sum()):14d} of {len(b)}"
              f"  {b.mean():9.2f}")

if __name__ == "__main__":
    main()
