"""Build docs/overlays.jpg for the README from a real run of the tool:

    gradcam explain sample_images/ --out out/ && python tools/readme_picture.py out/
"""

import json
import pathlib
import sys

import cv2
import numpy as np

PICKS = [("chelsea", 1), ("coffee", 1), ("astronaut", 2), ("rocket", 2)]
HEIGHT = 260


def main(out_dir: str) -> None:
    out = pathlib.Path(out_dir)
    records = {pathlib.Path(r["path"]).stem: r for r in json.loads((out / "predictions.json").read_text())["images"]}
    tiles = []
    for stem, rank in PICKS:
        p = records[stem]["predictions"][rank - 1]
        img = cv2.imread(str(out / p["overlay"]))
        img = cv2.resize(img, (round(img.shape[1] * HEIGHT / img.shape[0]), HEIGHT), interpolation=cv2.INTER_AREA)
        caption = f"{stem}: top{rank} {p['label']} {p['probability']:.2f}"
        cv2.rectangle(img, (0, HEIGHT - 26), (img.shape[1], HEIGHT), (0, 0, 0), -1)
        cv2.putText(img, caption, (6, HEIGHT - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    dst = pathlib.Path(__file__).resolve().parents[1] / "docs" / "overlays.jpg"
    cv2.imwrite(str(dst), np.hstack(tiles), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python tools/readme_picture.py OUT_DIR\n{__doc__}")
    main(sys.argv[1])
