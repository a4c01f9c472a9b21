"""The HTML report in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Every page is opened from file:// and must make no network request, log no console
error, raise no page error and open no dialog. Run alone with ``pytest -m browser``;
leave out with ``-m "not browser"``.
"""

from __future__ import annotations

import pathlib
import urllib.parse

import cv2
import numpy as np
import pytest

from gradcam_cli.io import writers
from gradcam_cli.report import build_report

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
HOSTILE = "<img src=x onerror=alert(1)>.jpg"


def launch(playwright, profile_dir):
    """A headless Chromium with a fresh profile, a tall window (every lazy image of a small report loads)."""
    return playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 6000},
    )


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright, tmp_path_factory.mktemp("profile"))
        yield browser
        browser.close()


class Opened:
    """A page and everything it did: requests, console errors, page errors, dialogs."""

    def __init__(self, context, path: pathlib.Path, suffix: str = ""):
        self.requests, self.console_errors, self.page_errors, self.dialogs = [], [], [], []
        self.page = context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.as_uri() + suffix)  # suffix: a query string or fragment (the page's state)
        self.page.wait_for_selector("html[data-ready]", state="attached")

    def names(self) -> list[str]:
        return self.page.eval_on_selector_all("#cards .card .name", "els => els.map(e => e.textContent)")

    def set_search(self, text: str, expect_count: int):
        self.change(lambda: self.page.fill("#search", text), expect_count)

    def select(self, control: str, value: str, expect_count: int):
        self.change(lambda: self.page.select_option(control, value), expect_count)

    def change(self, action, n: int):
        """Blank the count line, act, wait until the page has filtered again and counts ``n`` images."""
        self.page.eval_on_selector("#count", "e => { e.textContent = ''; }")
        action()
        self.page.wait_for_function("n => document.getElementById('count').textContent.startsWith(n + ' of ')", arg=n)

    def state(self) -> dict:
        """The page's state as its URL's fragment holds it (``#q=...&class=...``)."""
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.page.url).fragment))

    def controls(self) -> dict:
        return {c: self.page.input_value(f"#{c}") for c in ("search", "class-filter", "show", "sort")}

    def assert_clean(self):
        outside = [u for u in self.requests if not u.startswith(("file://", "data:"))]
        assert outside == [] and self.console_errors == [] and self.page_errors == [] and self.dialogs == []
        self.page.close()


def tiny_jpeg(path: pathlib.Path, colour, size=(24, 16)) -> None:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:] = colour
    writers.write_bytes(path, cv2.imencode(".jpg", image)[1].tobytes())


def write_run(out: pathlib.Path, records: list[dict], **header) -> pathlib.Path:
    run = {"tool": "gradcam-cli", "version": "0.1.0", "backbone": "efficientnet_lite0", "model": "efficientnet_lite0",
           "target_layer": "top_activation", "target_layer_shape": [7, 7, 1280], "method": "gradcam",
           "options": {"top": 1, "alpha": 0.4}, **header, "images": records}
    writers.write_json(out / "predictions.json", run)
    return build_report(out)


def ok_record(out: pathlib.Path, path: str, label: str, index: int, p: float, stem: str, truth=None) -> dict:
    overlay = f"{stem}.top1-{label}.jpg"
    if not (out / overlay).exists():
        tiny_jpeg(out / overlay, (index % 256, 80, 160))
    record = {"path": path, "status": "ok", "width": 24, "height": 16,
              "predictions": [{"rank": 1, "class_index": index, "class_id": f"n{index:08d}", "label": label,
                               "probability": p, "overlay": overlay}]}
    if truth is not None:
        record["true_label"] = {"class_index": truth[0], "label": truth[1], "rank": 1 if truth[0] == index else 4}
        record["predictions"][0]["true_class"] = truth[0] == index
    return record


def test_report_controls_and_a_hostile_file_name(context, tmp_path):
    out = tmp_path / "out"
    hostile = tmp_path / HOSTILE
    tiny_jpeg(hostile, (200, 10, 10))  # the original exists: the card links it by a relative URL
    records = [
        ok_record(out, "photos/cat1.jpg", "tabby", 281, 0.91, "cat1"),
        ok_record(out, "photos/cat2.jpg", "tabby", 281, 0.42, "cat2"),
        ok_record(out, "photos/egypt.jpg", "Egyptian_cat", 285, 0.77, "egypt"),
        ok_record(out, str(hostile), "tiger_cat", 282, 0.55, HOSTILE[:-4]),
        {"path": "photos/broken.jpg", "status": "error", "kind": "truncated",
         "message": "<b>the file ends early</b> & cannot be decoded"},
        ok_record(out, "photos/dog.jpg", "beagle", 162, 0.66, "dog"),
    ]
    report = write_run(out, records, summary={"images": 6, "done": 5, "failed": 1})
    assert report == out / "report.html"
    html = report.read_text(encoding="utf-8")
    assert "base64" not in html and "<img" not in html  # nothing embedded, no markup from the data
    opened = Opened(context, report)
    page = opened.page
    assert opened.names() == ["cat1.jpg", "cat2.jpg", "egypt.jpg", HOSTILE, "broken.jpg", "dog.jpg"]
    assert page.locator("img[src='x']").count() == 0
    hostile_card = page.locator(".card", has_text="tiger_cat")
    assert hostile_card.locator(".name").text_content() == HOSTILE
    # every picture loaded from file://, the hostile original and its overlay included
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    assert page.eval_on_selector_all("#cards img", "els => els.map(i => i.naturalWidth)") == [24] * 6
    assert hostile_card.locator("img").count() == 2
    assert page.locator(".card.error .message").text_content() == (
        "truncated: <b>the file ends early</b> & cannot be decoded")
    header = page.text_content("header.run")
    assert "efficientnet_lite0" in header and "top_activation" in header and "gradcam" in header

    opened.set_search("tabby", 2)
    assert opened.names() == ["cat1.jpg", "cat2.jpg"]
    opened.set_search("EGYPT", 1)  # file name and label, any case
    assert opened.names() == ["egypt.jpg"]
    opened.set_search("onerror", 1)
    assert opened.names() == [HOSTILE]
    opened.set_search("", 6)
    opened.select("#class-filter", "281", 2)
    assert opened.names() == ["cat1.jpg", "cat2.jpg"]
    opened.select("#class-filter", "", 6)
    opened.select("#sort", "conf-desc", 6)
    assert opened.names() == ["cat1.jpg", "egypt.jpg", "dog.jpg", HOSTILE, "cat2.jpg", "broken.jpg"]
    opened.select("#show", "error", 1)
    assert opened.names() == ["broken.jpg"]
    opened.assert_clean()


def test_test_set_mode_puts_mistakes_first(context, tmp_path):
    out = tmp_path / "out"
    truth = {"a": (281, "tabby"), "b": (285, "Egyptian_cat"), "c": (281, "tabby"), "d": (162, "beagle"),
             "e": (281, "tabby")}
    predicted = {"a": (281, "tabby", 0.9), "b": (281, "tabby", 0.6), "c": (285, "Egyptian_cat", 0.8),
                 "d": (162, "beagle", 0.7), "e": (285, "Egyptian_cat", 0.4)}
    records = [ok_record(out, f"set/{k}.jpg", predicted[k][1], predicted[k][0], predicted[k][2], k, truth[k])
               for k in "abcde"]
    summary = {"images": 5, "done": 5, "failed": 0,
               "accuracy": {"labelled": 5, "top1": 0.4, "top5": 1.0, "misclassified": ["set/b.jpg", "set/c.jpg",
                                                                                       "set/e.jpg"]}}
    opened = Opened(context, write_run(out, records, summary=summary))
    page = opened.page
    # misclassified first (most confident mistake first), then the correct ones in run order of confidence
    assert opened.names() == ["c.jpg", "b.jpg", "e.jpg", "a.jpg", "d.jpg"]
    assert page.locator(".card.wrong").count() == 3
    assert "top-1 accuracy 40.0%" in page.text_content("#accuracy")
    first = page.locator(".card").first.locator(".truth").text_content()
    assert first == "true: tabby (281, ranked 4) · predicted: Egyptian_cat (285) 0.800 ✗"
    rows = page.eval_on_selector_all("#class-errors tbody tr",
                                     "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))")
    assert rows == [
        ["tabby (281)", "3", "2", "33.3%", "Egyptian_cat (285) ×2"],
        ["Egyptian_cat (285)", "1", "1", "0.0%", "tabby (281) ×1"],
        ["beagle (162)", "1", "0", "100.0%", ""],
    ]
    opened.select("#show", "right", 2)
    assert opened.names() == ["a.jpg", "d.jpg"]
    opened.assert_clean()


def test_pages_of_100(context, tmp_path):
    out = tmp_path / "out"
    labels = ["tabby", "beagle", "Egyptian_cat"]
    records = [ok_record(out, f"big/img{i:03d}.jpg", labels[i % 3], i % 3, 0.5, f"shared{i % 3}")
               for i in range(250)]
    opened = Opened(context, write_run(out, records))
    page = opened.page
    seen = []
    for number, size in [(1, 100), (2, 100), (3, 50)]:
        assert page.text_content("#page") == f"page {number} of 3"
        names = opened.names()
        assert len(names) == size
        seen += names
        assert page.is_disabled("#next") == (number == 3) and page.is_disabled("#prev") == (number == 1)
        if number < 3:
            page.click("#next")
    assert seen == [f"img{i:03d}.jpg" for i in range(250)]
    assert opened.state() == {"page": "3"}  # the page is in the URL too
    opened.select("#class-filter", "1", 83)  # beagle: 83 images, one page
    assert page.text_content("#page") == "page 1 of 1" and len(opened.names()) == 83
    assert opened.state() == {"class": "1"}
    opened.assert_clean()
    again = Opened(context, out / "report.html", "#page=2")
    assert again.page.text_content("#page") == "page 2 of 3" and again.names()[0] == "img100.jpg"
    again.assert_clean()


def small_run(out: pathlib.Path, truth: bool = False) -> pathlib.Path:
    """Four cats and a dog, one label full of URL syntax (``&``, ``#``, ``=``, ``%``, a space)."""
    rows = [("photos/cat1.jpg", "tabby", 281, 0.91, "cat1", (281, "tabby")),
            ("photos/cat2.jpg", "tabby", 281, 0.42, "cat2", (285, "Egyptian_cat")),
            ("photos/egypt.jpg", "Egyptian_cat", 285, 0.77, "egypt", (285, "Egyptian_cat")),
            ("photos/odd.jpg", "a&b #c=d%", 7, 0.30, "odd", (7, "a&b #c=d%")),
            ("photos/dog.jpg", "beagle", 162, 0.66, "dog", (162, "beagle"))]
    return write_run(out, [ok_record(out, path, label, index, p, stem, row_truth if truth else None)
                           for path, label, index, p, stem, row_truth in rows])


def test_no_matches_says_so_and_goes_when_matches_return(context, tmp_path):
    report = small_run(tmp_path / "out", truth=True)
    opened = Opened(context, report)
    page = opened.page
    empty = page.locator("#empty")
    assert empty.count() == 1 and not empty.is_visible()
    opened.set_search("zebra<b>&\"", 0)
    assert empty.is_visible() and page.locator("#cards .card").count() == 0
    assert empty.locator(".what").text_content() == "No images match “zebra<b>&\"”."
    assert page.locator("#empty b").count() == 0  # the query is text, never markup
    opened.set_search("tabby", 2)
    assert not empty.is_visible() and opened.names() == ["cat2.jpg", "cat1.jpg"]
    opened.select("#show", "right", 1)  # the search and a filter together
    opened.select("#class-filter", "285", 0)
    assert empty.locator(".what").text_content() == "No images match “tabby” with the filters chosen."
    opened.set_search("", 1)
    assert not empty.is_visible() and opened.names() == ["egypt.jpg"]
    opened.select("#show", "wrong", 0)
    assert empty.locator(".what").text_content() == "No images match the filters chosen."
    opened.change(lambda: page.click("#empty button"), 5)  # one click clears the search and every filter
    assert not empty.is_visible() and opened.controls() == {"search": "", "class-filter": "", "show": "all",
                                                            "sort": "wrong"}
    opened.assert_clean()
    none = Opened(context, write_run(tmp_path / "none", []))  # a run of no image: said so, nothing to clear
    assert none.page.locator("#empty .what").text_content() == "This run has no images."
    assert not none.page.locator("#empty button").is_visible()
    none.assert_clean()


def test_search_and_filters_live_in_the_url_and_come_back_from_it(context, tmp_path):
    report = small_run(tmp_path / "out")
    opened = Opened(context, report)
    assert opened.state() == {} and "#" not in opened.page.url  # the default view: a plain URL
    opened.set_search("&B #c=D%", 1)  # typed: the URL follows, every character of the query kept
    assert opened.state() == {"q": "&B #c=D%"} and opened.names() == ["odd.jpg"]
    opened.set_search("cat", 3)
    opened.select("#class-filter", "281", 2)
    opened.select("#sort", "conf-asc", 2)
    assert opened.state() == {"q": "cat", "class": "281", "sort": "conf-asc"}
    url = opened.page.url
    opened.assert_clean()

    again = Opened(context, report, "#" + url.split("#", 1)[1])  # the URL opened afresh: the same view
    assert again.controls() == {"search": "cat", "class-filter": "281", "show": "all", "sort": "conf-asc"}
    assert again.names() == ["cat2.jpg", "cat1.jpg"]
    again.assert_clean()

    queried = Opened(context, report, "?q=EGYPT")  # a query string works too
    assert queried.controls()["search"] == "EGYPT" and queried.names() == ["egypt.jpg"]
    queried.set_search("beagle", 1)  # the state moves to the fragment, the query string goes
    assert urllib.parse.urlsplit(queried.page.url).query == "" and queried.state() == {"q": "beagle"}
    queried.set_search("", 5)
    assert "#" not in queried.page.url and "?" not in queried.page.url
    queried.change(lambda: queried.page.evaluate("location.hash = 'q=tabby&class=281'"), 2)  # an edited URL
    assert queried.controls()["search"] == "tabby" and queried.controls()["class-filter"] == "281"
    queried.assert_clean()

    # values the page does not offer are ignored, not shown as an empty select; markup stays text
    odd = Opened(context, report, "#" + urllib.parse.urlencode({"q": "<img src=x onerror=alert(1)>", "class": "999",
                                                                 "sort": "nonsense"}))
    assert odd.controls() == {"search": "<img src=x onerror=alert(1)>", "class-filter": "", "show": "all",
                              "sort": "run"}
    assert odd.names() == [] and odd.page.locator("#empty .what").text_content() == (
        "No images match “<img src=x onerror=alert(1)>”.")
    assert odd.page.locator("img[src='x']").count() == 0
    odd.assert_clean()


def test_guided_maps_grids_and_gifs_show_with_their_image(context, tmp_path):
    """A run of gradcam + guided with --grid --gif: each card shows its guided maps, grid and GIF
    (a GIF the record does not list, made later, found by the naming rule), loaded from file://;
    an image without them says nothing of them. The stem holds markup and both quotes."""
    from PIL import Image

    out = tmp_path / "out"
    stem = "run/<script>alert(\"q'1\")</script>"
    base = f"{stem}.top1-tabby"
    (out / "run" / "<script>alert(\"q'1\")<").mkdir(parents=True)
    tiny_jpeg(out / f"{base}.gradcam.jpg", (10, 200, 10))
    writers.write_bytes(out / f"{base}.guided.png", cv2.imencode(".png", np.full((22, 22, 3), 90, np.uint8))[1].tobytes())
    tiny_jpeg(out / f"{stem}.grid.jpg", (30, 30, 30), size=(60, 20))
    frames = [Image.new("RGB", (30, 30), colour) for colour in ("red", "blue")]
    frames[0].save(out / f"{stem}.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)
    records = [
        {"path": "photos/cat.jpg", "status": "ok", "width": 24, "height": 16, "grid": f"{stem}.grid.jpg",
         "predictions": [{"rank": 1, "class_index": 281, "label": "tabby", "probability": 0.91,
                          "overlays": {"gradcam": f"{base}.gradcam.jpg"}, "guided": f"{base}.guided.png"}]},
        ok_record(out, "photos/dog.jpg", "beagle", 162, 0.66, "dog"),
    ]
    opened = Opened(context, write_run(out, records, method=["gradcam", "guided"]))
    page = opened.page
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    cat, dog = page.locator(".card").nth(0), page.locator(".card").nth(1)
    assert cat.locator("figcaption").all_text_contents() == [
        "1. tabby (281) 0.910 · gradcam", "1. tabby (281) 0.910 · guided", "grid", "GIF"]
    assert cat.locator("img").evaluate_all("els => els.map(i => [i.naturalWidth, i.naturalHeight, i.loading])") == [
        [24, 16, "lazy"], [22, 22, "lazy"], [60, 20, "lazy"], [30, 30, "lazy"]]
    assert dog.locator("figcaption").all_text_contents() == ["1. beagle (162) 0.660"]
    assert page.locator("img[src='x'], script:not([id])").count() == 1  # the page's own script only
    opened.assert_clean()
