"""``corel-web``: annotate photos in the browser with a bundle, on a page served from this machine."""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import List, Optional

import typer
from . import console, fail

web_app = typer.Typer(add_completion=False, help=__doc__)


@web_app.command()
def main(
    model: Path = typer.Option(..., "--model", "-m", help="Bundle directory written by corel-export."),
    port: int = typer.Option(8080, help="Port on 127.0.0.1 (0: any free port)."),
    threads: int = typer.Option(0, help="WebAssembly threads in the page (0: up to 4, as the browser's cores allow)."),
    backend: str = typer.Option("webgpu,wasm", help="onnxruntime-web backends to try in order (webgpu where the "
                                "browser has it, then wasm)."),
    photos: Optional[Path] = typer.Option(None, help="Also serve this folder's images under /photos/ (for scripts)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="A label map (TOML or JSON; docs/tags.md) the page "
                                          "applies: display names, merges, exclusions, per-label thresholds."),
    allow_host: List[str] = typer.Option([], "--allow-host", help="Also answer requests whose Host is NAME (a "
                                         "reverse proxy's name); repeat for several. Others than 127.0.0.1, "
                                         "localhost and [::1] with this port get 403."),
    max_beam_width: Optional[int] = typer.Option(None, help="The widest beam the page's ?beam= option may ask "
                                                 "for (default: what fits the decoding memory bound, from the "
                                                 "manifest's shapes)."),
) -> None:
    """Serve a local page that verifies the bundle (schema, sha256 of every graph) and annotates photos you
    drop on it, in the browser, with onnxruntime-web: labels and scores, per-label attention heat maps for
    attention bundles, the latency and backend of each photo; the tags shown download as CSV or as XMP
    sidecars in a zip. Binds 127.0.0.1 only, answers only requests addressed to it (Host), and
    nothing is uploaded. Page options in the URL: ?beam=K (at most --max-beam-width), ?threads=N,
    ?backend=wasm.

    Exit codes: 0 stopped (Ctrl-C or SIGTERM), 2 bad bundle, missing onnxruntime-web or port in use.
    """
    from ..bundle.manifest import load_manifest
    from ..bundle.label_map import LabelMap
    from ..bundle.limits import RequestLimits
    from ..web.server import PageConfig, WebServer

    try:
        manifest = load_manifest(model)
        label_map = LabelMap.read(labels).bind(manifest.vocabulary, manifest.kind) if labels is not None else None
        if max_beam_width is not None and max_beam_width < 1:
            raise ValueError(f"--max-beam-width {max_beam_width}: at least 1")
        limits = RequestLimits.for_manifest(manifest, max_beam_width)
        server = WebServer(model, port, photos, PageConfig(threads=threads, backends=backend), labels=label_map,
                           allow_hosts=tuple(allow_host), limits=limits)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    def stop(_signum, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a service manager's stop ends it like Ctrl-C
    with server:
        console.print(f"serving {model} ({manifest.method}, {manifest.kind}, {manifest.precision}) at {server.url} "
                      "(Ctrl-C stops)", highlight=False)
        if manifest.is_sequence:
            console.print(f"page option ?beam=K: {limits.describe().split(';')[0]}", highlight=False)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopped")


if __name__ == "__main__":
    web_app()
