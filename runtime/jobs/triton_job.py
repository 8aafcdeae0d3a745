"""``corel-infer --server``: photos annotated by a ``corel-serve`` (Triton) server, as records equal
to in-process ones, with a bounded number of requests in flight."""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Collection, Iterator, Optional, Sequence
from urllib.parse import urlparse

import numpy as np

from .records import InferOptions, Produced, error_record, ok_record
from ..photos import read_photo
from ..preprocessing import display_path
from ..bundle.scoring_config import check_overrides
from ..serve.tensors import ATTENTION, BEAM_WIDTH, ERROR, IMAGE, LABELS, SCORES, THRESHOLD, TOP_K


def _import(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise ValueError("--server needs the Triton client: pip install 'corel-annotate[serve]'") from None
    return client, InferenceServerException


def _endpoint(url: str) -> tuple[str, str]:
    """``http://HOST:PORT`` / ``grpc://HOST:PORT`` (or a bare ``HOST:PORT``, HTTP) to protocol and address."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "grpc") or not parsed.hostname:
        raise ValueError(f"--server {url}: give http://HOST:PORT or grpc://HOST:PORT")
    port = parsed.port or (8001 if parsed.scheme == "grpc" else 8000)
    return parsed.scheme, f"{parsed.hostname}:{port}"


def _server_reason(path: Path, message: str) -> str:
    """The server names the photo ``image``; the record names the file, as local inference does."""
    message = message.splitlines()[0] if message else "no reason given"
    if message.startswith("image:"):
        return display_path(path) + message[len("image"):].replace("image file 'image')", f"image file {display_path(path)!r})")
    return f"{display_path(path)}: {message}"


class TritonJob:
    """A connection to one model on a corel-serve server; what kind of bundle it serves (from the
    inputs and outputs the model declares) decides which options apply, as with a local bundle."""

    def __init__(self, url: str, protocol: str, client, errors, model: str, inputs: set[str],
                 outputs: set[str], in_flight: int) -> None:
        self.url, self.protocol, self.client, self.errors = url, protocol, client, errors
        self.model, self.inputs, self.outputs, self.in_flight = model, inputs, outputs, in_flight
        self._module, _ = _import(protocol)
        if protocol == "http":   # a lost connection is reported once, as a ValueError, not per greenlet
            import gevent

            gevent.get_hub().exception_stream = None

    @classmethod
    def connect(cls, url: str, model: str, in_flight: int = 4) -> "TritonJob":
        """Check the server is ready and serves ``model``; ValueError with one line otherwise."""
        if in_flight < 1:
            raise ValueError(f"--in-flight {in_flight}: at least 1")
        protocol, address = _endpoint(url)
        module, errors = _import(protocol)
        kwargs = {"concurrency": in_flight} if protocol == "http" else {}
        try:
            client = module.InferenceServerClient(address, **kwargs)
            if not client.is_server_ready():
                raise ValueError(f"--server {url}: the server is not ready yet")
            if not client.is_model_ready(model):
                names = sorted(m["name"] if isinstance(m, dict) else m.name for m in _index(client, protocol))
                raise ValueError(f"--server {url}: no model {model!r} is ready there (models: "
                                 f"{', '.join(names) or 'none'})")
            meta = client.get_model_metadata(model)
        except errors as exc:
            raise ValueError(f"--server {url}: {exc.message() or exc}") from None
        except (OSError, ConnectionError) as exc:
            raise ValueError(f"--server {url}: cannot connect ({exc})") from None
        if protocol == "http":
            inputs, outputs = {t["name"] for t in meta["inputs"]}, {t["name"] for t in meta["outputs"]}
        else:
            inputs, outputs = {t.name for t in meta.inputs}, {t.name for t in meta.outputs}
        if IMAGE.name not in inputs or LABELS.name not in outputs:
            raise ValueError(f"--server {url}: model {model!r} is not a corel-serve bundle (its inputs are "
                             f"{', '.join(sorted(inputs))})")
        return cls(url, protocol, client, errors, model, inputs, outputs, in_flight)

    @property
    def kind(self) -> str:
        return "sequence" if BEAM_WIDTH.name in self.inputs else "scores"

    @property
    def method(self) -> str:
        return self.model

    @property
    def has_attention(self) -> bool:
        return ATTENTION.name in self.outputs

    @property
    def engine(self) -> str:
        return f"{self.model} on {self.url}"

    @property
    def bundle_id(self) -> None:
        """The server does not hand out its manifest: tags written from it are not skipped by bundle."""
        return None

    def decoding_config(self, beam_width: Optional[int] = None) -> None:
        """Beam widths are checked against the bundle's rules on the server; here only the sign."""
        if beam_width is not None and beam_width < 1:
            raise ValueError(f"beam width {beam_width}: at least 1")

    def check_overrides(self, beam_width: Optional[int] = None, top_k: Optional[int] = None,
                        threshold: Optional[float] = None) -> None:
        """What can be refused without the manifest (the server checks the rest, per request)."""
        if self.kind == "sequence":
            self.decoding_config(beam_width)
        else:
            check_overrides(top_k, threshold)

    def _request(self, photos: list[bytes], options: InferOptions):
        m = self._module
        rows = len(photos)
        image = m.InferInput(IMAGE.name, [rows, 1], "BYTES")
        image.set_data_from_numpy(np.array([[data] for data in photos], dtype=object).reshape(rows, 1))
        inputs = [image]
        values = [(BEAM_WIDTH, options.beam_width, "INT32", np.int32)] if self.kind == "sequence" else \
            [(TOP_K, options.top_k, "INT32", np.int32), (THRESHOLD, options.threshold, "FP32", np.float32)]
        for decl, value, datatype, dtype in values:
            if value is not None:
                tensor = m.InferInput(decl.name, [rows, 1], datatype)
                tensor.set_data_from_numpy(np.full((rows, 1), value, dtype=dtype))
                inputs.append(tensor)
        names = [LABELS.name, SCORES.name, ERROR.name] + ([ATTENTION.name] if options.keep_alphas else [])
        return inputs, [m.InferRequestedOutput(n) for n in names]

    def _submit(self, photos: list[bytes], options: InferOptions) -> Future:
        inputs, outputs = self._request(photos, options)
        future: Future = Future()
        if self.protocol == "http":
            pending = self.client.async_infer(self.model, inputs, outputs=outputs)
            future.set_result(pending)   # resolved by get_result() when collected
        else:
            def done(result, error):
                future.set_exception(error) if error is not None else future.set_result(result)

            self.client.async_infer(self.model, inputs, callback=done, outputs=outputs)
        return future

    def _collect(self, paths: list[Path], future: Future) -> list[Produced]:
        try:
            result = future.result()
            if self.protocol == "http":
                result = result.get_result()
        except self.errors as exc:
            status = str(exc.status() or "")
            if status in ("StatusCode.UNAVAILABLE",) or "onnection" in (exc.message() or ""):
                raise ValueError(f"--server {self.url}: lost the server ({exc.message()}); the records so "
                                 "far are kept, rerun with --resume") from None
            return [Produced(p, error_record(p, _server_reason(p, f"server refused it: {exc.message()}")))
                    for p in paths]
        except Exception as exc:  # noqa: BLE001 - the HTTP client's connection errors are not OSErrors
            raise ValueError(f"--server {self.url}: lost the server ({type(exc).__name__}: {exc}); the records "
                             "so far are kept, rerun with --resume") from None
        errors, labels, scores = (result.as_numpy(n) for n in (ERROR.name, LABELS.name, SCORES.name))
        maps = result.as_numpy(ATTENTION.name) if ATTENTION.name in self.outputs else None
        out = []
        for row, path in enumerate(paths):
            error = errors.reshape(-1)[row]
            error = error.decode() if isinstance(error, bytes) else str(error)
            if error:
                out.append(Produced(path, error_record(path, _server_reason(path, error))))
                continue
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in labels[row]]
            names = [name for name in names if name]
            alphas = [maps[row][j] for j in range(len(names))] if maps is not None else None
            out.append(Produced(path, ok_record(path, names, [float(v) for v in scores[row][:len(names)]]), alphas))
        return out

    def records(self, files: list[Path], options: InferOptions, uris: Sequence[str] = (),
                done: Collection[str] = frozenset()) -> Iterator[Produced]:
        """Records in input order: ``options.batch_size`` photos per request (each row answered on its
        own), at most ``in_flight`` requests outstanding; a file that cannot be read here is an error
        record without a request."""
        if uris:
            raise ValueError(f"{uris[0]}: a URI input needs --ray (Ray reads it); give a local path otherwise")
        window: deque[tuple[list[Path], Optional[Future], list[Produced]]] = deque()
        size = max(1, options.batch_size)
        for start in range(0, len(files), size):
            paths, photos, unread = [], [], []
            for path in files[start:start + size]:
                data = read_photo(path)
                if isinstance(data, str):
                    unread.append(Produced(path, error_record(path, data)))
                else:
                    photos.append(data)
                    paths.append(path)
            window.append((paths, self._submit(photos, options) if photos else None, unread))
            while len(window) >= self.in_flight:
                yield from self._next(window)
        while window:
            yield from self._next(window)

    def _next(self, window: deque) -> list[Produced]:
        paths, future, unread = window.popleft()
        return unread + (self._collect(paths, future) if future is not None else [])

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a client that lost its server
            pass


def _index(client, protocol: str) -> list:
    index = client.get_model_repository_index()
    return index if protocol == "http" else list(index.models)
