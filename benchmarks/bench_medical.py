#!/usr/bin/env python
"""What does a full-depth input cost to decode, against the 8-bit decode of the same file?

Per input, :func:`gradcam_cli.run.step.decode_item` (decode, view, resize, normalise: all an
I/O thread does before the model) for a 224-px RGB profile ('tf'), on:

- a 16-bit grey PNG at full depth (today's path) and the same file through the 8-bit decode it
  had before (``images.decode_pair``: Pillow's ``>> 8``, then the 8-bit resize and table
  normalise), side by side;
- an 8-bit grey PNG of the same picture (the photo path);
- a 512 x 512 CT DICOM (``CT_small.dcm``'s slice tiled; 16-bit, rescaled to Hounsfield units),
  and the header read that counts its frames when the inputs are listed.

Samples of the paths alternate, so the ratios hold on a busy machine.

    python benchmarks/bench_medical.py     # seconds -> benchmarks/results/medical.md (and JSON on stdout)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "medical.md"


def _inputs(folder: pathlib.Path, side: int) -> dict[str, pathlib.Path]:
    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    picture = (30000 + 20000 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + rng.normal(0, 500, (side, side)))
    values = np.clip(picture, 0, 65535).astype(np.uint16)
    paths = {"png16": folder / "scan16.png", "png8": folder / "scan8.png", "dicom": folder / "ct512.dcm"}
    Image.fromarray(values).save(paths["png16"])
    Image.fromarray((values >> 8).astype(np.uint8)).save(paths["png8"])
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PixelData = np.tile(ds.pixel_array, (4, 4)).astype(ds.pixel_array.dtype).tobytes()
    ds.Rows = ds.Columns = 512
    ds.save_as(paths["dicom"])
    return paths


def _old_decode(path: str, profile) -> np.ndarray:
    """The 8-bit decode a 16-bit PNG had before full depth: decode_pair, resize, table normalise."""
    from gradcam_cli.io import images
    from gradcam_cli.io.preprocess import normalise, resize

    image, small, _ = images.decode_pair(path, model=tuple(profile.input_size))
    return normalise(resize(small, profile.input_size), profile)


def measure(side: int = 1024, rounds: int = 30) -> dict:
    from gradcam_cli.config.profiles import Profile
    from gradcam_cli.io.dicom import frame_count
    from gradcam_cli.io.discover import InputRef
    from gradcam_cli.run.step import decode_item

    profile = Profile(name="b", builder=None, input_size=(224, 224), target_layer="auto", preprocessing="tf")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: str(v) for k, v in _inputs(pathlib.Path(tmp), side).items()}
        runs = {
            "png16_full_depth": lambda: decode_item(InputRef(paths["png16"], "a"), profile),
            "png16_as_8_bit_before": lambda: _old_decode(paths["png16"], profile),
            "png8_photo_path": lambda: decode_item(InputRef(paths["png8"], "b"), profile),
            "dicom_ct_512": lambda: decode_item(InputRef(paths["dicom"], "c"), profile),
            "dicom_frame_count": lambda: frame_count(paths["dicom"]),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for fn in runs.values():
            fn()  # warm: imports, caches
        for _ in range(rounds):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(1000 * (time.perf_counter() - start))
    median = {name: round(float(np.median(t)), 2) for name, t in times.items()}
    base = median["png16_as_8_bit_before"]
    return {"side": side, "rounds": rounds, "median_ms": median,
            "full_depth_over_8_bit": round(median["png16_full_depth"] / base, 2),
            "load_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def report(figures: dict) -> str:
    m, side = figures["median_ms"], figures["side"]
    rows = [
        ("16-bit grey PNG, full depth (decode_item)", m["png16_full_depth"]),
        ("the same file, 8-bit decode as before (decode_pair, resize, normalise)", m["png16_as_8_bit_before"]),
        ("8-bit grey PNG of the same picture (photo path)", m["png8_photo_path"]),
        ("512 x 512 CT DICOM (decode_item: read, rescale to HU, view, resize, normalise)", m["dicom_ct_512"]),
        ("its frame count, read from the header when the inputs are listed", m["dicom_frame_count"]),
    ]
    lines = [
        "# Full-depth inputs: decode cost (`bench_medical.py`)",
        "",
        f"Median milliseconds per input of {figures['rounds']} alternating rounds, {side} x {side} PNGs, "
        f"to a 224 px 'tf' model input; {figures['cpus']} CPUs, load (1 min) {figures['load_1min']} at the end.",
        "",
        "| path | ms |",
        "|---|---|",
        *[f"| {name} | {ms} |" for name, ms in rows],
        "",
        f"Full depth costs {figures['full_depth_over_8_bit']}x the 8-bit decode of the same 16-bit file "
        "(float32 resize and normalise instead of uint8 and a lookup table, plus the percentile window "
        "of the view).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    figures = measure(args.side, args.rounds)
    pathlib.Path(args.out).write_text(report(figures), encoding="utf-8")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
