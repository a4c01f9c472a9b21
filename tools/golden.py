"""Golden runs: record what a fixed set of gradcam commands write, and compare two recordings.

A behaviour-preservation check for refactors. ``record`` runs four gradcam commands on the
repository's sample_images/ and on a folder of odd inputs that it generates itself (fixed seeds),
keeps every output under DEST/runs/NAME/ and writes DEST/manifest.json: per run the command line,
exit code, stdout, stderr, the sorted list of output files, a sha256 per file and the parsed
JSON / JSONL documents. ``compare`` prints every difference between two manifests and exits 0 only
when they are identical (the informational ``info`` block aside), 1 otherwise, so that a person
reads each difference and argues it.

Usage (from the root of the checkout whose code is to be recorded)::

    python tools/golden.py record DEST [--repo ROOT]
    python tools/golden.py compare A/manifest.json B/manifest.json

gradcam runs as ``sys.executable -m gradcam_cli`` with the working directory at ROOT (default: the
current one) and ROOT put first on PYTHONPATH (the inherited PYTHONPATH follows it), so a git
worktree's code is the code recorded even though the virtualenv has an editable install of another
checkout; the manifest's ``info.code_path`` (gradcam_cli.__file__ as the runs import it) shows which.
For example, the baseline of a refactor::

    git -C /work/main worktree add /work/golden-base HEAD --detach
    cd /work/golden-base && PYTHONPATH=/work/golden-base \\
        python /work/main/tools/golden.py record /work/golden/base
    cd /work/main && python tools/golden.py record /tmp/golden-after
    python tools/golden.py compare /work/golden/base/manifest.json /tmp/golden-after/manifest.json

The runs (about 4-5 minutes on 2 CPU cores, most of it the evaluate run):

* ``explain``: sample_images/ with gradcam, gradcam++, scorecam (16 channels), eigencam and guided,
  --grid --gif --boxes --report --save-raw --top 2.
* ``odd``: DEST/odd/ (RGBA, greyscale, 16-bit, palette, CMYK and EXIF-rotated images, a Unicode
  name with spaces, same stems with other extensions and in a sub-folder, a tiny image, an empty
  file and a corrupt JPEG) with --class 'tiger cat' --class 281 --save-raw --grid --boxes --report;
  exit code 1 expected (the empty and corrupt files fail).
* ``jsonl``: sample_images/ --jsonl --top 1; stdout's JSON lines are parsed too.
* ``evaluate``: gradcam and gradcam++, deletion, insertion, confidence and ROAD (``all`` would need
  a --boxes-csv for pointing and localisation), --sanity 1 --steps 8; stdout is the table.

What is normalised, and why (found by recording the same commit twice and comparing):

* Absolute paths: the run's --out folder becomes ``<OUT>``, the odd-inputs folder ``<ODD>``, DEST
  ``<DEST>``, ROOT ``<REPO>``, and the report's relative link from --out to ROOT (its image
  sources, e.g. ``../../../../golden-base``) ``<REPO_FROM_OUT>``: they depend on where DEST and
  the checkout are, not on the code. Commands are stored with these placeholders.
* ``.gradcam.lock`` holds the writing process's pid: it becomes ``<PID>``. Temporary-file names
  (``.NAME.tmp-HOST-PID``), should any be left behind, get ``<HOST>-<PID>``.
* The tool's version (JSON ``"version"`` fields, ``gradcam-cli X.Y.Z`` in the report) becomes
  ``<VERSION>``: a refactor may move where it comes from; it is not behaviour (this one is a
  choice, not something seen to vary).
* stderr: progress lines (rates, ETAs: ``img/s``, ``... left``; evaluate prints one every 10 s
  when stderr is not a terminal, so their number depends on timing) are dropped; TensorFlow / absl
  log prefixes (timestamps, thread ids) are cut to the message (none were seen here; with TensorFlow
  logging on they would be). After this, stderr held the odd run's 'skipped' lines only.
* For text files (.json, .jsonl, .html, .lock, ...) ``sha256`` is the hash of the normalised text;
  ``raw_sha256`` (of the bytes) is kept for reference and not compared. Binary files (JPEG, PNG,
  GIF, .npy) are hashed as they are.

Nothing else needed normalising: two recordings of one commit on one machine were byte-identical
(JPEG / PNG / GIF / matplotlib PNG outputs, .npy maps and every float in JSON alike), and
predictions.jsonl, written while decode / write threads run, had its records in the same order;
no thread-dependent output was seen, so none is normalised. The raw files that differed were the
lock file (pid) and the odd run's JSON / report (absolute paths), i.e. the rules above.

compare reads the files next to each manifest (A/runs/...) to say how binary files differ: mean
absolute pixel difference (per frame for GIFs) for images, max absolute difference for .npy.
JSON floats that differ by at most 1e-6 are listed apart, as float noise; they still count as
differences. Standard library + numpy + PIL only.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

FORMAT = 1
FLOAT_NOISE = 1e-6
SEED = 20240601
OUT, ODD = "{OUT}", "{ODD}"
RUNS = {
    "explain": ["explain", "sample_images/", "--out", OUT,
                "--method", "gradcam", "--method", "gradcam++", "--method", "scorecam",
                "--scorecam-channels", "16", "--method", "eigencam", "--method", "guided",
                "--grid", "--gif", "--boxes", "--report", "--save-raw", "--top", "2", "-q"],
    "odd": ["explain", ODD, "--out", OUT, "--class", "tiger cat", "--class", "281",
            "--save-raw", "--grid", "--boxes", "--report", "-q"],
    "jsonl": ["explain", "sample_images/", "--jsonl", "-q", "--top", "1", "--out", OUT],
    "evaluate": ["evaluate", "sample_images/", "--out", OUT,
                 "--method", "gradcam", "--method", "gradcam++",
                 "--metrics", "deletion,insertion,confidence,road", "--sanity", "1", "--steps", "8"],
}
TEXT_SUFFIXES = {".json", ".jsonl", ".html", ".htm", ".lock", ".txt", ".csv", ".md", ".svg", ".log"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
PROGRESS = re.compile(r"img/s|\b\d+(h\d+m|m\d+s|s) left\b|\d+%\|")
TF_PREFIX = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: |[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] )")
VERSION_JSON = re.compile(r'("version"\s*:\s*)"[^"]*"')
VERSION_TEXT = re.compile(r"(gradcam-cli\s+)\d+\.\d+[^\s<\"]*")
TMP_NAME = re.compile(r"\.tmp-[A-Za-z0-9_-]+-\d+")
REPORT_DATA = re.compile(r'<script type="application/json" id="([^"]+)">(.*?)</script>', re.S)


# ---------------------------------------------------------------- normalisation

class Normaliser:
    """Replaces what depends on where and when a run happened, not on the code."""

    def __init__(self, out: Path, odd: Path, dest: Path, repo: Path):
        pairs = [(str(out), "<OUT>"), (str(odd), "<ODD>"), (str(dest), "<DEST>"),
                 (str(repo), "<REPO>"), (os.path.relpath(repo, out), "<REPO_FROM_OUT>")]
        self.pairs = sorted(pairs, key=lambda pair: -len(pair[0]))

    def text(self, text: str) -> str:
        for old, new in self.pairs:
            text = text.replace(old, new)
        text = VERSION_JSON.sub(r'\1"<VERSION>"', text)
        text = VERSION_TEXT.sub(r"\1<VERSION>", text)
        return TMP_NAME.sub(".tmp-<HOST>-<PID>", text)

    def stderr(self, text: str) -> str:
        lines = []
        for line in text.replace("\r", "\n").splitlines():
            if PROGRESS.search(line):
                continue
            lines.append(TF_PREFIX.sub("", line))
        return self.text("\n".join(lines))

    def file_text(self, rel: str, text: str) -> str:
        if rel.endswith(".lock") and text.strip().isdigit():
            return "<PID>\n"
        return self.text(text)

    def document(self, doc):
        """A parsed JSON document, normalised the same way (strings, version fields)."""
        if isinstance(doc, dict):
            return {key: "<VERSION>" if key == "version" and isinstance(value, str)
                    else self.document(value) for key, value in doc.items()}
        if isinstance(doc, list):
            return [self.document(value) for value in doc]
        if isinstance(doc, str):
            return self.text(doc)
        return doc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- odd inputs

def crop(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    return image.crop(box).copy()


def make_odd_inputs(odd: Path, repo: Path) -> dict[str, str]:
    """Writes the odd-inputs folder (deterministic: fixed crops, a seeded generator); returns sha256s."""
    rng = np.random.default_rng(SEED)
    src = {name: Image.open(repo / "sample_images" / f"{name}.jpg").convert("RGB")
           for name in ("astronaut", "chelsea", "coffee", "rocket")}
    (odd / "sub").mkdir(parents=True)
    cat = crop(src["chelsea"], (40, 0, 340, 300))
    alpha = np.tile(np.linspace(32, 255, 300, dtype=np.float32), (300, 1))
    alpha[rng.integers(0, 300, 500), rng.integers(0, 300, 500)] = 0
    rgba = cat.copy()
    rgba.putalpha(Image.fromarray(alpha.astype(np.uint8), "L"))
    rgba.save(odd / "rgba.png")
    crop(src["coffee"], (100, 50, 420, 370)).convert("L").save(odd / "grey.png")
    grey = np.asarray(crop(src["astronaut"], (96, 0, 416, 320)).convert("L"), dtype=np.uint16) * 257
    grey = grey + rng.integers(0, 200, grey.shape, dtype=np.uint16)
    Image.fromarray(grey.astype(np.uint16)).save(odd / "deep16.png")  # mode I;16: 16-bit greyscale
    crop(src["rocket"], (160, 0, 587, 427)).quantize(colors=64).save(odd / "palette.png")
    crop(src["coffee"], (0, 0, 400, 400)).save(odd / "café au lait.png")
    crop(src["chelsea"], (151, 20, 451, 300)).save(odd / "same.png")
    crop(src["astronaut"], (0, 0, 256, 384)).save(odd / "same.jpg", quality=85)
    crop(src["rocket"], (0, 0, 320, 427)).save(odd / "sub" / "same.png")
    crop(src["coffee"], (200, 0, 600, 400)).convert("CMYK").save(odd / "cmyk.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    crop(src["chelsea"], (0, 0, 400, 300)).save(odd / "exif-rotated.jpg", quality=90, exif=exif)
    crop(src["chelsea"], (180, 100, 189, 106)).save(odd / "tiny.png")
    (odd / "empty.jpg").write_bytes(b"")
    (odd / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(4096))
    return {rel: sha256((odd / rel).read_bytes()) for rel in list_files(odd)}


def list_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


# ---------------------------------------------------------------- record

def child_env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    inherited = [part for part in env.get("PYTHONPATH", "").split(os.pathsep) if part]
    env["PYTHONPATH"] = os.pathsep.join([str(repo)] + inherited)
    return env


def code_info(repo: Path) -> dict:
    probe = "import gradcam_cli, sys; print(gradcam_cli.__file__); print(sys.version.split()[0])"
    lines = subprocess.run([sys.executable, "-c", probe], cwd=repo, env=child_env(repo),
                           capture_output=True, text=True, check=True).stdout.splitlines()

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"code_path": lines[0], "python": lines[1], "repo": str(repo),
            "git_head": git("rev-parse", "HEAD"), "git_dirty": git("status", "--porcelain", "--untracked-files=no")}


def parse_documents(out: Path, files: list[str], norm: Normaliser) -> dict:
    """The JSON, JSONL and report-data documents among a run's outputs, normalised."""
    docs = {}
    for rel in files:
        path = out / rel
        try:
            if rel.endswith(".json"):
                docs[rel] = norm.document(json.loads(path.read_text(encoding="utf-8")))
            elif rel.endswith(".jsonl"):
                lines = path.read_text(encoding="utf-8").splitlines()
                docs[rel] = [norm.document(json.loads(line)) for line in lines if line.strip()]
            elif rel.endswith((".html", ".htm")):
                for block_id, body in REPORT_DATA.findall(path.read_text(encoding="utf-8")):
                    docs[f"{rel}#{block_id}"] = norm.document(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            docs[rel] = {"<unparsable>": str(exc)}
    return docs


def hash_outputs(out: Path, files: list[str], norm: Normaliser) -> tuple[dict, dict]:
    hashes, raw = {}, {}
    for rel in files:
        data = (out / rel).read_bytes()
        raw[rel] = sha256(data)
        if Path(rel).suffix.lower() in TEXT_SUFFIXES:
            try:
                data = norm.file_text(rel, data.decode("utf-8")).encode("utf-8")
            except UnicodeDecodeError:
                pass
        hashes[norm.text(rel)] = sha256(data)
    return hashes, {norm.text(rel): digest for rel, digest in raw.items()}


def record_run(name: str, args: list[str], dest: Path, odd: Path, repo: Path) -> tuple[dict, float]:
    out = dest / "runs" / name
    norm = Normaliser(out, odd, dest, repo)
    argv = [sys.executable, "-m", "gradcam_cli"] + [{OUT: str(out), ODD: str(odd)}.get(a, a) for a in args]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=repo, env=child_env(repo), capture_output=True)
    seconds = time.monotonic() - started
    stdout = done.stdout.decode("utf-8", "replace")
    files = list_files(out)
    hashes, raw = hash_outputs(out, files, norm)
    entry = {
        "command": "gradcam " + shlex.join([{OUT: "<OUT>", ODD: "<ODD>"}.get(a, a) for a in args]),
        "exit_code": done.returncode,
        "stdout": norm.text(stdout),
        "stderr": norm.stderr(done.stderr.decode("utf-8", "replace")),
        "files": sorted(norm.text(rel) for rel in files),
        "sha256": hashes,
        "raw_sha256": raw,
        "json": parse_documents(out, files, norm),
    }
    if "--jsonl" in args:
        entry["stdout_jsonl"] = [norm.document(json.loads(line)) for line in stdout.splitlines() if line.strip()]
    print(f"  {name}: exit {done.returncode}, {len(files)} files, {seconds:.0f} s", file=sys.stderr)
    return entry, seconds


def record(dest: Path, repo: Path) -> int:
    dest, repo = dest.resolve(), repo.resolve()
    if not (repo / "sample_images").is_dir():
        sys.exit(f"golden: {repo} has no sample_images/; run from the repository root or pass --repo")
    if dest.exists() and any(dest.iterdir()):
        sys.exit(f"golden: {dest} is not empty; record into a new folder")
    started = time.monotonic()
    info = code_info(repo)
    print(f"golden: recording {info['code_path']} into {dest}", file=sys.stderr)
    odd = dest / "odd"
    manifest = {"format": FORMAT, "info": info, "odd_inputs": make_odd_inputs(odd, repo), "runs": {}}
    info["run_seconds"] = {}
    for name, args in RUNS.items():
        manifest["runs"][name], info["run_seconds"][name] = record_run(name, args, dest, odd, repo)
        info["run_seconds"][name] = round(info["run_seconds"][name], 1)
    info["record_seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    (dest / "manifest.json").write_text(text, encoding="utf-8")
    print(f"golden: wrote {dest / 'manifest.json'} in {info['record_seconds']:.0f} s", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- compare

class Findings:
    """Differences by run, and the float-noise ones apart."""

    def __init__(self):
        self.lines: list[str] = []
        self.noise: list[str] = []

    def add(self, where: str, text: str) -> None:
        self.lines.append(f"[{where}] {text}")

    def add_noise(self, where: str, text: str) -> None:
        self.noise.append(f"[{where}] {text}")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def diff_json(a, b, path: str, out: list) -> None:
    """Appends (path, a, b, abs difference or None) for every leaf that differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in b:
                out.append((sub, a[key], "<absent>", None))
            elif key not in a:
                out.append((sub, "<absent>", b[key], None))
            else:
                diff_json(a[key], b[key], sub, out)
        if list(a) != list(b) and set(a) == set(b):
            out.append((path or "<root>", "key order " + str(list(a)), str(list(b)), None))
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append((f"{path} (length)", len(a), len(b), None))
        for index, (x, y) in enumerate(zip(a, b)):
            diff_json(x, y, f"{path}[{index}]", out)
    elif is_number(a) and is_number(b):
        if a != b or type(a) is not type(b):
            out.append((path, a, b, abs(float(a) - float(b))))
    elif a != b or type(a) is not type(b):
        out.append((path, a, b, None))


def short(value, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def compare_documents(where: str, a, b, found: Findings) -> None:
    diffs: list = []
    diff_json(a, b, "", diffs)
    floats = [d for *_, d in diffs if d is not None]
    for path, x, y, d in diffs:
        text = f"{path}: {short(x)} -> {short(y)}" + (f"  |d|={d:.3g}" if d is not None else "")
        if d is not None and d <= FLOAT_NOISE:
            found.add_noise(where, text)
        else:
            found.add(where, text)
    if floats:
        summary = (f"max |d| over {len(floats)} differing numbers: {max(floats):.3g} "
                   f"({sum(d <= FLOAT_NOISE for d in floats)} within {FLOAT_NOISE:g})")
        (found.add if max(floats) > FLOAT_NOISE else found.add_noise)(where, summary)


def frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as image:
        return [np.asarray(frame.convert("RGB"), dtype=np.float64) for frame in ImageSequence.Iterator(image)]


def image_detail(a: Path, b: Path) -> str:
    fa, fb = frames(a), frames(b)
    parts = [] if len(fa) == len(fb) else [f"{len(fa)} vs {len(fb)} frames"]
    means = []
    for index, (x, y) in enumerate(zip(fa, fb)):
        if x.shape != y.shape:
            parts.append(f"frame {index}: size {x.shape[1]}x{x.shape[0]} vs {y.shape[1]}x{y.shape[0]}")
        else:
            means.append(float(np.abs(x - y).mean()))
    if means:
        label = "mean abs pixel difference" + (" per frame" if len(means) > 1 else "")
        parts.append(f"{label} {', '.join(f'{m:.4f}' for m in means)} (max pixel "
                     f"{max(float(np.abs(x - y).max()) for x, y in zip(fa, fb) if x.shape == y.shape):.0f})")
    return "; ".join(parts)


def npy_detail(a: Path, b: Path) -> str:
    x, y = np.load(a), np.load(b)
    if x.shape != y.shape or x.dtype != y.dtype:
        return f"shape/dtype {x.shape} {x.dtype} vs {y.shape} {y.dtype}"
    return f"max abs difference {float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))):.3g}"


def text_detail(a: Path, b: Path, norm_a: Normaliser, norm_b: Normaliser, rel: str) -> str:
    ta = norm_a.file_text(rel, a.read_text(encoding="utf-8", errors="replace")).splitlines()
    tb = norm_b.file_text(rel, b.read_text(encoding="utf-8", errors="replace")).splitlines()
    diff = list(difflib.unified_diff(ta, tb, "A/" + rel, "B/" + rel, lineterm="", n=1))
    lines = [line if len(line) <= 300 else line[:300] + "..." for line in diff]
    return "normalised text differs:\n    " + "\n    ".join(lines)


def file_detail(rel: str, run_a: Path, run_b: Path, repos: tuple[Path, Path]) -> str:
    """How two versions of an output file differ, read from beside the manifests."""
    a, b = run_a / rel, run_b / rel
    if not (a.is_file() and b.is_file()):
        return "(files not available beside the manifests)"
    suffix = Path(rel).suffix.lower()
    try:
        if suffix in IMAGE_SUFFIXES:
            return image_detail(a, b)
        if suffix == ".npy":
            return npy_detail(a, b)
        if suffix in TEXT_SUFFIXES:
            dest_a, dest_b = run_a.parent.parent, run_b.parent.parent
            norm_a = Normaliser(run_a, dest_a / "odd", dest_a, repos[0])
            norm_b = Normaliser(run_b, dest_b / "odd", dest_b, repos[1])
            return text_detail(a, b, norm_a, norm_b, rel)
    except Exception as exc:  # a file too broken to read is itself a finding
        return f"cannot compare contents: {type(exc).__name__}: {exc}"
    return f"{a.stat().st_size} vs {b.stat().st_size} bytes"


def compare_text(where: str, a: str, b: str, found: Findings) -> None:
    if a != b:
        diff = difflib.unified_diff(a.splitlines(), b.splitlines(), "A", "B", lineterm="")
        found.add(where, "differs:\n    " + "\n    ".join(diff))


def compare_files(name: str, ra: dict, rb: dict, dirs: tuple, found: Findings) -> None:
    """dirs: (A's run folder, B's run folder, (A's repo, B's repo))."""
    fa, fb = set(ra["files"]), set(rb["files"])
    for rel in sorted(fa - fb):
        found.add(f"{name} files", f"only in A: {rel}")
    for rel in sorted(fb - fa):
        found.add(f"{name} files", f"only in B: {rel}")
    if ra["files"] != rb["files"] and fa == fb:
        found.add(f"{name} files", "same files, listed in another order")
    for rel in sorted(fa & fb):
        ha, hb = ra["sha256"].get(rel), rb["sha256"].get(rel)
        if ha != hb:
            found.add(f"{name} files", f"{rel}: sha256 differs; {file_detail(rel, *dirs)}")


def compare_run(name: str, ra: dict, rb: dict, dirs: tuple, found: Findings) -> None:
    for key in ("command", "exit_code"):
        if ra.get(key) != rb.get(key):
            found.add(f"{name} {key}", f"{short(ra.get(key))} -> {short(rb.get(key))}")
    compare_files(name, ra, rb, dirs, found)
    docs_a, docs_b = ra.get("json", {}), rb.get("json", {})
    for doc in sorted(set(docs_a) | set(docs_b)):
        if doc not in docs_b or doc not in docs_a:
            found.add(f"{name} json", f"document {doc} only in {'A' if doc in docs_a else 'B'}")
        else:
            compare_documents(f"{name} {doc}", docs_a[doc], docs_b[doc], found)
    if "stdout_jsonl" in ra or "stdout_jsonl" in rb:
        compare_documents(f"{name} stdout JSON lines", ra.get("stdout_jsonl"), rb.get("stdout_jsonl"), found)
    compare_text(f"{name} stdout", ra.get("stdout", ""), rb.get("stdout", ""), found)
    compare_text(f"{name} stderr", ra.get("stderr", ""), rb.get("stderr", ""), found)


def compare(path_a: Path, path_b: Path) -> int:
    a = json.loads(path_a.read_text(encoding="utf-8"))
    b = json.loads(path_b.read_text(encoding="utf-8"))
    for label, manifest in (("A", a), ("B", b)):
        info = manifest.get("info", {})
        print(f"{label}: {info.get('code_path')} (git {info.get('git_head', '?')[:12]}"
              f"{', dirty' if info.get('git_dirty') else ''}), recorded in {info.get('record_seconds')} s")
    found = Findings()
    if a.get("format") != b.get("format"):
        found.add("manifest", f"format {a.get('format')} -> {b.get('format')}")
    compare_documents("odd inputs", a.get("odd_inputs"), b.get("odd_inputs"), found)
    runs_a, runs_b = a.get("runs", {}), b.get("runs", {})
    for name in list(runs_a) + [n for n in runs_b if n not in runs_a]:
        if name not in runs_a or name not in runs_b:
            found.add("runs", f"run {name} only in {'A' if name in runs_a else 'B'}")
            continue
        repos = (Path(a.get("info", {}).get("repo", "/")), Path(b.get("info", {}).get("repo", "/")))
        dirs = (path_a.parent / "runs" / name, path_b.parent / "runs" / name, repos)
        compare_run(name, runs_a[name], runs_b[name], dirs, found)
    print(f"\n== differences: {len(found.lines)}")
    print("\n".join(found.lines))
    print(f"\n== equal within float noise (|d| <= {FLOAT_NOISE:g}): {len(found.noise)}")
    print("\n".join(found.noise))
    identical = not found.lines and not found.noise
    print("\nidentical" if identical else "\nNOT identical: argue each difference above")
    return 0 if identical else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="run the golden commands and write DEST/manifest.json")
    rec.add_argument("dest", type=Path)
    rec.add_argument("--repo", type=Path, default=Path.cwd(),
                     help="checkout whose code runs and whose sample_images/ are used (default: cwd)")
    cmp_ = commands.add_parser("compare", help="print every difference between two manifests")
    cmp_.add_argument("a", type=Path)
    cmp_.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        return record(args.dest, args.repo)
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
