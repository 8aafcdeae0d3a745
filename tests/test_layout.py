"""The house rules of the source tree, checked on the source itself: the runtime's rooms import in one
direction, the bundle contract imports no imaging library or engine, the Triton client loads no
engine, training's method registry is a leaf, and nothing committed carries a machine's paths."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

RUNTIME = REPO / "runtime"

# The runtime's rooms, lowest first.  A module may import its own room and the rooms listed for it.
ROOMS: dict[str, tuple[str, ...]] = {
    "reasons": (),
    "bundle": (),
    "preprocessing": ("bundle",),
    "dataset": ("bundle",),
    "engines": ("bundle",),
    "photos": ("bundle", "preprocessing", "dataset"),
    "core": ("bundle", "preprocessing", "dataset", "engines", "photos"),
    "evaluation": ("bundle", "preprocessing", "dataset", "engines", "photos", "core"),
    "serve": ("bundle", "preprocessing", "dataset", "engines", "photos", "core"),
    "web": ("bundle",),
    "jobs": ("bundle", "preprocessing", "dataset", "engines", "photos", "core", "serve"),
    "cli": ("bundle", "preprocessing", "dataset", "engines", "photos", "core", "evaluation", "serve", "web", "jobs"),
}
CORE = {"annotator", "search", "decoder_state", "memory", "scoring"}
ENGINE_MODULES = {"onnxruntime", "openvino", "tensorrt", "cuda"}


def room_of(module: str) -> str:
    """``corel_annotate.runtime.jobs.local`` -> ``jobs``; the core's modules share the room ``core``."""
    first = module.split(".")[2]
    return "core" if first in CORE else first


def runtime_modules() -> dict[str, Path]:
    out = {}
    for path in RUNTIME.rglob("*.py"):
        if "node_modules" in path.parts:
            continue
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["corel_annotate", *parts])] = path
    return out


def imports_of(module: str, path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions, as absolute dotted names."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def test_the_rooms_cover_every_runtime_module() -> None:
    rooms = {room_of(m) for m in runtime_modules() if m.count(".") >= 2}
    assert rooms <= set(ROOMS), rooms - set(ROOMS)


@pytest.mark.parametrize("module", sorted(m for m in runtime_modules() if m.count(".") >= 2))
def test_runtime_imports_flow_one_way(module: str) -> None:
    room = room_of(module)
    allowed = {room, "reasons", *ROOMS[room]}
    known = runtime_modules()
    wrong = sorted(t for t in imports_of(module, known[module])
                   if t in known and t.count(".") >= 2 and room_of(t) not in allowed)
    assert not wrong, f"{module} (room {room}) imports {wrong}; {room} may import {sorted(allowed)}"


def test_the_bundle_contract_imports_no_imaging_library_or_engine() -> None:
    bundle = {m: p for m, p in runtime_modules().items() if m.count(".") >= 2 and room_of(m) == "bundle"}
    assert len(bundle) >= 6
    for module, path in bundle.items():
        roots = {name.split(".")[0] for name in imports_of(module, path)}
        assert not roots & (ENGINE_MODULES | {"PIL", "torch"}), f"{module} imports {sorted(roots & (ENGINE_MODULES | {'PIL', 'torch'}))}"


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_triton_client_loads_no_engine() -> None:
    loaded = _loaded_after("import corel_annotate.runtime.jobs.triton_job, corel_annotate.runtime.serve.tensors")
    assert not loaded & ENGINE_MODULES, sorted(loaded & ENGINE_MODULES)
    assert "corel_annotate" in loaded   # the import itself ran


def test_the_bundle_contract_loads_no_imaging_library_or_engine() -> None:
    loaded = _loaded_after("import corel_annotate.runtime.bundle.manifest, corel_annotate.runtime.bundle.facts, "
                           "corel_annotate.runtime.bundle.schema")
    assert not loaded & (ENGINE_MODULES | {"PIL", "torch"}), sorted(loaded & (ENGINE_MODULES | {"PIL", "torch"}))


def test_the_method_registry_is_a_leaf() -> None:
    """Data only: the registry imports neither torch nor the models nor the config; the factory does."""
    path = REPO / "training" / "registry.py"
    names = imports_of("corel_annotate.training.registry", path)
    assert not any(n.split(".")[0] == "torch" or n.startswith(("corel_annotate.training.models",
                                                                  "corel_annotate.training.config")) for n in names), names
    from corel_annotate.training.factory import MODEL_CLASSES
    from corel_annotate.training.registry import list_methods

    assert list(MODEL_CLASSES) == list_methods()


MACHINE_PATH = re.compile(r"(?<![\w.])(/root/|/home/\w|/tmp/|/work/|/Users/\w|[A-Z]:\\\\Users)")


def committed(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True).stdout.split()
    return [REPO / p for p in out]


def test_machine_path_pattern_catches_what_it_should() -> None:
    assert MACHINE_PATH.search('"data": "/root/shared/corel5k"')
    assert MACHINE_PATH.search("cache in /tmp/pytest-1/x")
    assert not MACHINE_PATH.search("--data ../shared/corel5k --out bench-out/tmp/x")


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout")
def test_nothing_committed_carries_a_machine_path() -> None:
    files = committed("README.md", "docs", "benchmarks/results")
    assert any(f.name == "README.md" for f in files)
    bad = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                bad.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not bad, "\n".join(bad[:20])
