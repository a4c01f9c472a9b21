"""The Ray engine against the local one on the same folder: images/s, start-up cost, peak memory.

Each configuration is one `gradcam explain FOLDER --out OUT -q [--engine ray --workers N]`
in its own process (the Ray runs start their own local Ray, as a user's would). While it
runs, the folder's ``predictions.jsonl`` is polled (every 50 ms) and so is the resident
memory of the whole process tree (the driver, and for Ray its GCS, raylet, workers and
actors; shared pages counted once per process, so an upper bound):

- start-up: seconds from launch to the first record (Python, TensorFlow, Ray, the actors'
  models);
- images/s: records after the first batch / seconds from the first record to the last
  (the steady state);
- wall: launch to exit; peak memory: the largest sum of the tree's RSS.

A warm-up run converts the default backbone's weights into this benchmark's own cache
first, so no configuration pays for it. Run:

    python benchmarks/bench_ray.py --images 96 --repeat 2     # ~5 min on 2 cores -> benchmarks/results/ray.md

It prints a markdown table and writes it to ``--out``; ``bench_ray(...)`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "ray.md"
CONFIGS = {"local": [], "ray, 1 actor": ["--engine", "ray", "--workers", "1"],
           "ray, 2 actors": ["--engine", "ray", "--workers", "2"]}


def tree_rss_mib(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, MiB."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_folder(folder: pathlib.Path, images: int) -> None:
    """``images`` JPEGs: the sample photos, copied round-robin."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted((REPO / "sample_images").glob("*.jpg"))
    for i in range(images):
        shutil.copy(photos[i % len(photos)], folder / f"img{i:04d}.jpg")


def run_once(args: list[str], out: pathlib.Path, images: int, env: dict) -> dict:
    """One CLI run; its timings and peak memory."""
    log = out / "predictions.jsonl"
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", "from gradcam_cli.cli import main; main()", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = last = None
    peak, seen = 0.0, 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mib(proc.pid))
        count = log.read_bytes().count(b"\n") if log.exists() else 0
        now = time.monotonic()
        if count and first is None:
            first, first_count = now, count
        if count > seen:
            seen, last = count, now
        time.sleep(0.05)
    wall = time.monotonic() - start
    stderr = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0 or seen != images:
        raise RuntimeError(f"gradcam {' '.join(args)} ended {proc.returncode} with {seen} records: {stderr[-2000:]}")
    steady = (seen - first_count) / (last - first) if last and last > first else None
    return {"startup_s": first - start, "images_per_s": steady, "wall_s": wall, "peak_mib": peak}


def bench_ray(images: int = 96, repeat: int = 1, batch_size: int = 16, configs: dict | None = None) -> dict:
    """Figures per configuration: median of ``repeat`` runs (and every sample)."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="gradcam-bench-ray-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        make_folder(work / "images", images)
        make_folder(work / "warm", 1)
        run_once(["explain", str(work / "warm"), "--out", str(work / "warm-out"), "-q"], work / "warm-out", 1, env)
        results: dict = {"images": images, "batch_size": batch_size, "cpus": os.cpu_count(),
                         "load_before": os.getloadavg()[0], "configs": {}}
        samples: dict[str, list] = {name: [] for name in configs or CONFIGS}
        for r in range(repeat):
            for name, extra in (configs or CONFIGS).items():  # interleaved, so drift in the machine's load is shared
                out = work / f"out-{r}-{len(samples[name])}-{name.replace(' ', '').replace(',', '-')}"
                args = ["explain", str(work / "images"), "--out", str(out), "--batch-size", str(batch_size), "-q", *extra]
                samples[name].append(run_once(args, out, images, env))
        for name, runs in samples.items():
            results["configs"][name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            results["configs"][name]["samples"] = runs
        results["load_after"] = os.getloadavg()[0]
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(results: dict) -> str:
    lines = [f"{results['images']} images (the sample photos, copied), batch {results['batch_size']}, top 3, "
             f"efficientnet_lite0, {results['cpus']} CPUs; load average {results['load_before']:.1f} before, "
             f"{results['load_after']:.1f} after", "",
             "| engine | images/s (steady) | start-up to first record (s) | wall (s) | peak memory, process tree (MiB) |",
             "|---|---|---|---|---|"]
    for name, fig in results["configs"].items():
        rate = "—" if fig["images_per_s"] is None else f"{fig['images_per_s']:.1f}"
        lines.append(f"| {name} | {rate} | {fig['startup_s']:.1f} | {fig['wall_s']:.1f} | {fig['peak_mib']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(RESULTS),
                        help=f"also write the table here (default {RESULTS.relative_to(REPO)}; '' for none)")
    options = parser.parse_args()
    table = markdown(bench_ray(options.images, options.repeat, options.batch_size))
    print(table, end="")
    if options.out:
        pathlib.Path(options.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(options.out).write_text(
            f"# The Ray engine against the local one\n\n{time.strftime('%Y-%m-%d')}; "
            f"`python benchmarks/bench_ray.py --images {options.images} --repeat {options.repeat}`, medians.\n\n"
            + table, encoding="utf-8")
