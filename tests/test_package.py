"""One installed top-level package, corel_annotate: in a built wheel and in the editable install."""
from __future__ import annotations

import importlib.util
import json
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
    for name in ("pyproject.toml", "README.md", "__init__.py", "__main__.py", "py.typed"):
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
    for member in ("corel_annotate/__init__.py", "corel_annotate/__main__.py", "corel_annotate/py.typed",
                   "corel_annotate/runtime/annotator.py",
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


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_console_script_enters_main_and_answers_version():
    import corel_annotate
    from corel_annotate import __main__ as entry

    project = _pyproject()["project"]
    assert corel_annotate.__version__ == project["version"]   # the installed metadata, read from pyproject here
    scripts = project["scripts"]
    assert set(scripts) == set(entry.BY_NAME)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module == "corel_annotate.__main__" and callable(getattr(entry, function)), target
        found = shutil.which(name, path=str(Path(sys.executable).parent))
        assert found, f"{name} is not installed beside {sys.executable}"
        result = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout, result.stderr) == (0, f"{name} {project['version']}\n", ""), name


def test_a_missing_extra_is_one_line_naming_it_and_exit_2(monkeypatch, capsys):
    from corel_annotate import __main__ as entry

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    for name in ("corel-train", "corel-export", "corel-bench"):
        with pytest.raises(SystemExit) as stopped:
            entry.run(name, ["--help"])
        assert stopped.value.code == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (f"error: {name} needs the [train] extra (torch is not installed): "
                                "pip install 'corel-annotate[train]'\n")
    # the runtime's scripts need no extra
    assert all(not entry.BY_NAME[n].needs for n in ("corel-infer", "corel-eval", "corel-web", "corel-synth"))
    # corel-serve checks its extra before it loads any bundle
    assert (entry.BY_NAME["corel-serve"].extra, entry.BY_NAME["corel-serve"].needs) == ("serve", ("pytriton",))


def test_python_m_lists_the_scripts_and_each_runtime_cli_runs_as_a_module():
    listed = subprocess.run([sys.executable, "-m", "corel_annotate"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0
    for name in _pyproject()["project"]["scripts"]:
        assert f"  {name}  " in listed.stdout, name
    for module in ("infer", "eval", "serve", "web"):
        result = subprocess.run([sys.executable, "-m", f"corel_annotate.runtime.cli.{module}", "--help"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "Usage" in result.stdout, (module, result.stdout[-500:], result.stderr[-500:])


def test_typed_licensed_and_the_changelog_names_every_format_version():
    from corel_annotate.runtime.bundle.manifest import READABLE_VERSIONS
    from corel_annotate.training.checkpoint import FORMAT_VERSION as CHECKPOINT_VERSION

    project = _pyproject()
    assert (REPO / "py.typed").is_file() and "py.typed" in project["tool"]["setuptools"]["package-data"]["corel_annotate"]
    package_json = json.loads((REPO / "runtime/web/package.json").read_text())
    assert project["project"]["license"]["text"] == package_json["license"] == "MIT"
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    changelog = (REPO / "CHANGELOG.md").read_text()
    for version in READABLE_VERSIONS:
        assert f"| bundle | {version} |" in changelog or f"| bundle (`corel-annotate/bundle`) | {version} |" in changelog
    assert f"| checkpoint (`corel-annotate/checkpoint`) | {CHECKPOINT_VERSION} |" in changelog
