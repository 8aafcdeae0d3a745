"""The GPU engines on a machine without them, and (marked ``gpu``) with them.

Without TensorRT: ``corel-export --engine tensorrt`` and ``corel-infer --device tensorrt`` on a bundle with
TensorRT engines stop with exit 2 and one line saying what is missing and how to install it (docs/export.md:
"elsewhere it stops with a one-line message"), and ``Annotator.load`` raises that message.  Without
onnxruntime's CUDA or TensorRT provider: ``--device cuda`` / ``--device tensorrt`` on a plain bundle fall
back to the CPU with one warning line naming the missing provider (the --device help: "a missing one falls
back to the CPU with a message"), and the engine printed and recorded is the CPU, the one that ran."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from conftest import REPO
from corel_annotate.runtime.annotator import Annotator

BIN = Path(sys.executable).parent
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
PROVIDERS = set(ort.get_available_providers())
INSTALL = "pip install 'corel-annotate[gpu]'"


def run(name: str, *args) -> subprocess.CompletedProcess:
    exe = shutil.which(name, path=str(BIN))
    if exe is None:
        pytest.skip(f"{name} is not installed in {BIN} (pip install -e .)")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300)


def one_line(result: subprocess.CompletedProcess, prefix: str) -> str:
    """The one line of standard error that starts with ``prefix``; no traceback anywhere."""
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, result.stderr
    return lines[0]


def records(path: Path) -> dict[str, dict]:
    return {Path(r["image"]).name: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def photos(synth_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu-photos")
    for p in sorted((synth_data / "images").iterdir())[:4]:
        shutil.copy(p, out / p.name)
    return out


@pytest.fixture(scope="module")
def engine_bundle(bundles, tmp_path_factory) -> Path:
    """The attention bundle with an ``engines`` section as ``corel-export --engine tensorrt`` writes it (one
    plan per graph, each with its sha256); the plans are stand-ins, so the bundle is only for machines
    where TensorRT is missing: it must be refused before any plan is read."""
    bundle = Path(shutil.copytree(bundles["attention"][1], tmp_path_factory.mktemp("trt") / "attention.bundle"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engines"] = {}
    for name, spec in manifest["graphs"].items():
        plan = bundle / f"{name}.engine"
        plan.write_bytes(b"stand-in for a TensorRT plan of " + spec["file"].encode())
        manifest["engines"][name] = {"file": plan.name, "onnx": spec["file"], "tensorrt": "10.0.0", "device": "unknown",
                                     "min_batch": 1, "opt_batch": 8, "max_batch": 32, "fp16": False, "workspace_mib": 1024}
        manifest["files"][plan.name] = hashlib.sha256(plan.read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return bundle


# --- without TensorRT ------------------------------------------------------------------------------------------

@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here: see the gpu tests")
def test_export_engine_tensorrt_is_refused_in_one_line(bundles, tmp_path):
    out = tmp_path / "trt.bundle"
    result = run("corel-export", bundles["attention"][0], "-o", out, "--engine", "tensorrt", "--no-memory")
    assert result.returncode == 2, result.stderr
    line = one_line(result, "error: ")
    assert "TensorRT is not installed" in line and INSTALL in line
    assert result.stderr.strip() == line and result.stdout.strip() == ""
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == [], "nothing is written"


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here: see the gpu tests")
def test_infer_device_tensorrt_with_engines_is_refused_in_one_line(engine_bundle, photos, tmp_path):
    out = tmp_path / "records.jsonl"
    result = run("corel-infer", photos, "-m", engine_bundle, "--device", "tensorrt", "-o", out, "--no-progress")
    assert result.returncode == 2, result.stderr
    line = one_line(result, "error: ")
    assert "--device tensorrt" in line and "needs TensorRT" in line and INSTALL in line
    assert not out.exists() or out.read_text() == "", "no record is written"
    with pytest.raises(ValueError, match=r"--device tensorrt with engines needs TensorRT: pip install"):
        Annotator.load(engine_bundle, device="tensorrt")
    # the same bundle still runs on the CPU: the engines are optional
    ok = run("corel-infer", photos, "-m", engine_bundle, "--device", "cpu", "-o", tmp_path / "cpu.jsonl", "--no-progress")
    assert ok.returncode == 0, ok.stderr
    assert len(records(tmp_path / "cpu.jsonl")) == 4


@pytest.mark.parametrize("device,provider", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")])
def test_missing_provider_falls_back_to_the_cpu_with_one_warning(bundles, photos, tmp_path, device, provider):
    if provider in PROVIDERS:
        pytest.skip(f"onnxruntime has {provider} here: see the gpu tests")
    bundle = bundles["attention"][1]
    out, ref = tmp_path / f"{device}.jsonl", tmp_path / "cpu.jsonl"
    result = run("corel-infer", photos, "-m", bundle, "--device", device, "-o", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    warning = one_line(result, "warning: ")
    assert f"--device {device}" in warning and f"no {provider}" in warning and "running on CPUExecutionProvider" in warning
    assert not [line for line in result.stderr.splitlines() if line.startswith("error")]
    summary = one_line(result, "4/4 images annotated")
    assert "(onnxruntime-cpu fp32)" in summary, "the engine named is the one that ran"
    assert run("corel-infer", photos, "-m", bundle, "--device", "cpu", "-o", ref, "--no-progress").returncode == 0
    got, want = records(out), records(ref)
    assert got.keys() == want.keys() and all(got[k]["labels"] == want[k]["labels"] for k in want)
    annotator = Annotator.load(bundle, device=device)
    assert annotator.sessions["encoder"].get_providers()[0] == "CPUExecutionProvider"
    assert annotator.engine == "onnxruntime-cpu fp32"


# --- with them: run for real -----------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT is not installed (an NVIDIA GPU and " + INSTALL + ")")
def test_tensorrt_engines_build_and_run(bundles, photos, tmp_path):
    out = tmp_path / "trt.bundle"
    result = run("corel-export", bundles["attention"][0], "-o", out, "--engine", "tensorrt", "--no-memory")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["engines"]) == set(manifest["graphs"])
    assert all((out / e["file"]).is_file() and e["file"] in manifest["files"] for e in manifest["engines"].values())
    trt, cpu = tmp_path / "trt.jsonl", tmp_path / "cpu.jsonl"
    result = run("corel-infer", photos, "-m", out, "--device", "tensorrt", "-o", trt, "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "error:" not in result.stderr
    assert run("corel-infer", photos, "-m", out, "--device", "cpu", "-o", cpu, "--no-progress").returncode == 0
    got, want = records(trt), records(cpu)
    assert got.keys() == want.keys() and all(r["status"] == "ok" for r in got.values())
    assert sum(got[k]["labels"] == want[k]["labels"] for k in want) >= 3, "TensorRT (TF32) labels as the CPU's"


@pytest.mark.gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in PROVIDERS, reason="onnxruntime has no CUDAExecutionProvider "
                    "(pip install onnxruntime-gpu on an NVIDIA machine)")
def test_cuda_provider_runs(bundles, photos, tmp_path):
    bundle = bundles["attention"][1]
    cuda, cpu = tmp_path / "cuda.jsonl", tmp_path / "cpu.jsonl"
    result = run("corel-infer", photos, "-m", bundle, "--device", "cuda", "-o", cuda, "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning:" not in result.stderr and "Traceback" not in result.stderr
    assert "(onnxruntime-cuda fp32)" in one_line(result, "4/4 images annotated")
    assert run("corel-infer", photos, "-m", bundle, "--device", "cpu", "-o", cpu, "--no-progress").returncode == 0
    got, want = records(cuda), records(cpu)
    assert got.keys() == want.keys() and sum(got[k]["labels"] == want[k]["labels"] for k in want) >= 3
    assert Annotator.load(bundle, device="cuda").engine == "onnxruntime-cuda fp32"
