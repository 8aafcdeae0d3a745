"""corel-serve: a real Triton server (the nvidia-pytriton wheel's) on loopback serving real bundles,
the corel-infer --server client against it, bad requests, the port and bundle checks, and SIGTERM."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from corel_annotate.benchmarks.serve import free_ports
from corel_annotate.runtime.cli.infer import infer_app

pytest.importorskip("pytriton")
tritonclient_http = pytest.importorskip("tritonclient.http")
runner = CliRunner()
MAX_IMAGE_BYTES = 2_000_000
MAX_PHOTOS = 12
MAX_REQUEST_MB = 3
RSS_BOUND_MB = 48
"""How far 120 refused requests may move the server's memory (its process and Triton's)."""
SERVE = [sys.executable, "-m", "corel_annotate.runtime.cli.serve"]


@dataclass
class Server:
    proc: subprocess.Popen
    ports: list[int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def start_server(bundles_args: list[str], ports: list[int], *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*SERVE, *bundles_args, "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                             "--metrics-port", str(ports[2]), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def server(bundles, memory_bundles):
    ports = free_ports(3)
    proc = start_server(["--model", str(bundles["attention"][1]), "--model", str(bundles["ml-gcn"][1]),
                         "--model", f"ml-gcn-memory={memory_bundles['ml-gcn']}"], ports,
                        "--device", "cpu", "--precision", "fp32", "--max-image-bytes", str(MAX_IMAGE_BYTES),
                        "--max-photos-per-request", str(MAX_PHOTOS), "--max-request-mb", str(MAX_REQUEST_MB))
    srv = Server(proc, ports)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"corel-serve exited {proc.returncode}: {proc.stdout.read()}")
        try:
            if srv.get("/v2/health/ready") == 200:
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("corel-serve was not ready in 180 s")
    yield srv
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def photos(synth_data, tmp_path_factory) -> Path:
    """Good photos and every kind of bad one a server must survive."""
    folder = tmp_path_factory.mktemp("serve-photos")
    images = sorted((synth_data / "images").iterdir())[:10]
    for p in images:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "cut.jpg").write_bytes(images[0].read_bytes()[:300])
    (folder / "text.jpg").write_text("not an image")
    Image.new("L", (10_000, 10_000)).save(folder / "bomb.png")   # 10^8 pixels in about 100 kB
    (folder / "huge.jpg").write_bytes(images[0].read_bytes() + bytes(MAX_IMAGE_BYTES))
    return folder


def records(path: Path) -> dict[str, dict]:
    return {r["image"]: r for r in map(json.loads, path.read_text().splitlines())}


def assert_same_records(local: dict, remote: dict) -> None:
    assert local.keys() == remote.keys()
    for image, want in local.items():
        got = remote[image]
        assert got["status"] == want["status"], (image, want, got)
        if want["status"] == "ok":
            assert got["labels"] == want["labels"], image
            assert np.allclose(got["scores"], want["scores"], atol=1e-5), image


@pytest.mark.parametrize("method,options,protocol", [("attention", ["--beam-width", "3"], "http"),
                                                     ("attention", [], "grpc"), ("ml-gcn", ["--top-k", "2"], "http"),
                                                     ("ml-gcn-memory", [], "grpc")])
def test_server_records_equal_in_process_records(server, bundles, memory_bundles, photos, tmp_path, method, options,
                                                 protocol):
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    bundle = memory_bundles["ml-gcn"] if method == "ml-gcn-memory" else bundles[method][1]
    run = runner.invoke(infer_app, [str(photos), "-m", str(bundle), "-o", str(local), "--no-progress",
                                    "--device", "cpu", *options])
    assert run.exit_code == 1, run.output
    url = server.url if protocol == "http" else f"grpc://127.0.0.1:{server.ports[1]}"
    served = runner.invoke(infer_app, [str(photos), "-m", method, "--server", url, "-o", str(remote),
                                       "--no-progress", "--in-flight", "4", *options])
    assert served.exit_code == 1, served.output
    want, got = records(local), records(remote)
    huge = str(photos / "huge.jpg")   # over the server's byte limit only; the local run has none
    assert_same_records({k: v for k, v in want.items() if k != huge}, {k: v for k, v in got.items() if k != huge})
    assert sum(r["status"] == "ok" for r in got.values()) == 10
    errors = {Path(k).name: r["error"] for k, r in got.items() if r["status"] == "error"}
    assert set(errors) == {"cut.jpg", "text.jpg", "bomb.png", "huge.jpg"}
    assert all(reason.startswith(str(photos / name) + ": ") for name, reason in errors.items())
    assert "decompression bomb" in errors["bomb.png"].replace("-", " ") and "limit" in errors["huge.jpg"]
    if method == "ml-gcn":
        assert all(len(r["labels"]) <= 2 for r in got.values() if r["status"] == "ok")


def test_resume_and_attention_maps_through_the_server(server, bundles, photos, tmp_path):
    good = sorted(p for p in photos.iterdir() if p.suffix == ".jpeg")
    half = tmp_path / "half.txt"
    half.write_text("\n".join(str(p) for p in good[:4]))
    out = tmp_path / "out.jsonl"
    base = ["-m", "attention", "--server", server.url, "-o", str(out), "--no-progress"]
    assert runner.invoke(infer_app, [str(half), *base]).exit_code == 0
    again = runner.invoke(infer_app, [str(photos), *base, "--resume", "--attention-maps", str(tmp_path / "maps")])
    assert again.exit_code == 1 and "resuming: 4 of 14 images already have a record" in again.output
    lines = [json.loads(line)["image"] for line in out.read_text().splitlines()]
    assert len(lines) == len(set(lines)) == len(list(photos.iterdir()))
    local = runner.invoke(infer_app, [str(p) for p in good[4:]] + ["-m", str(bundles["attention"][1]), "--device",
                                                                  "cpu", "--no-progress", "--attention-maps",
                                                                  str(tmp_path / "local-maps")])
    assert local.exit_code == 0
    remote_maps, local_maps = sorted((tmp_path / "maps").glob("*.png")), sorted((tmp_path / "local-maps").glob("*.png"))
    assert [p.name for p in remote_maps] == [p.name for p in local_maps] and remote_maps
    for a, b in zip(remote_maps, local_maps):
        assert np.abs(np.asarray(Image.open(a), np.int16) - np.asarray(Image.open(b), np.int16)).max() <= 2


def _infer_body(*inputs: dict) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


def test_bad_requests_get_kserve_errors_and_the_server_stays_up(server, photos):
    infer = "/v2/models/attention/infer"
    status, reply = server.post(infer, b'{"inputs": [')
    assert status in (400, 500) and "JSON" in reply["error"]   # Triton 2.51 answers a parse error with 500
    status, reply = server.post(infer, _infer_body({"name": "image", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}))
    assert status == 400 and "BYTES" in reply["error"]
    status, reply = server.post("/v2/models/no-such-model/infer", _infer_body())
    assert status in (400, 404) and "no-such-model" in reply["error"]
    status, reply = server.post(infer, _infer_body({"name": "beam_width", "datatype": "INT32", "shape": [1, 1],
                                                    "data": [3]}))
    assert status == 200 and "no 'image' input" in reply["outputs"][2]["data"][0]
    status, reply = server.post(infer, _infer_body({"name": "image", "datatype": "BYTES", "shape": [1, 1], "data": ["x"]},
                                                   {"name": "beam_width", "datatype": "INT32", "shape": [1, 1],
                                                    "data": [0]}))
    assert status == 200 and reply["outputs"][2]["data"][0].startswith("bad decoding options")
    # three photos in one request, the middle one broken: each row answers for itself
    client = tritonclient_http.InferenceServerClient(server.url.split("//")[1])
    good = sorted(p for p in photos.iterdir() if p.suffix == ".jpeg")[:2]
    rows = np.array([[good[0].read_bytes()], [b"\xff\xd8broken"], [good[1].read_bytes()]], dtype=object)
    image = tritonclient_http.InferInput("image", [3, 1], "BYTES")
    image.set_data_from_numpy(rows)
    result = client.infer("attention", [image])
    errors = [e.decode() for e in result.as_numpy("error").reshape(-1)]
    assert errors[0] == errors[2] == "" and errors[1].startswith("image: cannot read image")
    labels = result.as_numpy("labels")
    assert labels[0][0] and labels[2][0] and not any(labels[1])
    assert server.get("/v2/health/ready") == 200 and server.proc.poll() is None


def test_second_server_on_the_same_ports_and_bad_bundles_exit_2(server, bundles, tmp_path):
    second = start_server(["--model", str(bundles["attention"][1])], server.ports)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 2
    assert f"127.0.0.1:{server.ports[0]}" in out and "already in use" in out and len(out.strip().splitlines()) == 1
    import shutil

    broken = tmp_path / "broken.bundle"
    shutil.copytree(bundles["ml-gcn"][1], broken)
    graph = next(broken.glob("*.onnx"))
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    bad = start_server(["--model", str(broken)], free_ports(3))
    out, _ = bad.communicate(timeout=120)
    assert bad.returncode == 2 and graph.name in out and "sha256" in out.lower()
    assert server.get("/v2/health/ready") == 200


def _rows(server: Server, photos: list[bytes], beam: int | None = None) -> tuple[list[str], list[list[str]]]:
    """One request of these photos to the attention model: each row's error and labels."""
    from corel_annotate.benchmarks.serve import infer_rows

    client = tritonclient_http.InferenceServerClient(server.url.split("//")[1], network_timeout=120)
    try:
        return infer_rows(tritonclient_http, client, "attention", photos, beam)
    finally:
        client.close()


def test_requests_over_the_limits_get_row_errors_and_memory_stays_flat(server, bundles, photos):
    import psutil

    from corel_annotate.runtime.bundle.manifest import load_manifest
    from corel_annotate.runtime.bundle.limits import RequestLimits

    cap = RequestLimits.for_manifest(load_manifest(bundles["attention"][1])).max_beam_width
    good = [p.read_bytes() for p in sorted(photos.iterdir()) if p.suffix == ".jpeg"][:2]
    padded = good[0] + bytes(1_900_000 - len(good[0]))   # a readable JPEG under the per-photo limit
    _, before = _rows(server, good, beam=cap)
    oversized = {"beam": (good, 1_000_000, f"more than this server's cap of {cap}"),
                 "beam+1": (good, cap + 1, f"cap of {cap}"),
                 "photos": ([good[0]] * (MAX_PHOTOS + 1), None, f"at most {MAX_PHOTOS} per request"),
                 "bytes": ([padded, padded], None, f"at most {MAX_REQUEST_MB * 1024 * 1024:,} per request")}

    def refuse_all() -> None:
        for what, (rows, beam, message) in oversized.items():
            errors, labels = _rows(server, rows, beam)
            assert all(message in e for e in errors) and not any(labels), (what, errors[:1])

    proc = psutil.Process(server.proc.pid)

    def rss() -> int:
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

    refuse_all()
    start = rss()
    for _ in range(30):
        refuse_all()
    grown = (rss() - start) / 2**20
    assert grown < RSS_BOUND_MB, f"120 refused requests grew the server by {grown:.1f} MB"
    errors, after = _rows(server, good, beam=cap)
    assert errors == ["", ""] and after == before   # nothing else changed
    assert server.get("/v2/health/ready") == 200 and server.proc.poll() is None


def test_a_server_reachable_from_other_machines_says_it_has_no_authentication(bundles):
    """192.0.2.1 (TEST-NET-1) is no address of this machine: the warning comes first, then the bind fails."""
    from corel_annotate.runtime.cli.serve import serve_app

    result = CliRunner().invoke(serve_app, ["--model", str(bundles["attention"][1]), "--host", "192.0.2.1",
                                            "--http-port", "18000", "--grpc-port", "18001", "--metrics-port", "18002"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert "no authentication" in lines[0] and "proxy" in lines[0] and "docs/serving.md" in lines[0]
    assert "cannot listen on 192.0.2.1:18000" in result.output and "already in use" not in result.output
    loopback = CliRunner().invoke(serve_app, ["--model", str(bundles["attention"][1]), "--host", "127.0.0.1",
                                              "--max-beam-width", "0"])
    assert loopback.exit_code == 2 and "no authentication" not in loopback.output
    assert "--max-beam-width 0: at least 1" in loopback.output


def pending_requests(server: Server, model: str) -> float:
    """The requests Triton has received for ``model`` and not yet finished with (its Prometheus gauge
    ``nv_inference_pending_request_count``: queued, not yet handed back)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports[2]}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("nv_inference_pending_request_count{") and f'model="{model}"' in line]
    assert values, f"no nv_inference_pending_request_count for {model} in /metrics"
    return sum(values)


def test_sigterm_drains_requests_in_flight(server, photos):
    """Last in this module: it stops the module's server.  SIGTERM goes out only once the server's own
    metrics show requests it has received and not answered (six requests of eight photos at beam 5 do not
    fit one batch of 32, so some wait while the first batch runs); every one of them is still answered."""
    good = sorted(p for p in photos.iterdir() if p.suffix == ".jpeg")
    results: list = []
    assert pending_requests(server, "attention") == 0

    def send(i: int) -> None:
        client = tritonclient_http.InferenceServerClient(server.url.split("//")[1], network_timeout=120)
        batch = np.array([[good[(i + j) % len(good)].read_bytes()] for j in range(8)], dtype=object)
        image = tritonclient_http.InferInput("image", [8, 1], "BYTES")
        image.set_data_from_numpy(batch)
        beam = tritonclient_http.InferInput("beam_width", [8, 1], "INT32")
        beam.set_data_from_numpy(np.full((8, 1), 5, np.int32))
        try:
            results.append(client.infer("attention", [image, beam]).as_numpy("error"))
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while (in_flight := pending_requests(server, "attention")) == 0:
        assert len(results) < 6, "every request was answered before one was seen in flight"
        assert time.monotonic() < deadline, "no request reached the server"
        time.sleep(0.005)
    answered = len(results)
    server.proc.send_signal(signal.SIGTERM)
    assert answered < 6 and in_flight >= 1
    for t in threads:
        t.join(timeout=120)
    assert server.proc.wait(timeout=90) == 0
    output = server.proc.stdout.read()
    assert "stopping: finishing the requests in flight" in output, output[-2000:]
    assert len(results) == 6
    assert all(isinstance(r, np.ndarray) and r.shape == (8, 1) and not any(r.reshape(-1)) for r in results), results
