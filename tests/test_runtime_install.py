"""The runtime-only install (``pip install .``, no extras), as most users get it.

``make test`` runs these in its second stage (``make test-runtime``): a fresh virtual environment with
the package installed from the source tree and nothing else but pytest, ``COREL_RUNTIME_ONLY=1``, and
``COREL_KIT`` pointing at the conformance kit that the first stage's full install wrote.  In the full
install they are skipped, with that reason; the rest of the ``runtime``-marked tests run in both."""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import corel_annotate

pytestmark = [pytest.mark.runtime,
              pytest.mark.skipif(os.environ.get("COREL_RUNTIME_ONLY") != "1",
                                 reason="runs in make test's runtime-only stage (make test-runtime)")]

BIN = Path(sys.executable).parent


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("module", ["torch", "onnx", "pytriton", "timm", "openvino", "ray"])
def test_the_install_brings_no_training_serving_or_optional_engine(module):
    assert importlib.util.find_spec(module) is None, f"{module} is importable in the runtime-only install"


def test_the_install_runs_on_numpy_2():
    import numpy

    assert int(numpy.__version__.split(".")[0]) >= 2, numpy.__version__


def test_the_package_is_installed_not_read_from_the_source_tree():
    assert "site-packages" in Path(corel_annotate.__file__).parts, corel_annotate.__file__
    assert corel_annotate.__version__ != "0+unknown"


@pytest.mark.parametrize("name", ["corel-infer", "corel-eval", "corel-web", "corel-train"])
def test_every_command_answers_its_version(name):
    done = script(name, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{name} {corel_annotate.__version__}"


@pytest.mark.parametrize("name,args,extra", [
    ("corel-train", ["--help"], "train"),
    ("corel-export", ["model.ckpt"], "train"),
    ("corel-bench", ["latency"], "train"),
    ("corel-serve", ["--help"], "serve"),
])
def test_a_command_whose_extra_is_missing_says_which_in_one_line(name, args, extra):
    done = script(name, *args)
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert f"pip install 'corel-annotate[{extra}]'" in lines[0] and "Traceback" not in lines[0]


def test_the_runtime_only_corel_infer_passes_the_conformance_kit(tmp_path):
    """The first stage's kit (bundles of every kind, photos for every pixel rule, the records a conforming
    runtime writes), run with this install's corel-eval and corel-infer on onnxruntime."""
    kit = Path(os.environ["COREL_KIT"])
    runtime = (f"{shlex.quote(str(BIN / 'corel-infer'))} {{photos}} --model {{bundle}} -o {{out}} --overwrite "
               "--no-progress --device cpu")
    done = script("corel-eval", "conformance", str(kit), "--runtime", runtime, "--jobs", "2", "--json")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    verdicts = json.loads(done.stdout)
    assert len(verdicts["cases"]) >= 10 and verdicts["passed"] == len(verdicts["cases"])
