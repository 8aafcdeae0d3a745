"""``corel-export`` and ``corel-eval`` on bad input (in this process, and as the installed console scripts
for a missing checkpoint and a graph onnxruntime cannot load): the documented
exit code (2: bad input, nothing written), one ``error:`` line on standard error naming the file or the
value at fault, nothing on standard output, and no Python traceback.

Documented codes: corel-export "0 exported, 2 bad input or parity failure (nothing is written), 1
unexpected failure"; corel-eval "0 done, 2 bad bundle or data" (their --help and docs/)."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import REPO

BIN = Path(sys.executable).parent


def script(name: str) -> list[str]:
    found = shutil.which(name, path=str(BIN))
    if found is None:
        pytest.skip(f"{name} is not installed in {BIN} (pip install -e .)")
    return [found]


def run_script(name: str, *args) -> subprocess.CompletedProcess:
    """The installed console script in a child process: what a user's shell sees."""
    return subprocess.run([*script(name), *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300)


APPS = {"corel-export": ("corel_annotate.export.cli.export", "app"), "corel-eval": ("corel_annotate.runtime.cli.eval", "eval_app")}


def run(name: str, *args) -> subprocess.CompletedProcess:
    """The same command in this process (a child would spend seconds importing torch each time): an
    exception that escapes the command is reported as the traceback a user would see."""
    module, attr = APPS[name]
    result = CliRunner().invoke(getattr(importlib.import_module(module), attr), [str(a) for a in args])
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += f"Traceback (most recent call last): {result.exception!r}\n"
    return subprocess.CompletedProcess([name, *map(str, args)], result.exit_code, result.stdout, stderr)


def assert_one_line_error(result: subprocess.CompletedProcess, *names: str, code: int = 2) -> str:
    """Exit ``code``; standard error is exactly one line, ``error: ...``, naming each of ``names``."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert result.stdout.strip() == ""
    return lines[0]


def assert_usage_error(result: subprocess.CompletedProcess, option: str) -> None:
    """A value the option's type refuses: click's usage error (exit 2) naming the option, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Invalid value for '{option}'" in result.stderr


def assert_nothing_written(parent: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{out.name}.")], "a temporary bundle was left"


# --- corel-export ----------------------------------------------------------------------------------------------

def test_export_missing_checkpoint(tmp_path):
    missing = tmp_path / "nosuch.ckpt"
    assert_one_line_error(run_script("corel-export", missing, "-o", tmp_path / "out.bundle"), str(missing), "does not exist")
    assert_nothing_written(tmp_path, tmp_path / "out.bundle")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("kind", ["text", "truncated", "tensors", "pickle", "folder"])
def test_export_a_file_that_is_not_a_checkpoint(bundles, tmp_path, kind):
    path = tmp_path / "model.ckpt"
    if kind == "text":                           # the safe unpickler says "Unsupported operand": unreadable
        path.write_text("not a checkpoint\n")
        reason = "not a readable checkpoint"
    elif kind == "truncated":                    # a real checkpoint cut short
        path.write_bytes(bundles["cnn"][0].read_bytes()[:4096])
        reason = "not a readable checkpoint"
    elif kind == "tensors":                      # a torch file, but not one corel-train wrote
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
        reason = "not a corel-annotate checkpoint"
    elif kind == "pickle":                       # needs code to unpickle: refused, never run
        torch.save({"format": "corel-annotate/checkpoint", "config": _RunsCode()}, path)
        reason = "refused, the file holds pickled objects beyond tensors"
    else:
        path.mkdir()
        reason = "does not exist"
    out = tmp_path / "out.bundle"
    line = assert_one_line_error(run("corel-export", path, "-o", out), str(path), reason)
    assert "weights_only" not in line, "no advice to load the file unsafely"
    assert_nothing_written(tmp_path, out)


def test_export_refuses_an_existing_output_without_force(bundles, tmp_path):
    out = tmp_path / "existing.bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(run("corel-export", bundles["cnn"][0], "-o", out, "--no-memory"), str(out), "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".existing.bundle.")]


@pytest.mark.parametrize("option,value,named", [("--precision", "fp64", "fp64"), ("--input-dtype", "int4", "int4"),
                                                 ("--engine", "onnx", "onnx")])
def test_export_bad_option_value(bundles, tmp_path, option, value, named):
    out = tmp_path / "out.bundle"
    assert_one_line_error(run("corel-export", bundles["cnn"][0], "-o", out, option, value), named)
    assert_nothing_written(tmp_path, out)


def test_export_option_of_the_wrong_type(bundles, tmp_path):
    out = tmp_path / "out.bundle"
    assert_usage_error(run("corel-export", bundles["cnn"][0], "-o", out, "--opset", "seventeen"), "--opset")
    assert_nothing_written(tmp_path, out)


# --- corel-eval ------------------------------------------------------------------------------------------------

def _rehash(bundle: Path, name: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def corrupt(bundle: Path, how: str) -> tuple[str, str]:
    """Damage a copy of a bundle; returns (the file the error must name, words it must say)."""
    if how == "changed graph":                 # bytes appended: the sha256 no longer matches
        with open(bundle / "encoder.onnx", "ab") as f:
            f.write(b"garbage")
        return str(bundle / "encoder.onnx"), "sha256"
    if how == "missing graph":
        (bundle / "encoder.onnx").unlink()
        return str(bundle / "encoder.onnx"), ""
    if how == "manifest not JSON":
        (bundle / "manifest.json").write_text("{not json")
        return str(bundle / "manifest.json"), "manifest"
    if how == "graph not ONNX":                # its sha256 recorded, so it reaches onnxruntime
        (bundle / "encoder.onnx").write_bytes(b"\x08\x07 this is not a protobuf")
        _rehash(bundle, "encoder.onnx")
        return str(bundle / "encoder.onnx"), "onnxruntime cannot load"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["changed graph", "missing graph", "manifest not JSON", "graph not ONNX"])
def test_eval_corrupt_bundle(bundles, synth_data, tmp_path, how):
    bundle = Path(shutil.copytree(bundles["cnn"][1], tmp_path / "cnn.bundle"))
    named, words = corrupt(bundle, how)
    runner = run_script if how == "graph not ONNX" else run   # onnxruntime's own output reaches the real stderr
    result = runner("corel-eval", "--model", bundle, "--data", synth_data, "--device", "cpu", "--precision", "fp32",
                    "--no-progress")
    assert_one_line_error(result, named, words)


def test_eval_missing_bundle(synth_data, tmp_path):
    missing = tmp_path / "nosuch.bundle"
    assert_one_line_error(run("corel-eval", "-m", missing, "--data", synth_data, "--device", "cpu", "--no-progress"),
                          str(missing))


def test_eval_missing_data_folder(bundles, tmp_path):
    missing = tmp_path / "nodata"
    result = run("corel-eval", "-m", bundles["cnn"][1], "--data", missing, "--device", "cpu", "--no-progress")
    assert_one_line_error(result, str(missing), "does not exist")


def test_eval_missing_split(bundles, synth_data):
    result = run("corel-eval", "-m", bundles["cnn"][1], "--data", synth_data, "--split", "nosuch", "--device", "cpu",
                 "--no-progress")
    assert_one_line_error(result, str(synth_data / "nosuch.json"))


@pytest.mark.parametrize("args,named", [(["--beam-width", "0"], "beam width"), (["--batch-size", "0"], "batch size"),
                                        (["--precision", "bf16"], "--precision bf16 needs --device openvino")])
def test_eval_bad_option_value(bundles, synth_data, args, named):
    result = run("corel-eval", "-m", bundles["attention"][1], "--data", synth_data, "--device", "cpu", *args,
                 "--no-progress")
    assert_one_line_error(result, named)


@pytest.mark.parametrize("option,value", [("--device", "gpu"), ("--batch-size", "many")])
def test_eval_option_of_the_wrong_type(bundles, synth_data, option, value):
    assert_usage_error(run("corel-eval", "-m", bundles["cnn"][1], "--data", synth_data, option, value), option)
