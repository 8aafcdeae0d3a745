"""The browser runtime as a command that writes records, so that ``corel-eval conformance`` can judge it
like any other: ``python -m corel_annotate.benchmarks.browser_records BUNDLE PHOTOS OUT``.

It serves the bundle and the photo folder with ``corel-web``'s server on 127.0.0.1, opens the page in
Debian's Chromium (WASM backend), annotates every photo through the page's own code (``annotateUrl``:
the page's decoding, preprocessing, engine and decoding rules) and writes one JSON record per photo."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import quote

from corel_annotate.runtime.photos import collect_paths
from corel_annotate.runtime.web.server import WebServer

from .browser import find_chromium, open_page


def write_records(bundle: Path, photos: Path, out: Path, threads: int = 1) -> int:
    """Annotate ``photos`` in Chromium and write ``out``; returns how many photos failed."""
    from playwright.sync_api import sync_playwright

    paths = collect_paths([photos])
    server = WebServer(bundle, photos=photos).start()
    failed = 0
    try:
        with sync_playwright() as pw, out.open("w", encoding="utf-8") as fh:
            browser = pw.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
            page = open_page(browser, server, f"?threads={threads}&backend=wasm")
            if page.get_attribute("#status", "class") != "ready":
                raise ValueError(f"{bundle}: the page refused the bundle ({page.inner_text('#status')})")
            for path in paths:
                url = "/photos/" + quote(path.relative_to(photos).as_posix())
                result = page.evaluate("""async (u) => {
                    try { const r = await window.corel.annotateUrl(u); return { labels: r.labels, scores: r.scores }; }
                    catch (e) { return { error: String(e && e.message || e) }; } }""", url)
                if "error" in result:
                    failed += 1
                    record = {"image": str(path), "status": "error", "error": result["error"].splitlines()[0]}
                else:
                    record = {"image": str(path), "status": "ok", "labels": result["labels"],
                              "scores": [round(float(s), 6) for s in result["scores"]]}
                fh.write(json.dumps(record) + "\n")
            browser.close()
    finally:
        server.stop()
    return failed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m corel_annotate.benchmarks.browser_records BUNDLE PHOTOS OUT", file=sys.stderr)
        return 2
    try:
        failed = write_records(Path(args[0]), Path(args[1]), Path(args[2]))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
