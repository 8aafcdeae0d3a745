"""corel-infer --ray on a real local Ray (started once for the module): the same records as the in-process
engine (error records included), --resume, file:// URIs, a worker killed mid-run, a bad bundle."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'corel-annotate[ray]')")

from corel_annotate.benchmarks.ray_bench import kill_one_actor  # noqa: E402
from corel_annotate.runtime.cli.infer import _ray_flag, infer_app  # noqa: E402
from corel_annotate.runtime.jobs.ray_job import Sizing, start_ray  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module, started the way ``--ray`` starts it, its sockets under a short /tmp path;
    the CLI runs in this process, so every ``corel-infer --ray`` below joins it instead of starting its own."""
    import ray

    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_TMPDIR=temp, RAY_USAGE_STATS_ENABLED="0")
    assert start_ray("local")
    yield temp
    ray.shutdown()
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def photos(synth_data, tmp_path_factory) -> Path:
    """24 photos in nested folders, a truncated JPEG and a text file named .jpg."""
    folder = tmp_path_factory.mktemp("ray-photos")
    (folder / "sub").mkdir()
    images = sorted((synth_data / "images").iterdir())[:24]
    for i, p in enumerate(images):
        (folder / ("sub" if i % 3 == 0 else "") / p.name).write_bytes(p.read_bytes())
    (folder / "cut.jpg").write_bytes(images[0].read_bytes()[:300])
    (folder / "text.jpg").write_text("not an image")
    return folder


def _records(path: Path) -> dict[str, dict]:
    """Records by image, asserting each image has exactly one."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_image = {r["image"]: r for r in rows}
    assert len(by_image) == len(rows), "an image has more than one record"
    return by_image


def _assert_same(got: dict[str, dict], want: dict[str, dict]) -> None:
    assert got.keys() == want.keys()
    for image, w in want.items():
        g = got[image]
        assert (g["status"], g.get("labels"), g.get("error")) == (w["status"], w.get("labels"), w.get("error")), image
        assert all(abs(a - b) <= 1e-5 for a, b in zip(g.get("scores", []), w.get("scores", []))), image


def _infer(*args: str):
    return runner.invoke(infer_app, [*map(str, args), "--no-progress"])


@pytest.fixture(scope="module")
def local_records(bundles, photos, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("ray-local") / "local.jsonl"
    result = _infer(photos, "-m", bundles["attention"][1], "-o", out)
    assert result.exit_code == 1, result.output          # the two bad files
    records = _records(out)
    assert len(records) == 26 and sum(r["status"] == "ok" for r in records.values()) == 24
    return records


def test_ray_records_equal_local_records(ray_local, bundles, photos, local_records, tmp_path):
    out = tmp_path / "ray.jsonl"
    result = _infer(photos, "-m", bundles["attention"][1], "-o", out, "--workers", "2", "--ray")
    assert result.exit_code == 1, result.output
    assert "ray (2 workers)" in result.output and "24/26 images annotated" in result.output
    _assert_same(_records(out), local_records)


def test_ray_runs_the_label_memory_as_in_process(ray_local, memory_bundles, photos, tmp_path):
    """A scores bundle's memory blend and a sequence bundle's kNN-LM (weight set to 0.3 so it runs) give the
    same records on the Ray actors as in process."""
    attention = tmp_path / "attention.bundle"
    shutil.copytree(memory_bundles["attention"], attention)
    manifest = json.loads((attention / "manifest.json").read_text())
    manifest["memory"]["weight"] = 0.3
    (attention / "manifest.json").write_text(json.dumps(manifest))
    for bundle in (memory_bundles["ml-gcn"], attention):
        local, remote = tmp_path / f"{bundle.name}.local.jsonl", tmp_path / f"{bundle.name}.ray.jsonl"
        assert _infer(photos, "-m", bundle, "-o", local, "--device", "cpu").exit_code == 1
        result = _infer(photos, "-m", bundle, "-o", remote, "--device", "cpu", "--ray")
        assert result.exit_code == 1, result.output
        _assert_same(_records(remote), _records(local))


def test_resume_with_a_file_uri_annotates_only_the_rest(ray_local, bundles, photos, local_records, tmp_path):
    out = tmp_path / "ray.jsonl"
    half = sorted(local_records)[:13]
    listing = tmp_path / "half.txt"
    listing.write_text("\n".join(half) + "\n")
    first = _infer(listing, "-m", bundles["attention"][1], "-o", out, "--ray")
    assert first.exit_code in (0, 1), first.output
    assert len(_records(out)) == 13
    rest = _infer(f"file://{photos}", "-m", bundles["attention"][1], "-o", out, "--ray", "--resume")
    assert rest.exit_code in (0, 1), rest.output
    assert "resuming: 13 images already have a record" in rest.output
    assert "/13 images annotated in this run" in rest.output     # 26 - 13 photos read from the URI
    _assert_same(_records(out), local_records)


def test_a_worker_killed_mid_run_loses_and_repeats_nothing(ray_local, bundles, synth_data, tmp_path):
    out = tmp_path / "ray.jsonl"
    total = len(list((synth_data / "images").iterdir()))
    killed: list[tuple[int, int]] = []
    killer = threading.Thread(target=kill_one_actor, args=(ray_local, out, 40, killed), daemon=True)
    killer.start()
    result = _infer(synth_data / "images", "-m", bundles["cnn"][1], "-o", out, "--ray", "--workers", "2",
                    "--batch-size", "4")
    killer.join(timeout=5)
    assert result.exit_code == 0, result.output
    assert killed and killed[0][1] < total, f"no actor was killed mid-run: {killed}"
    assert out.read_text().count("\n") == total
    records = _records(out)
    assert len(records) == total and all(r["status"] == "ok" for r in records.values())
    assert {Path(i).name for i in records} == {p.name for p in (synth_data / "images").iterdir()}


def test_bad_bundle_exits_2_with_one_line(bundles, photos, tmp_path):
    broken = tmp_path / "broken.bundle"
    shutil.copytree(bundles["cnn"][1], broken)
    graph = next(p for p in broken.iterdir() if p.suffix == ".onnx")
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    result = _infer(photos, "-m", broken, "--ray")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and graph.name in lines[0], result.output


def test_ray_option_takes_an_optional_address():
    assert _ray_flag(["a", "--ray"]) == ["a", "--ray=local"]
    assert _ray_flag(["--ray", "photos", "-m", "b"]) == ["--ray=local", "photos", "-m", "b"]
    assert _ray_flag(["a", "--ray", "-o", "x"]) == ["a", "--ray=local", "-o", "x"]
    for address in ("ray://head:10001", "10.0.0.1:6379", "auto"):
        assert _ray_flag(["a", "--ray", address]) == ["a", "--ray", address]
    assert _ray_flag(["--", "--ray"]) == ["--", "--ray"]


def test_actors_leave_cpu_for_reading_and_fit_a_node():
    two = Sizing.for_cluster(2.0, 2, 2.0)
    assert two.workers * two.actor_cpus + two.read_cpus <= 2.0 and two.threads == 1
    assert Sizing.for_cluster(2.0, 0, 2.0).workers == 2 and Sizing.for_cluster(2.0, 1, 2.0).threads == 2
    big = Sizing.for_cluster(64.0, 1, 8.0)
    assert big.actor_cpus <= 8.0 and big.threads == 8


def test_ray_workers_apply_the_label_map(ray_local, bundles, photos, tmp_path):
    """--labels on Ray: every actor applies the same map as the in-process run."""
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": {"sky": "blue sky", "tree": "plants", "grass": "plants",
                                             "people": {"exclude": True}, "water": {"threshold": 0.0}}}))
    bundle = bundles["ml-gcn"][1]
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert _infer(photos, "-m", bundle, "-o", local, "--device", "cpu", "--labels", labels).exit_code == 1
    result = _infer(photos, "-m", bundle, "-o", remote, "--device", "cpu", "--labels", labels, "--ray")
    assert result.exit_code == 1, result.output
    got = _records(remote)
    _assert_same(got, _records(local))
    ok = [r for r in got.values() if r["status"] == "ok"]
    assert all("water" in r["labels"] and "people" not in r["labels"] for r in ok)
