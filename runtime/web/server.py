"""The local web page of ``corel-web``: the browser runtime (``runtime/web/``), onnxruntime-web, the
bundle's schema and one bundle, served on 127.0.0.1 with the cross-origin-isolation headers that
WebAssembly threads need (COOP ``same-origin``, COEP ``require-corp``).  Standard library only.

Nothing else is served: requests outside the page's folders, or reaching out of them, get 404.
Only requests addressed to this server answer: a ``Host`` other than ``127.0.0.1``, ``localhost``
or ``[::1]`` with the server's port (or a name given with ``allow_hosts``) gets 403, which closes
DNS rebinding (a page the user visits resolving its own name to 127.0.0.1 to read their photos), as
Vite's ``server.allowedHosts`` and Jupyter's local-host check do.  Every answer carries
``X-Content-Type-Options: nosniff`` and a Content-Security-Policy allowing only the page's own
origin (plus ``wasm-unsafe-eval``, which onnxruntime-web's WebAssembly needs).
"""
from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict, dataclass, replace
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

from ..bundle.manifest import SCHEMA_FILE
from ..bundle.label_map import LabelMap
from ..bundle.limits import BEAM_CEILING, RequestLimits

WEB_DIR = Path(__file__).resolve().parent
VENDOR_DIR = WEB_DIR / "vendor"
PAGE_SUFFIXES = (".html", ".js", ".css")
SCHEMA = SCHEMA_FILE
ORT_FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm",
             "ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm", "fflate.mjs")
"""The onnxruntime-web files the page loads (copied from the npm package by ``make web``): the build with
WebGPU, and the smaller WebAssembly-only build used when the browser offers no WebGPU adapter."""

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
         ".css": "text/css", ".json": "application/json", ".wasm": "application/wasm",
         ".onnx": "application/octet-stream", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
         ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp"}


@dataclass
class PageConfig:
    """``/config.json``: where the page finds the bundle, the schema and onnxruntime-web."""

    bundle: str = "/bundle/"
    schema: str = "/schema/bundle.schema.json"
    ort: str = "/vendor/ort.min.mjs"
    ort_wasm: str = "/vendor/ort.wasm.min.mjs"
    wasm_paths: str = "/vendor/"
    threads: int = 0
    backends: str = "webgpu,wasm"
    labels: Optional[str] = None
    """``/labels.json`` when the page applies a run-time label map (``corel-web --labels``)."""
    max_beam_width: int = 0
    """The widest beam the page's ``?beam=`` option may ask for (0: the manifest's own width only)."""
    max_image_bytes: int = 0
    """Photos larger than this are refused, each with its own error (0: no limit)."""


CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' blob: data:; "
       "connect-src 'self' blob: data:; worker-src 'self' blob:; style-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
"""The page's own origin only; ``wasm-unsafe-eval`` compiles onnxruntime-web's WebAssembly, ``blob:``
shows the dropped photos and lets onnxruntime-web start its threads' workers."""
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def allowed_hosts(port: int, extra: tuple[str, ...] = ()) -> tuple[frozenset[str], frozenset[str]]:
    """``Host`` values this server answers: the loopback names with its port (exactly), and the extra
    names (a proxy's host name, answered with or without a port)."""
    names = set()
    for name in extra:
        name = name.strip().lower()
        if not name:
            raise ValueError("--allow-host: give a host name, for example photos.example.org")
        names.add(name)
    return frozenset(f"{name}:{port}" for name in LOOPBACK_NAMES), frozenset(names)


def check_vendor(vendor: Path = VENDOR_DIR) -> None:
    """Refuse to start without onnxruntime-web, with the command that installs it."""
    missing = [f for f in ORT_FILES if not (vendor / f).is_file()]
    if missing:
        raise ValueError(f"{vendor}: onnxruntime-web is missing ({', '.join(missing)}); run `make web` "
                         "(npm ci in runtime/web, then copies its dist files here)")


class _Handler(SimpleHTTPRequestHandler):
    routes: dict[str, Path] = {}
    config: bytes = b"{}"
    labels: bytes = b""
    hosts: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def _host_allowed(self) -> bool:
        """Whether the request names this server in ``Host`` (403 and one log line otherwise)."""
        host = (self.headers.get("Host") or "").strip().lower()
        name, sep, port = host.rpartition(":")
        if host in self.hosts or host in self.names or (sep and port.isdigit() and name in self.names):
            return True
        path = urlsplit(self.path).path[:120]
        print(f"corel-web: refused {self.command} {path} for Host {host or '(none)'!r}: not this server's address "
              "(--allow-host NAME answers a proxy's name)", file=sys.stderr, flush=True)
        self.send_error(HTTPStatus.FORBIDDEN, "this server answers only requests addressed to it")
        return False

    def _resolve(self) -> Path | None:
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            return WEB_DIR / "index.html"
        if path == "/schema/bundle.schema.json":
            return SCHEMA
        for prefix, root in self.routes.items():
            if path.startswith(prefix):
                target = (root / path[len(prefix):]).resolve()
                if target.is_file() and (target == root or root in target.parents):
                    if root == WEB_DIR and (target.parent != WEB_DIR or target.suffix not in PAGE_SUFFIXES):
                        return None  # the page's own files only, not the server's source or node_modules
                    return target
        return None

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._host_allowed():
            return None
        if urlsplit(self.path).path == "/config.json":
            return self._send(self.config, "application/json")
        if urlsplit(self.path).path == "/labels.json" and self.labels:
            return self._send(self.labels, "application/json")
        target = self._resolve()
        if target is None:
            return self.send_error(HTTPStatus.NOT_FOUND)
        self._send(target.read_bytes(), TYPES.get(target.suffix.lower(), "application/octet-stream"))

    def do_HEAD(self) -> None:  # noqa: N802
        if self._host_allowed():
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class WebServer:
    """The page for one bundle on 127.0.0.1:``port`` (0: a free port); ``photos`` is also served under
    ``/photos/`` for scripted runs (tests, ``corel-bench browser``).  ``allow_hosts``: names besides
    the loopback ones the server answers to (a proxy's).  ``limits``: the caps the page applies to
    its URL options and photos (default: the bundle's, from its manifest).  Use as a context manager."""

    def __init__(self, bundle: str | Path, port: int = 0, photos: str | Path | None = None,
                 config: PageConfig | None = None, vendor: Path = VENDOR_DIR,
                 labels: LabelMap | None = None, allow_hosts: tuple[str, ...] = (),
                 limits: RequestLimits | None = None) -> None:
        from ..bundle.manifest import load_manifest

        check_vendor(vendor)
        config = config or PageConfig()
        if labels is not None:
            config = replace(config, labels="/labels.json")
        if limits is None:
            try:
                limits = RequestLimits.for_manifest(load_manifest(bundle, verify=False))
            except ValueError:   # the page refuses a broken bundle itself, with its own message
                limits = RequestLimits(BEAM_CEILING)
        self.limits = limits
        config = replace(config, max_beam_width=self.limits.max_beam_width,
                         max_image_bytes=self.limits.max_image_bytes)
        allowed_hosts(1, allow_hosts)   # refuse an empty name before binding
        routes = {"/web/": WEB_DIR, "/vendor/": vendor.resolve(), "/bundle/": Path(bundle).resolve()}
        if photos is not None:
            routes["/photos/"] = Path(photos).resolve()
        handler = type("Handler", (_Handler,), {"routes": routes, "config": json.dumps(asdict(config)).encode(),
                                                "labels": json.dumps(labels.to_dict()).encode() if labels else b""})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        handler.hosts, handler.names = allowed_hosts(self.httpd.server_address[1], allow_hosts)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "WebServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "WebServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
