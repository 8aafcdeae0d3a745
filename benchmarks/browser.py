"""``corel-bench browser``: the browser runtime in Chromium (WebAssembly, 1 and 2 threads) beside the native
runtime (onnxruntime CPU at the same thread counts), and its label parity with the Python runtime.

Per bundle and thread count: the page's ready time (navigation to bundle verified and sessions created),
the encoder at batch 1 on one photo (warm-up runs, then one timing per run), and photo-file-to-labels
per photo (fetch, decode, resize, encoder, decoding).  Parity: for every photo of the split, whether
the browser's label list equals the Python runtime's (greedy and beam 3 for recurrent bundles, the
manifest's thresholds for score bundles), and the largest score difference where they are equal.
"""
from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.runtime.bundle.manifest import load_manifest
from corel_annotate.runtime.web.server import WebServer

PARITY_BEAMS = (1, 3)


@dataclass
class LatencyRow:
    """One bundle on one engine at one thread count (milliseconds; medians with p10/p90)."""

    bundle: str
    engine: str
    threads: int
    encoder_ms: float
    encoder_p10: float
    encoder_p90: float
    end_to_end_ms: float
    ready_ms: float | None = None


@dataclass
class ParityRow:
    """``max_score_diff`` over photos with equal label lists; ``full_scale`` the same over those decoded at
    full scale (``draft`` bundles decode big JPEGs at a DCT scale in Pillow, which browsers cannot do)."""

    bundle: str
    decoding: str
    images: int
    equal_label_sets: float
    max_score_diff: float
    full_scale_images: int
    max_score_diff_full_scale: float
    scores_within_1e3: float = 0.0
    """Share of all photos whose label lists are equal and every score is within 1e-3."""


def draft_scaled(path: Path, preprocess) -> bool:
    """Whether Pillow decodes this photo at a reduced DCT scale under the bundle's draft rule."""
    from PIL import Image

    if preprocess.decode != "draft":
        return False
    with Image.open(path) as img:
        return img.format == "JPEG" and min(img.width, img.height) // preprocess.image_size >= 2


@dataclass
class BrowserResult:
    command: str
    chromium: str
    latency: list[LatencyRow] = field(default_factory=list)
    parity: list[ParityRow] = field(default_factory=list)
    encoder_gflops: dict[str, float] = field(default_factory=dict)
    """Per bundle: the encoder's GFLOP per photo (Conv, MatMul, Gemm), for the GFLOP/s columns."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def find_chromium() -> str:
    """Debian's chromium (Playwright's own browser download cannot work on machines without internet)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise ValueError("chromium is not installed: apt-get install -y chromium (or `make browser`)")
    return path


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def open_page(browser, server: WebServer, query: str = "?backend=wasm", **page_options):
    """A new tab on the served page, returned once it has loaded the bundle or refused it."""
    page = browser.new_page(**page_options)
    page.goto(server.url + query)
    page.wait_for_function("() => document.getElementById('status').className !== 'busy'", timeout=180_000)
    return page


def _page(browser, server: WebServer, threads: int):
    page = open_page(browser, server, f"?threads={threads}&backend=wasm")
    if page.get_attribute("#status", "class") != "ready":
        raise ValueError(f"the page did not load the bundle: {page.inner_text('#status')}")
    return page


def _native(bundle: Path, photos: list[Path], threads: int, repeats: int) -> tuple[list[float], list[float]]:
    annotator = Annotator.load(bundle, device="cpu", threads=threads)
    x = annotator.preprocess([photos[0]])
    for _ in range(5):
        annotator.encode(x)
    encoder = []
    for _ in range(repeats):
        t = time.perf_counter()
        annotator.encode(x)
        encoder.append((time.perf_counter() - t) * 1000)
    e2e = []
    for p in photos:
        t = time.perf_counter()
        annotator.annotate([p], batch_size=1)
        e2e.append((time.perf_counter() - t) * 1000)
    return encoder, e2e


def parity(page, bundle: Path, photos: list[Path], root: Path, progress: Callable[[str], None]) -> list[ParityRow]:
    """Label-list agreement of the page with the Python runtime on ``photos`` (served from ``root``)."""
    annotator = Annotator.load(bundle, device="cpu")
    drafted = {p for p in photos if draft_scaled(p, annotator.preprocess_config)}
    rows = []
    for beam in (PARITY_BEAMS if annotator.kind == "sequence" else (None,)):
        options = {"beam_width": beam} if beam else {}
        same, worst, worst_full, close = 0, 0.0, 0.0, 0
        for p in photos:
            want = annotator.annotate([p], **options)[0]
            got = page.evaluate("([u, b]) => window.corel.annotateUrl(u, {beamWidth: b})",
                                [f"/photos/{p.relative_to(root).as_posix()}", beam])
            if got["labels"] == list(want.labels):
                same += 1
                if want.scores:
                    diff = float(np.max(np.abs(np.asarray(got["scores"]) - np.asarray(want.scores))))
                    worst = max(worst, diff)
                    worst_full = worst_full if p in drafted else max(worst_full, diff)
                    close += diff <= 1e-3
        name = "thresholds" if beam is None else ("greedy" if beam == 1 else f"beam {beam}")
        rows.append(ParityRow(bundle.name, name, len(photos), same / len(photos), worst, len(photos) - len(drafted),
                              worst_full, close / len(photos)))
        progress(f"  parity {bundle.name} {name}: {same}/{len(photos)} label lists equal, max score diff {worst:.2e} "
                 f"({worst_full:.2e} on the {len(photos) - len(drafted)} photos decoded at full scale)")
    return rows


def screenshot(browser, bundle: Path, photos: list[Path], root: Path, out: Path) -> None:
    """The page after annotating ``photos`` through its file input, the first label of the first photo
    clicked (its attention heat map, for attention bundles)."""
    with WebServer(bundle, photos=root) as server:
        page = open_page(browser, server, viewport={"width": 1300, "height": 900})
        page.set_input_files("#files", [str(p) for p in photos])
        page.wait_for_function(f"() => document.querySelectorAll('.card .labels, .card .error').length >= {len(photos)}",
                               timeout=180_000)
        first = page.query_selector(".card .labels li.clickable")
        if first:
            first.click()
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        page.close()


def run_browser(bundles: list[Path], data: Path, split: str, threads: list[int], repeats: int, timing_photos: int,
                parity_limit: int | None, command: str, log: Callable[[str], None],
                screenshot_to: Path | None = None) -> BrowserResult:
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    samples = CorelDataset(data).read(split).samples
    if not samples:
        raise ValueError(f"{data}/{split}.json: no photos")
    photos = [s.path for s in samples]
    root = Path(data) / "images"
    if not all(root in p.parents for p in photos):
        raise ValueError(f"{data}: the split's photos must lie under {root} to be served to the page")
    timed = photos[:timing_photos]
    for b in bundles:
        load_manifest(b)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        result = BrowserResult(command, f"{browser.browser_type.name} {browser.version}")
        try:
            for bundle in bundles:
                from .flops import graph_flops

                result.encoder_gflops[bundle.name] = graph_flops(bundle / load_manifest(bundle).graphs["encoder"].file) / 1e9
                with WebServer(bundle, photos=root) as server:
                    for n in threads:
                        page = _page(browser, server, n)
                        ready = float(page.evaluate("window.corel.ready.then(r => r.readyMs)"))
                        enc = page.evaluate("([u, r]) => window.corel.timeEncoder(u, r)",
                                            [f"/photos/{timed[0].relative_to(root).as_posix()}", repeats])
                        e2e = [page.evaluate("u => window.corel.annotateUrl(u)", f"/photos/{p.relative_to(root).as_posix()}")["ms"]
                               for p in timed]
                        row = LatencyRow(bundle.name, "chromium wasm", n, statistics.median(enc), _pct(enc, 10), _pct(enc, 90),
                                         statistics.median(e2e), ready)
                        result.latency.append(row)
                        log(f"  {bundle.name} chromium wasm {n} thread(s): ready {ready:.0f} ms, encoder "
                            f"{row.encoder_ms:.2f} ms, photo to labels {row.end_to_end_ms:.2f} ms")
                        if n == max(threads):
                            result.parity.extend(parity(page, bundle, photos[:parity_limit], root, log))
                        page.close()
                        enc, e2e = _native(bundle, timed, n, repeats)
                        row = LatencyRow(bundle.name, "native onnxruntime-cpu", n, statistics.median(enc), _pct(enc, 10),
                                         _pct(enc, 90), statistics.median(e2e))
                        result.latency.append(row)
                        log(f"  {bundle.name} native {n} thread(s): encoder {row.encoder_ms:.2f} ms, photo to labels "
                            f"{row.end_to_end_ms:.2f} ms")
            if screenshot_to is not None:
                screenshot(browser, bundles[0], photos[:8], root, screenshot_to)
                log(f"wrote {screenshot_to}")
        finally:
            browser.close()
    return result


def markdown(result: BrowserResult) -> str:
    native = {(r.bundle, r.threads): r for r in result.latency if r.engine.startswith("native")}
    lines = [f"Command: `{result.command}`", "", f"Browser: {result.chromium}, onnxruntime-web WebAssembly backend.", "",
             "| bundle | engine | threads | page ready ms | encoder ms (p10–p90) | encoder GFLOP/s | encoder / native | "
             "photo to labels ms | photo / native |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result.latency:
        base = native.get((r.bundle, r.threads))
        ratio = f"{r.encoder_ms / base.encoder_ms:.2f}×" if base and base is not r else "–"
        e2e_ratio = f"{r.end_to_end_ms / base.end_to_end_ms:.2f}×" if base and base is not r else "–"
        ready = f"{r.ready_ms:.0f}" if r.ready_ms is not None else "–"
        gflops = result.encoder_gflops.get(r.bundle)
        rate = f"{gflops / r.encoder_ms * 1000:.1f}" if gflops else "–"
        lines.append(f"| {r.bundle} | {r.engine} | {r.threads} | {ready} | {r.encoder_ms:.2f} ({r.encoder_p10:.2f}–"
                     f"{r.encoder_p90:.2f}) | {rate} | {ratio} | {r.end_to_end_ms:.2f} | {e2e_ratio} |")
    if result.parity:
        lines += ["", "| bundle | decoding | photos | equal label lists | max score diff | photos at full scale | "
                  "max score diff there | scores within 1e-3 |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {p.bundle} | {p.decoding} | {p.images} | {p.equal_label_sets:.2%} | {p.max_score_diff:.1e} | "
                  f"{p.full_scale_images} | {p.max_score_diff_full_scale:.1e} | {p.scores_within_1e3:.2%} |"
                  for p in result.parity]
    return "\n".join(lines) + "\n"
