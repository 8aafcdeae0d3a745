"""``corel-bench serve``, ``corel-bench ray`` and ``corel-bench browser`` each run once, as a user runs them,
on a small bundle and six photos with the smallest settings: the JSON and markdown they write (keys,
counts equal to the photos sent, rates above zero, ordered percentiles, parity), that the servers and
Ray processes they start are gone when they exit, and exit 2 with a one-line error on bad input."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from conftest import REPO

from corel_annotate.benchmarks.hardware import IMPORTED_ENGINES, machine, markdown_line

BENCH = [sys.executable, "-m", "corel_annotate.benchmarks.cli"]
PHOTOS = 6


def bench(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*BENCH, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def small_data(synth_data, tmp_path_factory) -> Path:
    """A Corel-layout folder with the first six test photos of the synthetic set (the bench sends a whole split)."""
    out = tmp_path_factory.mktemp("bench-data")
    (out / "images").mkdir()
    split = json.loads((synth_data / "test.json").read_text())
    split["samples"] = split["samples"][:PHOTOS]
    for sample in split["samples"]:
        shutil.copy(synth_data / "images" / sample["image_name"], out / "images" / sample["image_name"])
    (out / "test.json").write_text(json.dumps(split))
    shutil.copy(synth_data / "vocabulary.txt", out / "vocabulary.txt")
    return out


@pytest.fixture
def bundle_copy(bundles, tmp_path) -> Path:
    """The attention bundle under a path of this test's own, so its processes can be found by it."""
    return Path(shutil.copytree(bundles["attention"][1], tmp_path / "attention.bundle"))


def processes_naming(text: str, exclude: set[int] = frozenset()) -> list[psutil.Process]:
    return [proc for proc in psutil.process_iter(["cmdline"])
            if proc.pid not in exclude and text in " ".join(proc.info["cmdline"] or [])]


def assert_none_left(text: str, what: str, exclude: set[int] = frozenset()) -> None:
    """No process naming ``text`` is left; any that is (the benchmark's own leak) is stopped here."""
    left = processes_naming(text, exclude)
    described = [f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:200]}" for p in left]
    for proc in left:
        proc.terminate()
    psutil.wait_procs(left, timeout=30)
    assert not described, f"{what} outlived the benchmark: {described}"


def assert_percentiles(p50: float, p95: float, p99: float) -> None:
    assert 0 < p50 <= p95 <= p99 and math.isfinite(p99)


def assert_one_line_error(result: subprocess.CompletedProcess, *names: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0]


def assert_machine(data: dict, result: subprocess.CompletedProcess, precision: str, md: Path) -> None:
    """The result records the machine it ran on (this one), the header printed it, the markdown names it."""
    this = machine()
    record = data["machine"]
    assert (record["cpu"], record["cores"], record["isa"]) == (this.cpu, this.cores, this.isa)
    assert record["engines"]["onnxruntime"] == this.engines["onnxruntime"] and record["precision"] == precision
    # the header, printed before the bench imports anything: the engines always looked up, not PyTorch or Ray
    header = replace(this, engines={k: v for k, v in this.engines.items() if k not in IMPORTED_ENGINES}).describe()
    assert result.stderr.startswith(f"corel-bench on {header}\n")
    assert md.read_text().splitlines()[-1] == markdown_line(record)


# --- corel-bench serve ---------------------------------------------------------------------------------------

def test_bench_serve(bundle_copy, small_data, tmp_path):
    pytest.importorskip("pytriton")
    pytest.importorskip("tritonclient.http")
    out = tmp_path / "out"
    result = bench("serve", "-m", bundle_copy, "--data", small_data, "--clients", "1,2", "--requests", 3,
                   "--mixed", 25, "--soak-seconds", 2, "--soak-clients", 1, "--max-image-bytes", 300_000,
                   "--hostile", "--hostile-requests", 48, "--hostile-clients", 4,
                   "--server-args", "--max-request-mb 1 --max-photos-per-request 16 --max-beam-width 6",
                   "--out-dir", out, "--stem", "s")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_none_left(str(bundle_copy), "corel-serve (or its Triton)")
    data = json.loads((out / "s.json").read_text())
    assert set(data) == {"bundle", "data", "photos", "cpu_count", "engine", "local_images_per_second",
                         "startup_seconds", "rows", "client_rows", "mixed", "soak", "hostile", "machine", "command"}
    assert_machine(data, result, "fp32", out / "s.md")
    assert data["bundle"] == str(bundle_copy) and data["data"] == str(small_data)
    assert data["photos"] == PHOTOS and data["local_images_per_second"] > 0 and data["startup_seconds"] > 0
    assert data["command"].startswith("corel-bench serve")
    # the closed-loop rows: one per client count, each client sent --requests requests, all answered right
    assert [r["clients"] for r in data["rows"]] == [1, 2]
    for row in data["rows"]:
        assert row["requests"] == 3 * row["clients"]
        assert round(row["images_per_second"] * row["seconds"]) == row["requests"], "every request was answered"
        assert row["images_per_second"] > 0 and row["ratio_to_local"] > 0
        assert_percentiles(row["p50_ms"], row["p95_ms"], row["p99_ms"])
        assert 1 <= row["mean_batch"] <= row["clients"]
        assert row["errors"] == 0 and row["wrong"] == 0
    # corel-infer --server itself: its three (photos per request, window) settings, the in-process labels
    assert [(r["photos_per_request"], r["in_flight"]) for r in data["client_rows"]] == [(1, 16), (8, 4), (16, 4)]
    assert all(r["images_per_second"] > 0 and r["wrong"] == 0 and r["errors"] == 0 for r in data["client_rows"])
    # the mixed run: 25 requests, every fifth one bad (each of the five kinds once), all answered as they should be
    mixed = data["mixed"]
    assert (mixed["requests"], mixed["good"], mixed["bad"]) == (25, 20, 5)
    assert mixed["good_annotated"] == 20 and mixed["bad_with_error"] == 5
    kinds = {k: v for k, v in mixed["kinds"].items() if k != "examples"}
    assert kinds == {k: [1, 1] for k in ("truncated JPEG", "text file", "decompression bomb", "oversized body", "empty")}
    assert set(mixed["kinds"]["examples"]) == set(kinds)
    assert mixed["server_up"] is True and mixed["restarts"] == 0
    soak = data["soak"]
    assert soak["seconds"] == 2 and soak["clients"] == 1 and soak["requests"] > 0 and soak["errors"] == 0
    assert soak["samples"] and 0 < soak["rss_mib_after_warmup"] <= soak["rss_mib_max"]
    assert soak["rss_mib_end"] <= soak["rss_mib_max"]
    assert soak["growth"] == pytest.approx(soak["rss_mib_end"] / soak["rss_mib_after_warmup"] - 1)
    md = (out / "s.md").read_text()
    assert f"with {PHOTOS} photos" in md and f"Command: `{data['command']}`" in md
    assert re.search(r"^\| 1 \| 3 \| [\d.]+ \|", md, re.M) and re.search(r"^\| 2 \| 6 \| [\d.]+ \|", md, re.M)
    assert "good photos annotated with the in-process labels 20/20" in md and "Soak: 1 clients" in md
    # the hostile run: 48 requests, half good; each of the 12 kinds of bad request sent twice, each answered with
    # an error of its own kind; the good ones annotated as in-process; the server's memory sampled throughout
    hostile = data["hostile"]
    assert (hostile["requests"], hostile["clients"], hostile["good"], hostile["good_annotated"]) == (48, 4, 24, 24)
    assert len(hostile["kinds"]) == 12 and all(n == errors == 2 for n, errors, _ in hostile["kinds"].values())
    expected = {"beam 1,000,000": "cap of 6", "beam cap + 1": "beam width 7", "too many photos": "at most 16 per request",
                "request bytes over the cap": "at most 1,048,576 per request", "oversized body": "300,000",
                "decompression bomb": "pixels", "wrong dtype": "BYTES", "empty": "empty"}
    for kind, text in expected.items():
        assert text in hostile["kinds"][kind][2], (kind, hostile["kinds"][kind])
    assert hostile["server_up"] and hostile["restarts"] == 0 and hostile["samples"]
    assert 0 < hostile["rss_mib_start"] <= hostile["rss_mib_max"] and hostile["rss_mib_end"] <= hostile["rss_mib_max"]
    assert "beam width at most 6" in hostile["limits"]
    assert "Hostile load: 48 requests from 4 clients" in md and "| beam 1,000,000 | 2 | 2 |" in md


def test_bench_serve_bad_split_is_a_one_line_error(bundles, small_data, tmp_path):
    result = bench("serve", "-m", bundles["attention"][1], "--data", small_data, "--split", "nosuch",
                   "--out-dir", tmp_path / "out")
    assert_one_line_error(result, str(small_data / "nosuch.json"))
    assert not (tmp_path / "out").exists()


# --- corel-bench ray -----------------------------------------------------------------------------------------

def test_bench_ray(bundle_copy, small_data, tmp_path):
    pytest.importorskip("ray.data")
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    before = {p.pid for p in psutil.process_iter()}
    result = bench("ray", "-m", bundle_copy, "--data", small_data, "--images", PHOTOS, "--workers", "1",
                   "--rounds", 1, "--batch-size", 2, "--no-kill", "--out-dir", out, "--scratch", scratch,
                   "--stem", "r")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_none_left("/tmp/rb-", "the benchmark's Ray", exclude=before)
    data = json.loads((out / "r.json").read_text())
    assert set(data) == {"bundle", "data", "images", "batch_size", "cpu_count", "machine", "rows", "parity", "kill",
                         "command"}
    assert_machine(data, result, "fp32", out / "r.md")
    assert data["images"] == PHOTOS and data["batch_size"] == 2 and data["kill"] is None
    assert [(r["config"], r["workers"]) for r in data["rows"]] == [("local corel-infer", 0), ("--ray, 1 worker", 1)]
    for row in data["rows"]:
        assert row["images"] == PHOTOS, "one record per photo"
        assert row["steady_images_per_second"] > 0 and row["end_to_end_images_per_second"] > 0
        assert 0 <= row["ready_s"] <= row["first_record_s"] <= row["total_s"]
        assert row["per_round_steady"] == [row["steady_images_per_second"]]
        assert row["vs_local"] == pytest.approx(row["steady_images_per_second"] / data["rows"][0]["steady_images_per_second"],
                                                abs=1e-3)
        assert "driver" in row["cpu_ms_per_image"]
    assert data["rows"][1]["engine"].startswith("ray (1 worker)")
    assert set(data["rows"][1]["cpu_ms_per_image"]) == {"driver", "workers", "ray_system"}
    [parity] = data["parity"]
    assert parity == {"config": "--ray, 1 worker", "images": PHOTOS, "same_images": True,
                      "same_status_and_labels": PHOTOS, "max_score_diff": parity["max_score_diff"], "identical": True}
    assert parity["max_score_diff"] <= 1e-5
    records = [json.loads(line) for line in (scratch / "1-0.jsonl").read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in records) == sorted(p.name for p in (small_data / "images").iterdir())
    md = (out / "r.md").read_text()
    assert "| local corel-infer |" in md and "| --ray, 1 worker |" in md and "Scaling model" in md
    assert re.search(rf"^\| --ray, 1 worker \| {PHOTOS} \| yes \| {PHOTOS} \| .* \| yes \|$", md, re.M)


def test_bench_ray_without_photos_is_a_one_line_error(bundles, tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    result = bench("ray", "-m", bundles["attention"][1], "--data", tmp_path / "empty", "--no-kill",
                   "--out-dir", tmp_path / "out", "--scratch", tmp_path / "scratch")
    assert_one_line_error(result, "no photos")
    assert not (tmp_path / "out").exists()


# --- corel-bench browser -------------------------------------------------------------------------------------

def test_bench_browser(bundles, small_data, tmp_path):
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright")
    out = tmp_path / "out"
    attention, cnn = bundles["attention"][1], bundles["cnn"][1]
    result = bench("browser", "-m", attention, "-m", cnn, "--data", small_data, "--threads", "1", "--repeats", 3,
                   "--timing-photos", 2, "--limit", 4, "--out-dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "browser.json").read_text())
    assert set(data) == {"command", "chromium", "latency", "parity", "encoder_gflops", "machine"}
    assert_machine(data, result, "fp32", out / "browser.md")
    assert data["chromium"].startswith("chromium ")
    names = [attention.name, cnn.name]
    assert [(r["bundle"], r["engine"], r["threads"]) for r in data["latency"]] == [
        (n, e, 1) for n in names for e in ("chromium wasm", "native onnxruntime-cpu")]
    for row in data["latency"]:
        assert 0 < row["encoder_p10"] <= row["encoder_ms"] <= row["encoder_p90"]
        assert row["end_to_end_ms"] > 0
        assert (row["ready_ms"] > 0) if row["engine"] == "chromium wasm" else row["ready_ms"] is None
    assert [(p["bundle"], p["decoding"]) for p in data["parity"]] == [
        (attention.name, "greedy"), (attention.name, "beam 3"), (cnn.name, "thresholds")]
    for p in data["parity"]:
        assert p["images"] == 4 and p["full_scale_images"] <= 4
        assert p["equal_label_sets"] == 1.0 and p["scores_within_1e3"] == 1.0, p
        assert 0 <= p["max_score_diff"] <= 1e-3
    assert set(data["encoder_gflops"]) == set(names) and all(v > 0 for v in data["encoder_gflops"].values())
    md = (out / "browser.md").read_text()
    assert md.startswith(f"Command: `{data['command']}`")
    assert sum(line.startswith(f"| {n} | ") for n in names for line in md.splitlines()) == 4 + 3


def test_bench_browser_missing_split_is_a_one_line_error(bundles, small_data, tmp_path):
    result = bench("browser", "-m", bundles["cnn"][1], "--data", small_data, "--split", "nosuch",
                   "--out-dir", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "nosuch" in result.stderr
    assert not (tmp_path / "out").exists()


def test_archive_bench_reports_every_engine_against_its_core_time_bound(bundles, small_data, tmp_path):
    """``corel-bench archive`` on six small camera files: one row per engine and encoding whose bound is the
    cores over the summed stage times, the files' mean size near the target, the levers and previews tables."""
    out = tmp_path / "results"
    done = bench("archive", "--checkpoint", bundles["attention"][0], "--data", small_data, "--images", PHOTOS,
                 "--size", "480x360", "--jpeg-mb", "0.08", "--precisions", "fp32", "--batch-size", 2,
                 "--rounds", 1, "--previews", "240x180", "--out-dir", tmp_path / "work", "--results", out)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "archive.json").read_text())
    cores = result["cores"]
    engines = {r["engine"] for r in result["rows"]}
    assert {"onnxruntime fp32", "auto"} <= engines
    assert {r["files"] for r in result["rows"]} == {"baseline", "progressive"}
    for row in result["rows"]:
        assert set(row["core_ms"]) == {"decode", "resize", "encoder", "decoder"}
        assert math.isclose(row["bound_photos_per_s"], cores * 1000 / sum(row["core_ms"].values()), rel_tol=1e-9)
        assert math.isclose(row["fraction_of_bound"], max(row["pipeline_photos_per_s"]) / row["bound_photos_per_s"])
    assert result["folders"]["baseline"]["progressive"] == 0 and result["folders"]["progressive"]["progressive"] == PHOTOS
    assert abs(result["folders"]["baseline"]["mean_mb"] - 0.08) < 0.02
    assert [lv["decoder"] for lv in result["levers"]][:2] == ["pillow", "simplejpeg"]
    previews = result["previews"]
    assert previews["photos"] == PHOTOS and 0 <= previews["labels_differ"] <= PHOTOS
    text = (out / "archive.md").read_text()
    assert "| auto |" in text and "of bound" in text and "--previews" in text
    assert text.splitlines()[-1] == markdown_line(result["machine"])
    bad = bench("archive", "--checkpoint", bundles["attention"][0], "--data", small_data, "--size", "big")
    assert bad.returncode == 2 and "expected WIDTHxHEIGHT" in bad.stdout + bad.stderr
