"""Can the CPU side feed a GPU? The pipeline's I/O ceiling, measured.

The real folder pipeline (decode, resize, normalise, overlays, JPEG encode, atomic
writes, records) runs with the model step replaced by a zero-cost stand-in that
returns maps of the right shape (``StandInCam``: a benchmark-only hook, not a user
option). Images/s per core = images / CPU-seconds of the whole process; the ratio
ceiling / forward pass says how many cores a GPU that fast would need.

    python benchmarks/bench_io.py     # ~8 min on 2 cores -> benchmarks/results/io.md

Then the whole CLI with the real EfficientNet-Lite0 against its compiled forward pass,
measured side by side (forward, pipeline, forward), top-1 / top-5 / --no-overlays, and
peak memory of 4000x3000 runs in fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "io.md"
sys.path.insert(0, str(REPO))


class StandInCam:
    """Looks like a GradCAM to the pipeline; explains nothing (random maps, fixed classes)."""

    def __init__(self, backbone: str = "efficientnet_lite0"):
        from types import SimpleNamespace

        from gradcam_cli.config import classes
        from gradcam_cli.config.profiles import get_profile, load_registry
        from gradcam_cli.models.geometry import stretch_geometry

        self.profile = get_profile(load_registry(), backbone)
        self.split = SimpleNamespace(num_classes=1000, feature_shape=(7, 7, 1280), head_type="softmax")
        self.class_names = classes.load("imagenet")
        self.geometry = stretch_geometry(tuple(self.profile.input_size), (7, 7))
        self.max_batch = None
        self.layer = "stand-in"
        self.rng = np.random.default_rng(0)

    def resolve_classes(self, tokens):
        return [self.class_names.resolve(t, 1000) for t in tokens]

    @property
    def upsampler(self):
        from gradcam_cli.render.resample import upsample_linear

        return upsample_linear

    def describe(self) -> dict:
        return {"backbone": "stand-in", "geometry": self.geometry.to_json()}

    def explain_prepared(self, batch, *, top=3, indices=None, truth=None, threshold=None, method="gradcam",
                         options=None):
        from gradcam_cli.results import Explanation, Prediction

        probs = np.full(1000, 1e-3, np.float32)
        out = []
        for _ in range(len(batch)):
            maps = self.rng.random((top, 7, 7), dtype=np.float32)
            predictions = [Prediction(rank=k + 1, class_index=k, class_id=self.class_names.class_id(k),
                                      label=self.class_names.label(k), probability=0.1) for k in range(top)]
            out.append(Explanation(predictions=predictions, maps=maps, probabilities=probs))
        return out


def make_folder(root: pathlib.Path, size: tuple[int, int], count: int, grain: int = 10) -> pathlib.Path:
    """``count`` photo-like JPEGs (the sample images resized, with +-``grain`` levels of noise) of
    (width, height) ``size``. Grain makes the entropy-coded data, and so the decode, heavier: at
    1024x768 q90, ~210 KB a file with grain 10, ~130 KB without."""
    import cv2

    folder = root / f"jpegs_{size[0]}x{size[1]}" if grain else root / f"jpegs_{size[0]}x{size[1]}_smooth"
    folder.mkdir(parents=True, exist_ok=True)
    samples = sorted((REPO / "sample_images").glob("*.jpg"))
    rng = np.random.default_rng(1)
    for i in range(count):
        image = cv2.resize(cv2.imread(str(samples[i % len(samples)])), size, interpolation=cv2.INTER_CUBIC)
        if grain:
            image = (image + rng.integers(-grain, grain + 1, image.shape)).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_pipeline(cam, folder: pathlib.Path, out: pathlib.Path, *, top: int, threads: int, batch: int = 16,
                 **settings) -> dict:
    from gradcam_cli.io.discover import iter_inputs
    from gradcam_cli.run.folder import run_folder
    from gradcam_cli.settings import RunOptions, RunSettings

    refs = list(iter_inputs([str(folder)]))
    shutil.rmtree(out, ignore_errors=True)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    summary = run_folder(cam, refs, RunSettings.from_json({"top": top, **settings}), RunOptions(out_dir=out, batch_size=batch,
                                                                                 workers=threads))
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    assert summary.done == len(refs), summary
    return {"images": len(refs), "wall_s": wall, "cpu_s": cpu, "ips": len(refs) / wall, "ips_per_core": len(refs) / cpu}


def ceiling(root: pathlib.Path, small: pathlib.Path, large: pathlib.Path, repeats: int = 3,
            smooth: pathlib.Path | None = None) -> list[dict]:
    cam = StandInCam()
    rows = []
    cases = [("1024x768", small, 1, {}), ("1024x768", small, 5, {}),
             ("1024x768", small, 1, {"overlay_max_side": 1024}), ("1024x768", small, 1, {"overlays": False}),
             ("4000x3000", large, 1, {}), ("4000x3000", large, 5, {}),
             ("4000x3000", large, 1, {"overlay_max_side": 1024}), ("4000x3000", large, 5, {"overlay_max_side": 1024}),
             ("4000x3000", large, 1, {"overlays": False})]
    if smooth is not None:  # photos without grain: lighter entropy-coded data
        cases += [("1024x768, no grain", smooth, 1, {}), ("1024x768, no grain", smooth, 1, {"overlays": False})]
    run_pipeline(cam, small, root / "warm", top=1, threads=2)
    for size, folder, top, extra in cases:
        for threads in (1, 2):
            runs = [run_pipeline(cam, folder, root / "out", top=top, threads=threads, **extra) for _ in range(repeats)]
            result = {k: statistics.median(r[k] for r in runs) for k in runs[0]}  # the median run of each figure
            option = ", ".join(f"{k}={v}" for k, v in extra.items()) or "overlays at full size"
            rows.append({"size": size, "top": top, "options": option, "threads": threads, **result})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def inputs(cam, batch: int = 16) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (batch, *cam.profile.input_size, 3)).astype(np.float32)


def throughput(call, batch: int, seconds: float) -> dict:
    """``call()`` (one batch of ``batch`` images) once to warm, then again for ``seconds``: img/s, and
    CPU-ms per image (all of the process's threads)."""
    call()
    n, start, cpu0 = 0, time.perf_counter(), cpu_seconds()
    while time.perf_counter() - start < seconds:
        call()
        n += batch
    return {"ips": n / (time.perf_counter() - start), "cpu_ms": 1000 * (cpu_seconds() - cpu0) / n}


def forward(cam, batch: int = 16, seconds: float = 6.0) -> dict:
    """The compiled forward pass."""
    import tensorflow as tf

    model, x = cam.model, inputs(cam, batch)
    fn = tf.function(lambda t: model(t, training=False), input_signature=[tf.TensorSpec((None, *x.shape[1:]))])
    return throughput(lambda: fn(x).numpy(), batch, seconds)


def engine(cam, top: int, batch: int = 16, seconds: float = 4.0) -> dict:
    """The engine alone (every map of a batch of prepared inputs, as the pipeline asks it). The
    pipeline cannot beat it."""
    x = inputs(cam, batch)
    return throughput(lambda: cam.explain_prepared(x, top=top), batch, seconds)


def backbones_forward(seconds: float = 3.0) -> list[dict]:
    """Every registered backbone's compiled forward pass at batch 16 (weights none: the same
    arithmetic as ImageNet weights), in this process, one after the other."""
    import keras

    from gradcam_cli.config.profiles import load_registry
    from gradcam_cli.cam import GradCAM

    rows = []
    for name, profile in sorted(load_registry().items()):
        cam = GradCAM(profile=profile, weights="none") if name != "efficientnet_lite0" else GradCAM(name)
        rows.append({"backbone": name, "input": profile.input_size[0], **forward(cam, seconds=seconds)})
        print(json.dumps(rows[-1]), file=sys.stderr)
        del cam
        keras.backend.clear_session()
    return rows


def whole_cli(root: pathlib.Path, small: pathlib.Path, repeats: int = 3) -> list[dict]:
    """The real Lite0 pipeline against its compiled forward pass: forward, pipeline, forward, in
    ``repeats`` rounds; each row is its median round (by ratio), every figure from that round."""
    from gradcam_cli.cam import GradCAM

    cam = GradCAM("efficientnet_lite0")
    stand_in = StandInCam()
    cores = len(os.sched_getaffinity(0))
    run_pipeline(cam, small, root / "warm", top=1, threads=None)
    rows = []
    for top, extra in ((1, {}), (5, {}), (1, {"overlays": False}), (5, {"overlays": False})):
        rounds = []
        for _ in range(repeats):
            before = forward(cam, seconds=3.0)
            result = run_pipeline(cam, small, root / "out", top=top, threads=None, **extra)
            io = run_pipeline(stand_in, small, root / "out", top=top, threads=None, **extra)  # the same work, no model
            maps = engine(cam, top, seconds=3.0)
            after = forward(cam, seconds=3.0)
            ips = (before["ips"] + after["ips"]) / 2
            io_ms = 1000 * io["cpu_s"] / io["images"]
            # what perfect sharing of the cores would give: every core busy, each image costing
            # its engine CPU time plus its I/O CPU time, nothing more (an estimate: both move with load)
            rounds.append({"forward_ips": ips, "cli_ips": result["ips"], "ratio": result["ips"] / ips,
                           "engine_ratio": maps["ips"] / ips, "model_cpu_ms": maps["cpu_ms"], "io_cpu_ms": io_ms,
                           "bound": cores / ((maps["cpu_ms"] + io_ms) / 1000) / ips})
        option = ", ".join(f"{k}={v}" for k, v in extra.items()) or "overlays at full size"
        rows.append({"top": top, "options": option, **sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def memory(large: pathlib.Path, count: int, extra: list[str]) -> float:
    """Peak RSS (MiB, VmHWM: ru_maxrss would include the parent's at fork) of a stand-in run over
    ``count`` 4000x3000 images, in a fresh process."""
    code = (
        "import json, resource, sys, pathlib; sys.path.insert(0, %r); sys.path.insert(0, %r)\n"
        "from bench_io import StandInCam, run_pipeline\n"
        "from gradcam_cli.run.memory import keep_large_blocks; keep_large_blocks()  # as the CLI does\n"
        "import shutil, tempfile\n"
        "src = pathlib.Path(%r); folder = pathlib.Path(tempfile.mkdtemp()) / 'in'; folder.mkdir()\n"
        "files = sorted(src.glob('*.jpg'))\n"
        "[ (folder / f'{i:04d}.jpg').symlink_to(files[i %% len(files)]) for i in range(%d) ]\n"
        "run_pipeline(StandInCam(), folder, folder.parent / 'out', top=3, threads=2, %s)\n"
        "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024)\n"
    ) % (str(REPO), str(REPO / "benchmarks"), str(large), count, ", ".join(extra))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def stage_floors(folders: dict, repeats: int = 15) -> list[dict]:
    """What each per-image stage costs alone, one thread, median of ``repeats`` on one file per
    size: the libjpeg decode (full and reduced), the model-input resize, one overlay's
    colour + blend, and its JPEG encode at quality 90. These are floors: the pipeline's ceiling
    per core cannot beat 1 / (their sum for the work a run asks)."""
    import cv2

    from gradcam_cli.io.preprocess import resize
    from gradcam_cli.render.overlay import encode_jpeg, overlays

    cv2.setNumThreads(1)

    def ms(fn) -> float:
        fn()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return 1000 * statistics.median(samples)

    rows = []
    cam = np.random.default_rng(0).random((1, 7, 7), dtype=np.float32)
    for size, folder in folders.items():
        data = np.frombuffer((sorted(folder.glob("*.jpg"))[0]).read_bytes(), np.uint8)
        image = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        [overlay] = overlays(image, cam)
        figures = {
            "decode, full": ms(lambda: cv2.imdecode(data, cv2.IMREAD_COLOR)),
            "decode, 1/2": ms(lambda: cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_2)),
            "decode, 1/4": ms(lambda: cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_4)),
            "decode, 1/8": ms(lambda: cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_8)),
            "resize to 224x224 (from full)": ms(lambda: resize(image, (224, 224))),
            "one overlay: colour + blend": ms(lambda: overlays(image, cam)),
            "one overlay: JPEG encode q90": ms(lambda: encode_jpeg(overlay, 90)),
        }
        megapixels = image.shape[0] * image.shape[1] / 1e6
        rows += [{"size": size, "stage": k, "ms": v, "ms_per_mp": v / megapixels} for k, v in figures.items()]
    cv2.setNumThreads(0)
    return rows


def per_core(rows: list[dict], size: str, top: int, options: str, threads: int = 2) -> float | None:
    """The img/s per core of one ceiling row (2 threads: the pool as the CLI sizes it here)."""
    match = [r for r in rows if (r["size"], r["top"], r["options"], r["threads"]) == (size, top, options, threads)]
    return match[0]["ips_per_core"] if match else None


FEED = (("top-1 overlays", 1, "overlays at full size"), ("top-5 overlays", 5, "overlays at full size"),
        ("top-1, no overlays", 1, "overlays=False"))


def report(rows: list[dict], cli: list[dict], mem: dict, machine: str, floors: list[dict] | None = None,
           backbones: list[dict] | None = None) -> str:
    lines = ["# I/O ceiling and feeding a GPU", "", machine, "",
             "## I/O ceiling (model replaced by a zero-cost stand-in; img/s per core = images / CPU-seconds)", "",
             "| input JPEGs | top | options | I/O threads | img/s | img/s per core |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['top']} | {r['options']} | {r['threads']} | {r['ips']:.1f} | "
                     f"{r['ips_per_core']:.1f} |")
    capped = [(t, per_core(rows, "4000x3000", 1, "overlay_max_side=1024", t), per_core(rows, "4000x3000", 1,
                                                                                      "overlays at full size", t))
              for t in (1, 2)]
    if all(a and b for _, a, b in capped):
        lines += ["", "4000x3000, top-1: `--overlay-max-side 1024` runs "
                  + " and ".join(f"{a / b:.1f}x the full-size overlays' images per core with {t} thread{'s' * (t > 1)}"
                                 for t, a, b in capped) + "."]
    if cli:
        lines += ["", "## Whole pipeline with EfficientNet-Lite0 (batch 16) vs its compiled forward pass", "",
                  "Each row is the median of three rounds, every figure from that round. Perfect sharing: the "
                  "ratio if the model and the I/O shared the cores with nothing lost, every core busy and each "
                  "image costing its engine CPU time (all its maps, measured alone) plus its I/O CPU time (the "
                  "stand-in run of the same work): cores / (engine + I/O CPU-s per image) / forward img/s. An "
                  "estimate: its parts move with the machine's load as much as the ratio does.", "",
                  "| top | options | forward img/s | pipeline img/s | ratio | engine alone | engine CPU ms/img | "
                  "I/O CPU ms/img | perfect sharing |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in cli:
            lines.append(f"| {r['top']} | {r['options']} | {r['forward_ips']:.1f} | {r['cli_ips']:.1f} | "
                         f"{r['ratio']:.2f}x | {r['engine_ratio']:.2f}x | {r['model_cpu_ms']:.1f} | "
                         f"{r['io_cpu_ms']:.1f} | {r['bound']:.2f}x |")
    if backbones and rows:
        lines += ["", "## Cores the CPU side needs per backbone (1024x768 JPEGs)", "",
                  "Forward: the compiled forward pass at batch 16 on this machine's CPUs (weights none). Cores = "
                  "forward img/s / the I/O ceiling per core (2 threads): the cores that keep this forward pass "
                  "fed. A GPU K times faster than these CPUs needs K times as many.", "",
                  "| backbone | input | forward img/s | " + " | ".join(f"cores, {label}" for label, _, _ in FEED) + " |",
                  "|---|---:|---:|" + "---:|" * len(FEED)]
        ceilings = [per_core(rows, "1024x768", top, option) for _, top, option in FEED]
        for b in backbones:
            cores = " | ".join(f"{b['ips'] / c:.2f}" if c else "-" for c in ceilings)
            lines.append(f"| {b['backbone']} | {b['input']} | {b['ips']:.1f} | {cores} |")
    if floors:
        lines += ["", "## Stage floors (one thread, each stage alone, median)", "",
                  "| input JPEGs | stage | ms | ms per megapixel |", "|---|---|---:|---:|"]
        for r in floors:
            lines.append(f"| {r['size']} | {r['stage']} | {r['ms']:.2f} | {r['ms_per_mp']:.2f} |")
    if mem:
        lines += ["", "## Peak memory, 4000x3000 JPEGs, top-3, stand-in model, fresh process", "",
                  "| images | options | peak RSS MiB |", "|---:|---|---:|"]
        for (count, option), value in mem.items():
            lines.append(f"| {count} | {option} | {value:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from gradcam_cli.run.memory import keep_large_blocks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS),
                        help=f"write the markdown report here (default {RESULTS.relative_to(REPO)}; '' for none)")
    parser.add_argument("--small", type=int, default=64, help="1024x768 images")
    parser.add_argument("--large", type=int, default=16, help="4000x3000 images")
    parser.add_argument("--no-cli", action="store_true", help="skip the real-model rows")
    parser.add_argument("--no-backbones", action="store_true", help="skip the per-backbone forward passes")
    parser.add_argument("--floors-only", action="store_true", help="only the stage floors")
    args = parser.parse_args()
    keep_large_blocks()  # as `gradcam explain` does
    root = pathlib.Path(tempfile.mkdtemp(prefix="bench-io-"))
    try:
        load = os.getloadavg()[0]
        small = make_folder(root, (1024, 768), args.small)
        large = make_folder(root, (4000, 3000), args.large)
        smooth = make_folder(root, (1024, 768), args.small, grain=0)
        floors = stage_floors({"1024x768": small, "1024x768, no grain": smooth, "4000x3000": large})
        rows = [] if args.floors_only else ceiling(root, small, large, smooth=smooth)
        cli = [] if args.no_cli or args.floors_only else whole_cli(root, small)
        backbones = [] if args.no_backbones or args.floors_only else backbones_forward()
        mem = {} if args.floors_only else {
            (n, opt): memory(large, n, extra) for n in (50, 200)
            for opt, extra in (("overlays at full size", []), ("overlay_max_side=1024", ["overlay_max_side=1024"]))}
        machine = (f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), load average before {load:.1f}, "
                   f"after {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d')}; `python benchmarks/bench_io.py`")
        text = report(rows, cli, mem, machine, floors, backbones)
        print(text)
        if args.out:
            pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(args.out).write_text(text)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
