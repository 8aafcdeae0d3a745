"""``corel-serve``'s server: bundles bound into the Triton Inference Server that ships in the
``nvidia-pytriton`` wheel, with dynamic batching, readiness only once every bundle is verified and
warm, and a SIGTERM that drains the requests in flight."""
from __future__ import annotations

import errno
import logging
import os
import re
import signal
import socket
import sysconfig
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..annotator import Annotator
from ..bundle.label_map import LabelMap
from ..bundle.limits import DECODE_MEMORY, MAX_IMAGE_BYTES, MAX_PHOTOS, MAX_REQUEST_BYTES, RequestLimits
from ..preprocessing import MAX_PIXELS
from .tensors import TensorDecl
from .triton_model import BundleModel

_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class ServeConfig:
    """Where the server listens and how it batches."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 32
    max_queue_delay_ms: float = 2.0
    instances: int = 1
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_PIXELS
    drain_timeout_s: int = 30
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0
    log_file: Optional[Path] = None
    labels: Optional[Path] = None
    """A run-time label map every served bundle applies (``--labels``)."""
    max_beam_width: Optional[int] = None
    """The widest beam a request may ask for (None: per bundle, what fits ``decode_memory``)."""
    decode_memory: int = DECODE_MEMORY
    max_photos: int = MAX_PHOTOS
    max_request_bytes: int = MAX_REQUEST_BYTES

    def exposure_warning(self) -> Optional[str]:
        """The start-up line for an address other than loopback: no authentication, put a proxy in front."""
        if self.is_loopback:
            return None
        return (f"warning: --host {self.host} is reachable from other machines and this endpoint has no "
                "authentication: anyone who reaches it can send photos; put it behind an authenticating proxy "
                "(docs/serving.md, 'Exposing the server')")

    def limits(self, manifest) -> RequestLimits:
        """The request limits for one served bundle (ValueError when a setting is out of range).  Triton
        itself refuses a request of more rows than ``max_batch``, so the photo cap is at most that."""
        return RequestLimits.for_manifest(manifest, self.max_beam_width, self.decode_memory, self.max_image_bytes,
                                          self.max_request_bytes, min(self.max_photos, self.max_batch))

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can reach the server (127.0.0.0/8, ::1, localhost)."""
        import ipaddress

        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"--max-batch {self.max_batch}: at least 1")
        if self.max_queue_delay_ms < 0:
            raise ValueError(f"--max-queue-delay-ms {self.max_queue_delay_ms}: not negative")
        if self.instances < 1:
            raise ValueError(f"--instances {self.instances}: at least 1")
        ports = [self.http_port, self.grpc_port, self.metrics_port]
        if len(set(ports)) != 3 or min(ports) < 1 or max(ports) > 65535:
            raise ValueError(f"ports {ports}: three different ports between 1 and 65535")
        if self.max_beam_width is not None and self.max_beam_width < 1:
            raise ValueError(f"--max-beam-width {self.max_beam_width}: at least 1")
        RequestLimits(self.max_beam_width or 1, self.decode_memory, 0, self.max_image_bytes, self.max_request_bytes,
                      self.max_photos)


@dataclass
class ServedModel:
    """One bundle on the server: its name there and its instances (one Annotator each)."""

    name: str
    bundle: Path
    instances: list[BundleModel] = field(default_factory=list)


def model_name(spec: str, taken: set[str]) -> tuple[str, Path]:
    """``NAME=BUNDLE`` or ``BUNDLE`` (named from its manifest: the method, and the precision when
    not fp32) to the name the model gets and its bundle; two bundles with one name are refused."""
    from ..bundle.manifest import load_manifest

    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    bundle = Path(path)
    if not name:
        manifest = load_manifest(bundle, verify=False)
        name = manifest.method + ("" if manifest.precision == "fp32" else f"-{manifest.precision}")
    name = _NAME.sub("-", name).strip("-.") or "model"
    if name in taken:
        raise ValueError(f"{bundle}: a second model named {name!r}; name it with --model NAME={bundle}")
    return name, bundle


def check_ports_free(config: ServeConfig) -> None:
    """Fail with one line when a port is taken (a second corel-serve on the same ports)."""
    for label, port in (("HTTP", config.http_port), ("gRPC", config.grpc_port), ("metrics", config.metrics_port)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a port in TIME_WAIT is free
            try:
                probe.bind((config.host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise ValueError(f"--host {config.host}: cannot listen on {config.host}:{port} ({exc.strerror}); "
                                     "give an address of this machine") from None
                raise ValueError(f"{config.host}:{port} ({label}) is already in use ({exc.strerror}): another "
                                 "server runs there; stop it or choose other ports") from None


def _python_backend_env() -> None:
    """The wheel's Python-backend stub links the system ``libpython3.11.so``; under another build of
    the same Python (pyenv, conda) its standard library then fails to load (``'_thread.RLock' object
    has no attribute '_recursion_count'``).  The running interpreter's own library directory first
    on ``LD_LIBRARY_PATH`` makes the stub load the matching libpython.  The server inherits this."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED") and Path(libdir).is_dir():
        current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *current])


def load_models(specs: list[str], config: ServeConfig, log: Callable[[str], None]) -> list[ServedModel]:
    """Verify every bundle (sha256 of each file), open ``instances`` Annotators per bundle and warm
    each one up; any bad bundle raises ValueError before anything listens."""
    served: list[ServedModel] = []
    taken: set[str] = set()
    threads = config.threads or max(1, (os.cpu_count() or 1) // config.instances)
    labels = LabelMap.read(config.labels) if config.labels is not None else None
    for spec in specs:
        name, bundle = model_name(spec, taken)
        taken.add(name)
        model = ServedModel(name, bundle)
        for _ in range(config.instances):
            annotator = Annotator.load(bundle, device=config.device, threads=threads, precision=config.precision,
                                       pin_threads=config.instances == 1, labels=labels)
            limits = config.limits(annotator.manifest)
            instance = BundleModel(annotator, name, limits, config.max_pixels,
                                   decode_threads=max(1, (os.cpu_count() or 1) // config.instances))
            instance.warm_up()
            model.instances.append(instance)
        log(f"{name}: {bundle} ({annotator.method}, {annotator.engine}, {config.instances} instances), warm")
        log(f"{name}: {limits.describe()}")
        if annotator.engine_note:
            log(f"{name}: {annotator.engine_note}")
        served.append(model)
    return served


def _tensors(decls: list[TensorDecl]):
    from pytriton.model_config import Tensor

    return [Tensor(name=d.name, dtype=d.dtype, shape=d.shape, optional=d.optional) for d in decls]


def pending_requests(config: ServeConfig) -> int:
    """Requests Triton has received and not yet handed to a model (its ``nv_inference_pending_request_count``)."""
    host = "127.0.0.1" if config.host in ("0.0.0.0", "") else ("::1" if config.host == "::" else config.host)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{config.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return 0
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("nv_inference_pending_request_count{"))


def _drain(models: list[ServedModel], config: ServeConfig) -> int:
    """Wait (up to ``drain_timeout_s``) until no request is queued in Triton or running in a model,
    three polls in a row; what is still unanswered then (0: drained)."""
    deadline = time.monotonic() + config.drain_timeout_s
    quiet = 0
    while True:
        left = pending_requests(config) + sum(i.busy for m in models for i in m.instances)
        quiet = quiet + 1 if left == 0 else 0
        if quiet >= 3 or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def serve(models: list[ServedModel], config: ServeConfig, log: Callable[[str], None],
          stop: Optional[threading.Event] = None) -> None:
    """Bind the models, start Triton, and block until SIGTERM/SIGINT (or ``stop``); then stop
    taking requests, let those in flight finish (up to ``drain_timeout_s``) and shut down."""
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig
        from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy
    except ImportError:
        raise ValueError("corel-serve needs Triton: pip install 'corel-annotate[serve]'") from None
    _python_backend_env()
    for noisy in ("pytriton", "sh"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = stop or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    log_file = config.log_file or Path(tempfile.mkdtemp(prefix="corel-serve-")) / "tritonserver.log"
    triton_config = TritonConfig(http_address=config.host, http_port=config.http_port, grpc_address=config.host,
                                 grpc_port=config.grpc_port, metrics_address=config.host,
                                 metrics_port=config.metrics_port, exit_timeout_secs=config.drain_timeout_s,
                                 allow_gpu_metrics=False, log_verbose=0, strict_readiness=True,
                                 log_file=log_file)
    # The models go into the repository before the server starts, so /v2/health/ready is false
    # until they are loaded (with models loaded afterwards it is briefly true with no model).
    triton = Triton(config=triton_config,
                    triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True))
    try:
        for model in models:
            first = model.instances[0]
            batcher = DynamicBatcher(max_queue_delay_microseconds=int(config.max_queue_delay_ms * 1000))
            triton.bind(model_name=model.name, infer_func=list(model.instances), inputs=_tensors(first.inputs),
                        outputs=_tensors(first.outputs),
                        config=ModelConfig(max_batch_size=config.max_batch, batcher=batcher))
        triton.run()
        log(f"ready: http://{config.host}:{config.http_port} grpc://{config.host}:{config.grpc_port} "
            f"metrics http://{config.host}:{config.metrics_port}/metrics; models: "
            + ", ".join(m.name for m in models))
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise ValueError(f"the Triton server stopped unexpectedly; its log: {log_file}")
        log("stopping: finishing the requests in flight")
        left = _drain(models, config)
        if left:
            log(f"stopping after {config.drain_timeout_s} s with {left} requests unanswered")
    finally:
        triton.stop()
        for model in models:
            for instance in model.instances:
                instance.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
