"""One installed top-level package, corel_annotate: in a built wheel and in the editable install."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from pathlib import Path

from conftest import REPO

SUBPACKAGES = ("runtime", "training", "export", "benchmarks")


def test_wheel_holds_one_top_level_package(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "__init__.py"):
        shutil.copy(REPO / name, src / name)
    for name in SUBPACKAGES + ("tests",):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / "dist").glob("corel_annotate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"corel_annotate", next(t for t in tops if t.endswith(".dist-info"))}, tops
    info = next(t for t in tops if t.endswith(".dist-info"))
    assert zipfile.ZipFile(wheel).read(f"{info}/top_level.txt").decode().split() == ["corel_annotate"]
    for member in ("corel_annotate/__init__.py", "corel_annotate/runtime/annotator.py",
                   "corel_annotate/runtime/bundle/bundle.schema.json", "corel_annotate/training/models/attention.py",
                   "corel_annotate/export/bundle.py", "corel_annotate/benchmarks/cli.py",
                   "corel_annotate/runtime/web/index.html", "corel_annotate/runtime/web/annotator.js",
                   "corel_annotate/runtime/web/vendor/ort.wasm.min.mjs",
                   "corel_annotate/runtime/web/vendor/ort-wasm-simd-threaded.wasm"):
        assert member in names, member  # the browser runtime and onnxruntime-web ship inside the wheel
    assert not any("node_modules" in n for n in names)
    assert not any(n.startswith("corel_annotate/tests/") for n in names), "tests are not installed"
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    scripts = [line.split("=", 1)[1].strip() for line in entry_points.splitlines() if "=" in line]
    assert scripts and all(s.startswith("corel_annotate.") for s in scripts), scripts


def test_users_own_training_and_export_folders_do_not_shadow_ours(tmp_path):
    """A notebook beside its own ``training/`` and ``export/`` packages: our code still loads ours."""
    for name in ("training", "export", "runtime"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} package')\n")
    code = ("import sys; import corel_annotate.export.bundle, corel_annotate.benchmarks.cli; "
            "from corel_annotate import Annotator, DecodingConfig; "
            "from corel_annotate.training.trainer import train; "
            "print(Annotator.__module__, sorted(m for m in ('runtime', 'training', 'export', 'benchmarks') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["corel_annotate.runtime.annotator", "[]"]


def test_importing_the_runtime_api_does_not_import_torch():
    code = ("import sys; from corel_annotate import Annotator, load_manifest; import corel_annotate.runtime.cli.infer; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_no_tracked_file_over_2_mb():
    """onnxruntime-web and the bundles stay out of git: npm and make put them in ignored folders."""
    import subprocess

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    big = [f.decode() for f in files if f and (REPO / f.decode()).is_file() and (REPO / f.decode()).stat().st_size > 2 * 2**20]
    assert not big, big
