"""``corel-bench serve``: corel-serve (Triton) under closed-loop load beside in-process corel-infer.

One run: the in-process pipeline (what ``corel-infer`` runs) over the photos, then a ``corel-serve``
subprocess on free loopback ports, then for each client count N, N threads that each send
``requests`` one-photo requests back to back.  Per row: throughput, latency percentiles, the
server's mean batch size (Triton's own inference and execution counts), the CPU the server's
processes and the clients used, and whether every answer equals the in-process labels.  Optional:
``mixed`` requests that mix good photos with broken ones and oversized bodies, and a soak that
samples the server's resident memory."""
from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import psutil


@dataclass
class LoadRow:
    clients: int
    requests: int
    seconds: float
    images_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float
    server_cpu_share: float
    client_cpu_share: float
    errors: int
    wrong: int
    ratio_to_local: float = 0.0


@dataclass
class ClientRow:
    """``corel-infer --server`` itself: photos packed per request, a bounded window in flight."""

    photos_per_request: int
    in_flight: int
    images_per_second: float
    wrong: int
    errors: int
    ratio_to_local: float


@dataclass
class MixedResult:
    requests: int
    good: int
    good_annotated: int
    bad: int
    bad_with_error: int
    kinds: dict = field(default_factory=dict)
    server_up: bool = False
    restarts: int = 0


@dataclass
class SoakResult:
    seconds: float
    clients: int
    requests: int
    errors: int
    rss_mib_after_warmup: float
    rss_mib_end: float
    rss_mib_max: float
    samples: list = field(default_factory=list)

    @property
    def growth(self) -> float:
        return self.rss_mib_end / self.rss_mib_after_warmup - 1.0


@dataclass
class HostileResult:
    """``corel-bench serve --hostile``: many clients mixing good photos with every kind of bad request."""

    requests: int
    clients: int
    seconds: float
    good: int
    good_annotated: int
    good_per_second: float
    good_p50_ms: float
    good_p99_ms: float
    kinds: dict = field(default_factory=dict)
    """kind -> [sent, answered with an error (a row error or a KServe error), example message]"""
    rss_mib_start: float = 0.0
    rss_mib_after_warmup: float = 0.0
    """The first sample after a tenth of the run: the server's working set under this load."""
    rss_mib_end: float = 0.0
    rss_mib_max: float = 0.0
    samples: list = field(default_factory=list)
    server_up: bool = False
    restarts: int = 0
    limits: str = ""


@dataclass
class ServeResult:
    bundle: str
    data: str
    photos: int
    cpu_count: int
    engine: str
    local_images_per_second: float
    startup_seconds: float
    rows: list[LoadRow]
    client_rows: list[ClientRow] = field(default_factory=list)
    mixed: Optional[MixedResult] = None
    soak: Optional[SoakResult] = None
    hostile: Optional[HostileResult] = None
    command: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.soak is not None:
            out["soak"]["growth"] = self.soak.growth
        return out


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free right now (for servers that tests and benchmarks start)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of these processes (those gone count 0)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _rss_mib(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2 ** 20


def _metric(metrics_url: str, name: str, model: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    found = re.search(rf'^{name}{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


class ServerProcess:
    """A ``corel-serve`` subprocess on free loopback ports."""

    def __init__(self, bundle: Path, extra: list[str]) -> None:
        self.ports = free_ports(3)
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "corel_annotate.runtime.cli.serve", "--model", str(bundle),
                                      "--http-port", str(self.ports[0]), "--grpc-port", str(self.ports[1]),
                                      "--metrics-port", str(self.ports[2]), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.address = f"127.0.0.1:{self.ports[0]}"
        self.metrics = f"http://127.0.0.1:{self.ports[2]}/metrics"
        while True:
            if self.proc.poll() is not None:
                raise ValueError(f"corel-serve exited {self.proc.returncode}: {self.proc.stdout.read()[-2000:]}")
            try:   # ready, and its metrics endpoint listening too (the rows read it at once)
                if urllib.request.urlopen(f"http://{self.address}/v2/health/ready", timeout=5).status == 200 \
                        and urllib.request.urlopen(self.metrics, timeout=5).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        self.startup_seconds = time.perf_counter() - started
        self.pid = self.proc.pid

    def up(self) -> bool:
        try:
            return self.proc.poll() is None and urllib.request.urlopen(
                f"http://{self.address}/v2/health/ready", timeout=5).status == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=120)


def _client(address: str):
    import tritonclient.http as http

    return http, http.InferenceServerClient(address, network_timeout=300, connection_timeout=60)


def _ask(http, client, model: str, data: bytes) -> tuple[list[str], str]:
    image = http.InferInput("image", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[data]], dtype=object))
    result = client.infer(model, [image], outputs=[http.InferRequestedOutput("labels"),
                                                   http.InferRequestedOutput("error")])
    labels = [v.decode() for v in result.as_numpy("labels")[0] if v]
    return labels, result.as_numpy("error").reshape(-1)[0].decode()


def closed_loop(server: ServerProcess, model: str, photos: list[bytes], expected: list[list[str]], clients: int,
                requests: int, stop_at: float | None = None, sample: Callable[[], None] | None = None) -> tuple:
    """``clients`` threads, each sending ``requests`` requests one after another (or until ``stop_at``)."""
    latencies: list[float] = []
    errors = [0]
    wrong = [0]
    sent = [0]
    lock = threading.Lock()

    def worker(index: int) -> None:
        http, client = _client(server.address)
        k = 0
        while (stop_at is None and k < requests) or (stop_at is not None and time.perf_counter() < stop_at):
            i = (index * 7919 + k) % len(photos)
            with lock:
                sent[0] += 1
            t0 = time.perf_counter()
            try:
                labels, error = _ask(http, client, model, photos[i])
            except Exception:  # noqa: BLE001 - counted
                with lock:
                    errors[0] += 1
                k += 1
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                errors[0] += bool(error)
                wrong[0] += labels != expected[i]
            k += 1
        client.close()

    procs = _tree(server.pid)
    count0, exec0 = (_metric(server.metrics, n, model) for n in ("nv_inference_count", "nv_inference_exec_count"))
    cpu0, mine0, t0 = cpu_seconds(procs), cpu_seconds([psutil.Process()]), time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        next(t for t in threads if t.is_alive()).join(timeout=5)
        if sample is not None:
            sample()
    wall = time.perf_counter() - t0
    cpu1, mine1 = cpu_seconds(procs), cpu_seconds([psutil.Process()])
    count1, exec1 = (_metric(server.metrics, n, model) for n in ("nv_inference_count", "nv_inference_exec_count"))
    cores = os.cpu_count() or 1
    lat = np.asarray(latencies) * 1000.0 if latencies else np.zeros(1)
    row = LoadRow(clients, sent[0], wall, len(latencies) / wall,
                  float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), float(np.percentile(lat, 99)),
                  (count1 - count0) / max(1.0, exec1 - exec0), (cpu1 - cpu0) / (wall * cores),
                  (mine1 - mine0) / (wall * cores), errors[0], wrong[0])
    return row


def local_throughput(bundle: Path, paths: list[Path], rounds: int = 2) -> tuple[float, list[list[str]], str]:
    """In-process ``corel-infer``'s pipeline (``LocalJob``) over the photos: images/s (best round),
    the labels of each photo and the engine that ran."""
    from corel_annotate.runtime.jobs.local import LocalJob
    from corel_annotate.runtime.jobs.records import InferOptions

    job = LocalJob.load(bundle, device="auto", precision="auto")
    best, labels = 0.0, []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = {str(p.path): p.record.get("labels") for p in job.records(paths, InferOptions())}
        best = max(best, len(paths) / (time.perf_counter() - t0))
        labels = [out[str(p)] for p in paths]
    return best, labels, job.engine


def client_throughput(server: ServerProcess, model: str, paths: list[Path], expected: list[list[str]],
                      per_request: int, in_flight: int, local_ips: float) -> ClientRow:
    """The records ``corel-infer --server`` writes, timed over the photos (best of two rounds)."""
    from corel_annotate.runtime.jobs.records import InferOptions
    from corel_annotate.runtime.jobs.triton_job import TritonJob

    job = TritonJob.connect(f"http://{server.address}", model, in_flight)
    best, wrong, errors = 0.0, 0, 0
    want = {str(p): labels for p, labels in zip(paths, expected)}
    for _ in range(2):
        t0 = time.perf_counter()
        got = list(job.records(paths, InferOptions(batch_size=per_request)))
        best = max(best, len(paths) / (time.perf_counter() - t0))
        wrong = sum(p.record.get("labels") != want[str(p.path)] for p in got)
        errors = sum(p.failed for p in got)
    job.close()
    return ClientRow(per_request, in_flight, best, wrong, errors, best / local_ips)


def _bad_inputs(good: bytes, max_image_bytes: int) -> dict[str, bytes]:
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(bomb, "PNG")
    return {"truncated JPEG": good[: len(good) // 3], "text file": b"this is a text file, not a photo\n" * 20,
            "decompression bomb": bomb.getvalue(), "oversized body": os.urandom(max_image_bytes + 1024),
            "empty": b""}


def mixed(server: ServerProcess, model: str, photos: list[bytes], expected: list[list[str]], total: int,
          max_image_bytes: int, clients: int = 8) -> MixedResult:
    """``total`` requests from ``clients`` threads: 80% good photos, the rest spread over the kinds of
    bad input; every good one must come back with the in-process labels, every bad one with an error."""
    bad = _bad_inputs(photos[0], max_image_bytes)
    kinds = list(bad)
    plan = [("good", i % len(photos)) if i % 5 else (kinds[(i // 5) % len(kinds)], -1) for i in range(total)]
    result = MixedResult(total, 0, 0, 0, 0, {k: [0, 0] for k in kinds})
    lock = threading.Lock()
    pid = server.pid

    def worker(part: list) -> None:
        http, client = _client(server.address)
        for kind, i in part:
            try:
                labels, error = _ask(http, client, model, photos[i] if kind == "good" else bad[kind])
            except Exception as exc:  # noqa: BLE001 - a KServe error is an error answer too
                labels, error = [], f"request error: {exc}"
            with lock:
                if kind == "good":
                    result.good += 1
                    result.good_annotated += not error and labels == expected[i]
                else:
                    result.bad += 1
                    result.bad_with_error += bool(error)
                    result.kinds[kind][0] += 1
                    result.kinds[kind][1] += bool(error)
                    if error and kind not in result.kinds.setdefault("examples", {}):
                        result.kinds["examples"][kind] = error
        client.close()

    threads = [threading.Thread(target=worker, args=(plan[c::clients],)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.server_up = server.up()
    result.restarts = int(server.pid != pid or server.proc.poll() is not None)
    return result


HOSTILE_GOOD_SHARE = 0.5
"""Half the hostile run's requests are good photos; the other half cycle through :func:`_hostile_kinds`."""


def infer_rows(http, client, model: str, photos: list[bytes], beam: Optional[int] = None
               ) -> tuple[list[str], list[list[str]]]:
    """One request of these photos (and a beam width for every row) through a tritonclient.http
    client: each row's error ("" when annotated) and labels."""
    image = http.InferInput("image", [len(photos), 1], "BYTES")
    image.set_data_from_numpy(np.array([[p] for p in photos], dtype=object).reshape(len(photos), 1))
    inputs = [image]
    if beam is not None:
        width = http.InferInput("beam_width", [len(photos), 1], "INT32")
        width.set_data_from_numpy(np.full((len(photos), 1), beam, np.int32))
        inputs.append(width)
    result = client.infer(model, inputs, outputs=[http.InferRequestedOutput(n) for n in ("error", "labels")])
    errors = [e.decode() for e in result.as_numpy("error").reshape(-1)]
    return errors, [[v.decode() for v in row if v] for row in result.as_numpy("labels")]


def _hostile_kinds(good: bytes, limits) -> dict[str, Callable]:
    """Each kind of bad request, as a function of (tritonclient.http module, client, model, raw POST) that
    sends it and returns the error it got ("" when it was answered as if good)."""
    bad = _bad_inputs(good, limits.max_image_bytes)

    def rows(photos: list[bytes], beam: Optional[int] = None):
        def send(http, client, model, post) -> str:
            found, _ = infer_rows(http, client, model, photos, beam)
            return found[0] if all(found) else ""
        return send

    def raw(body: dict):
        import json

        def send(http, client, model, post) -> str:
            status, text = post(json.dumps(body).encode())
            return text if status >= 400 else ""
        return send

    kinds = {kind: rows([data]) for kind, data in bad.items()}
    kinds["beam 1,000,000"] = rows([good], 1_000_000)
    kinds["beam cap + 1"] = rows([good], limits.max_beam_width + 1)
    kinds["too many photos"] = rows([good] * (limits.max_photos + 1))
    per = max(len(good), min(limits.max_image_bytes, limits.max_request_bytes // 2 + 1))
    padded = good + bytes(per - len(good))
    kinds["request bytes over the cap"] = rows([padded] * (limits.max_request_bytes // len(padded) + 1))
    kinds["wrong dtype"] = raw({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]})
    kinds["shape lie"] = raw({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3, 1], "data": ["x"]}]})
    kinds["beam as text"] = raw({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1], "data": ["x"]},
                                            {"name": "beam_width", "datatype": "BYTES", "shape": [1, 1], "data": ["9"]}]})
    return kinds


def hostile(server: ServerProcess, model: str, photos: list[bytes], expected: list[list[str]], total: int,
            clients: int, limits, log: Callable[[str], None]) -> HostileResult:
    """``total`` requests from ``clients`` threads, half good photos (each must come back with the
    in-process labels) and half spread over the kinds of bad request (each must get an error); the
    server's RSS (all its processes) sampled every 2 s."""
    kinds = _hostile_kinds(photos[0], limits)
    names = list(kinds)
    every = round(1 / (1 - HOSTILE_GOOD_SHARE))
    plan = [("good", i % len(photos)) if i % every else (names[(i // every) % len(names)], -1) for i in range(total)]
    result = HostileResult(total, clients, 0.0, 0, 0, 0.0, 0.0, 0.0, {k: [0, 0, ""] for k in names})
    latencies: list[float] = []
    lock = threading.Lock()
    procs = _tree(server.pid)
    pid = server.pid
    infer_url = f"http://{server.address}/v2/models/{model}/infer"

    def post(body: bytes) -> tuple[int, str]:
        request = urllib.request.Request(infer_url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as reply:
                return reply.status, reply.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def worker(part: list) -> None:
        http, client = _client(server.address)
        for kind, i in part:
            t0 = time.perf_counter()
            try:
                if kind == "good":
                    labels, error = _ask(http, client, model, photos[i])
                else:
                    labels, error = [], kinds[kind](http, client, model, post)
            except Exception as exc:  # noqa: BLE001 - a KServe error is an error answer too
                labels, error = [], f"request error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            dt = time.perf_counter() - t0
            with lock:
                if kind == "good":
                    result.good += 1
                    if not error and labels == expected[i]:
                        result.good_annotated += 1
                        latencies.append(dt)
                else:
                    entry = result.kinds[kind]
                    entry[0] += 1
                    entry[1] += bool(error)
                    if error and not entry[2]:
                        entry[2] = error[:200]
        client.close()

    start = time.perf_counter()
    result.rss_mib_start = round(_rss_mib(procs), 1)
    threads = [threading.Thread(target=worker, args=(plan[c::clients],), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        next(t for t in threads if t.is_alive()).join(timeout=2)
        result.samples.append((round(time.perf_counter() - start, 1), round(_rss_mib(procs), 1)))
        if len(result.samples) % 150 == 0:
            done = result.good + sum(v[0] for v in result.kinds.values())
            log(f"hostile {result.samples[-1][0]:.0f}s: {done}/{total} requests, server RSS "
                f"{result.samples[-1][1]:.0f} MiB")
    result.seconds = time.perf_counter() - start
    result.rss_mib_end = round(_rss_mib(procs), 1)
    result.rss_mib_max = max([result.rss_mib_end, result.rss_mib_start] + [r for _, r in result.samples])
    warm = [r for t, r in result.samples if t >= result.seconds / 10] or [result.rss_mib_end]
    result.rss_mib_after_warmup = warm[0]
    lat = np.asarray(latencies) * 1000.0 if latencies else np.zeros(1)
    result.good_per_second = result.good_annotated / result.seconds
    result.good_p50_ms, result.good_p99_ms = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    result.server_up = server.up()
    result.restarts = int(server.pid != pid or server.proc.poll() is not None)
    return result


def soak(server: ServerProcess, model: str, photos: list[bytes], expected: list[list[str]], seconds: float,
         clients: int, warmup: float, log: Callable[[str], None]) -> SoakResult:
    """``clients`` closed-loop clients for ``seconds``; the server's RSS (all its processes) sampled."""
    procs = _tree(server.pid)
    start = time.perf_counter()
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        samples.append((round(time.perf_counter() - start, 1), round(_rss_mib(procs), 1)))
        if len(samples) % 12 == 0:
            log(f"soak {samples[-1][0]:.0f}s: server RSS {samples[-1][1]:.0f} MiB")

    row = closed_loop(server, model, photos, expected, clients, 0, stop_at=start + seconds, sample=sample)
    sample()
    after = [rss for t, rss in samples if t >= warmup] or [samples[-1][1]]
    return SoakResult(seconds, clients, row.requests, row.errors,
                      after[0], samples[-1][1], max(rss for _, rss in samples), samples)


def run_serve(bundle: Path, data: Path, split: str, clients: list[int], requests: int, mixed_requests: int,
              soak_seconds: float, soak_clients: int, server_args: list[str], command: str,
              log: Callable[[str], None], hostile_requests: int = 0, hostile_clients: int = 16) -> ServeResult:
    from corel_annotate.runtime.dataset import read_annotations
    from corel_annotate.runtime.bundle.manifest import load_manifest
    from corel_annotate.runtime.bundle.limits import MAX_IMAGE_BYTES
    from corel_annotate.runtime.serve.triton_server import model_name

    split_file = data / f"{split}.json"
    if not split_file.is_file():
        raise ValueError(f"{split_file}: no such split file")
    paths = [data / "images" / item["image_name"] for item in read_annotations(split_file)]
    load_manifest(bundle, verify=True)
    model = model_name(str(bundle), set())[0]
    log(f"in-process pipeline over {len(paths)} photos")
    local_ips, expected, engine = local_throughput(bundle, paths)
    log(f"  {local_ips:.1f} images/s ({engine})")
    photos = [p.read_bytes() for p in paths]
    server = ServerProcess(bundle, server_args)
    log(f"corel-serve ready in {server.startup_seconds:.1f} s")
    result = ServeResult(str(bundle), str(data), len(paths), os.cpu_count() or 1, engine, local_ips,
                         server.startup_seconds, [], command=command)
    try:
        closed_loop(server, model, photos, expected, 4, 4)   # warm the connections and the batcher
        for n in clients:
            row = closed_loop(server, model, photos, expected, n, requests)
            row.ratio_to_local = row.images_per_second / local_ips
            result.rows.append(row)
            log(f"  {n:3d} clients: {row.images_per_second:.1f} images/s ({row.ratio_to_local:.2f}x in-process), "
                f"p50 {row.p50_ms:.0f} ms, p99 {row.p99_ms:.0f} ms, mean batch {row.mean_batch:.1f}, "
                f"errors {row.errors}, wrong {row.wrong}")
        for per_request, window in ((1, 16), (8, 4), (16, 4)):
            crow = client_throughput(server, model, paths, expected, per_request, window, local_ips)
            result.client_rows.append(crow)
            log(f"  corel-infer --server, {per_request} photos/request, {window} in flight: "
                f"{crow.images_per_second:.1f} images/s ({crow.ratio_to_local:.2f}x), wrong {crow.wrong}")
        if mixed_requests:
            max_bytes = MAX_IMAGE_BYTES
            for i, arg in enumerate(server_args):
                if arg == "--max-image-bytes":
                    max_bytes = int(server_args[i + 1])
            result.mixed = mixed(server, model, photos, expected, mixed_requests, max_bytes)
            log(f"mixed: {result.mixed.good_annotated}/{result.mixed.good} good annotated, "
                f"{result.mixed.bad_with_error}/{result.mixed.bad} bad refused, server up {result.mixed.server_up}")
        if soak_seconds:
            result.soak = soak(server, model, photos, expected, soak_seconds, soak_clients, min(60.0, soak_seconds / 5),
                               log)
            log(f"soak: {result.soak.requests} requests, {result.soak.errors} errors, RSS "
                f"{result.soak.rss_mib_after_warmup:.0f} -> {result.soak.rss_mib_end:.0f} MiB "
                f"({100 * result.soak.growth:+.1f}%)")
        if hostile_requests:
            limits = _server_limits(bundle, server_args)
            result.hostile = hostile(server, model, photos, expected, hostile_requests, hostile_clients, limits, log)
            result.hostile.limits = limits.describe()
            h = result.hostile
            log(f"hostile: {h.good_annotated}/{h.good} good annotated ({h.good_per_second:.1f}/s, p50 "
                f"{h.good_p50_ms:.0f} ms, p99 {h.good_p99_ms:.0f} ms), bad refused "
                f"{sum(v[1] for v in h.kinds.values())}/{sum(v[0] for v in h.kinds.values())}, RSS "
                f"{h.rss_mib_start:.0f} -> {h.rss_mib_end:.0f} MiB (peak {h.rss_mib_max:.0f}), server up {h.server_up}")
    finally:
        code = server.stop()
        log(f"corel-serve stopped, exit {code}")
    return result


def _server_limits(bundle: Path, server_args: list[str]):
    """The limits the benchmark's server applies: corel-serve's own, from its options as passed."""
    from corel_annotate.runtime.bundle.manifest import load_manifest
    from corel_annotate.runtime.bundle.limits import MIB
    from corel_annotate.runtime.serve.triton_server import ServeConfig

    values = {"--max-image-bytes": "max_image_bytes", "--max-beam-width": "max_beam_width",
              "--max-photos-per-request": "max_photos", "--max-request-mb": "max_request_bytes",
              "--decode-memory-mb": "decode_memory"}
    config = ServeConfig()
    for i, arg in enumerate(server_args[:-1]):
        if arg in values:
            value = int(server_args[i + 1]) * (MIB if arg.endswith("-mb") else 1)
            setattr(config, values[arg], value)
    return config.limits(load_manifest(bundle, verify=False))


def markdown(result: dict, command: str) -> str:
    lines = [f"`corel-serve` (Triton, dynamic batching) on `{result['bundle']}` with {result['photos']} photos of "
             f"`{result['data']}`; {result['cpu_count']} CPU cores shared by the server and the clients. Engine: "
             f"{result['engine']}. In-process `corel-infer` pipeline: **{result['local_images_per_second']:.1f} "
             f"images/s**. Server start to ready: {result['startup_seconds']:.1f} s.", "",
             "| clients | requests | images/s | vs in-process | p50 ms | p95 ms | p99 ms | mean server batch "
             "| server CPU | client CPU | errors | labels differing |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['images_per_second']:.1f} | {r['ratio_to_local']:.2f}x "
                     f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.1f} "
                     f"| {100 * r['server_cpu_share']:.0f}% | {100 * r['client_cpu_share']:.0f}% | {r['errors']} "
                     f"| {r['wrong']} |")
    if result.get("client_rows"):
        lines += ["", "`corel-infer PHOTOS --server URL` itself (the same photos, records compared with the in-process "
                      "labels):", "", "| photos per request (`--batch-size`) | requests in flight (`--in-flight`) "
                      "| images/s | vs in-process | labels differing | errors |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in result["client_rows"]:
            lines.append(f"| {r['photos_per_request']} | {r['in_flight']} | {r['images_per_second']:.1f} "
                         f"| {r['ratio_to_local']:.2f}x | {r['wrong']} | {r['errors']} |")
    mixed_result = result.get("mixed")
    if mixed_result:
        kinds = ", ".join(f"{k} {v[1]}/{v[0]}" for k, v in mixed_result["kinds"].items() if k != "examples")
        lines += ["", f"Mixed load ({mixed_result['requests']} requests, 8 clients): good photos annotated with the "
                      f"in-process labels {mixed_result['good_annotated']}/{mixed_result['good']}; bad inputs answered "
                      f"with a per-request error {mixed_result['bad_with_error']}/{mixed_result['bad']} ({kinds}); "
                      f"server up at the end: {'yes' if mixed_result['server_up'] else 'NO'}, restarts "
                      f"{mixed_result['restarts']}.", ""]
        for kind, message in mixed_result["kinds"].get("examples", {}).items():
            lines.append(f"- {kind}: `{message[:160]}`")
    soak_result = result.get("soak")
    if soak_result:
        lines += ["", f"Soak: {soak_result['clients']} clients for {soak_result['seconds']:.0f} s, "
                      f"{soak_result['requests']} requests, {soak_result['errors']} errors; server RSS (all its "
                      f"processes) {soak_result['rss_mib_after_warmup']:.0f} MiB after warm-up, "
                      f"{soak_result['rss_mib_end']:.0f} MiB at the end ({100 * soak_result['growth']:+.1f}%), "
                      f"peak {soak_result['rss_mib_max']:.0f} MiB."]
    h = result.get("hostile")
    if h:
        sent = sum(v[0] for v in h["kinds"].values())
        refused = sum(v[1] for v in h["kinds"].values())
        lines += ["", f"Hostile load: {h['requests']:,} requests from {h['clients']} clients in {h['seconds']:.0f} s, "
                      f"half of them bad. Good photos annotated with the in-process labels: {h['good_annotated']:,}/"
                      f"{h['good']:,} ({h['good_per_second']:.1f}/s, p50 {h['good_p50_ms']:.0f} ms, p99 "
                      f"{h['good_p99_ms']:.0f} ms). Bad requests answered with an error: {refused:,}/{sent:,}. "
                      f"Server RSS (all its processes): {h['rss_mib_start']:.0f} MiB at the start, "
                      f"{h['rss_mib_after_warmup']:.0f} MiB after a tenth of the run (its working set under this "
                      f"load), {h['rss_mib_end']:.0f} MiB at the end "
                      f"({100 * (h['rss_mib_end'] / h['rss_mib_after_warmup'] - 1):+.1f}% since), peak "
                      f"{h['rss_mib_max']:.0f} MiB; server up at the end: "
                      f"{'yes' if h['server_up'] else 'NO'}, restarts {h['restarts']}. Limits: {h['limits']}.", "",
                  "| bad request | sent | answered with an error | example |", "| --- | ---: | ---: | --- |"]
        for kind, (n, errors, example) in h["kinds"].items():
            example = example.replace("|", "/").replace("\n", " ")[:140]
            lines.append(f"| {kind} | {n:,} | {errors:,} | `{example}` |")
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)
