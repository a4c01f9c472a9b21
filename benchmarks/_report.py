"""How long a big HTML report takes to build and to show its first page in Chromium.

``benchmark_report(n)`` returns plain figures (a helper of ``bench_features.py``); it drives
the same headless Chromium as ``tests/report/test_report_browser.py``, whose launcher and tiny
JPEG writer it borrows (that folder on ``sys.path``).

    python benchmarks/_report.py 10000      # prints the figures as JSON
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "report"))

from test_report_browser import launch, tiny_jpeg  # noqa: E402

from gradcam_cli.io import writers  # noqa: E402
from gradcam_cli.report import build_report  # noqa: E402


def benchmark_report(n: int = 10000) -> dict:
    """Build an ``n``-record report and time, in Chromium, its opening until the first page of cards is shown.

    Returns seconds: ``build_s`` (Python, predictions.json -> report.html), ``first_page_s``
    (wall clock from navigation to the first page rendered, as Playwright sees it),
    ``first_page_in_page_s`` (the page's own ``performance.now()`` then), and the size.
    """
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="gradcam-report-bench-") as tmp:
        out = pathlib.Path(tmp) / "out"
        labels = [f"class_{k}" for k in range(1000)]
        records = []
        for i in range(n):
            if i % 97 == 0:
                records.append({"path": f"set/img{i:05d}.jpg", "status": "error", "kind": "truncated",
                                "message": "the file ends early"})
                continue
            preds = [{"rank": r, "class_index": (i + r) % 1000, "label": labels[(i + r) % 1000],
                      "probability": 0.9 / r, "overlay": f"shared{r}.jpg"} for r in (1, 2, 3)]
            records.append({"path": f"set/img{i:05d}.jpg", "status": "ok", "width": 640, "height": 480,
                            "predictions": preds,
                            "true_label": {"class_index": i % 1000, "label": labels[i % 1000], "rank": 1 + i % 3}})
        for r in (1, 2, 3):
            tiny_jpeg(out / f"shared{r}.jpg", (40 * r, 80, 160))
        writers.write_json(out / "predictions.json", {"backbone": "bench", "method": "gradcam", "images": records})
        start = time.perf_counter()
        report = build_report(out)
        build_s = time.perf_counter() - start
        with sync_playwright() as playwright:
            browser = launch(playwright, pathlib.Path(tmp) / "profile")
            page = browser.new_page()
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto("about:blank")
            start = time.perf_counter()
            page.goto(report.as_uri(), wait_until="commit")
            page.wait_for_selector("html[data-ready]", state="attached")
            first_page_s = time.perf_counter() - start
            in_page = float(page.get_attribute("html", "data-ready")) / 1000.0
            cards = page.locator("#cards .card").count()
            browser.close()
        return {"records": n, "report_bytes": report.stat().st_size, "build_s": round(build_s, 3),
                "first_page_s": round(first_page_s, 3), "first_page_in_page_s": round(in_page, 3),
                "cards_shown": cards}


if __name__ == "__main__":  # python benchmarks/_report.py [N]
    print(json.dumps(benchmark_report(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)))
