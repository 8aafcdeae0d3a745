"""``python -m corel_annotate``: the console scripts, what each does and which extra it needs.

Every console script enters here first (``[project.scripts]`` points at the functions below):
``--version`` is answered before anything is imported, and a script whose extra is not installed
says which one in one line (exit 2) instead of failing with a traceback on ``import torch``."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Optional

EXIT_MISSING_EXTRA = 2


@dataclass(frozen=True)
class Script:
    """A console script: the typer app it runs (``module:attribute``), a one-line summary, and the
    extra whose modules it imports (None: the runtime-only install runs it)."""

    name: str
    app: str
    summary: str
    extra: Optional[str] = None
    needs: tuple[str, ...] = ()


SCRIPTS: tuple[Script, ...] = (
    Script("corel-infer", "corel_annotate.runtime.cli.infer:infer_app", "annotate photos with a bundle (JSONL/CSV, tags)"),
    Script("corel-eval", "corel_annotate.runtime.cli.eval:eval_app",
           "metrics of a bundle on a Corel-layout split; the conformance kit"),
    Script("corel-web", "corel_annotate.runtime.cli.web:web_app", "the browser page on a bundle and a photo folder"),
    Script("corel-serve", "corel_annotate.runtime.cli.serve:serve_app", "serve bundles with Triton",
           "serve", ("pytriton",)),
    Script("corel-synth", "corel_annotate.training.cli.synth:app", "generate a synthetic Corel-layout data set"),
    Script("corel-train", "corel_annotate.training.cli.train:app", "train an annotation model into a checkpoint",
           "train", ("torch", "timm")),
    Script("corel-export", "corel_annotate.export.cli.export:app", "a checkpoint to a bundle; the conformance kit",
           "train", ("torch", "onnx")),
    Script("corel-memory", "corel_annotate.export.cli.memory:app", "add or remove labels in a bundle's label memory",
           "train", ("onnx",)),
    Script("corel-plot", "corel_annotate.training.cli.plot:app", "plots of a checkpoint's training and embeddings",
           "train", ("torch", "matplotlib")),
    Script("corel-augment", "corel_annotate.training.cli.augment:app", "ML-WGAN generated training images",
           "train", ("torch",)),
    Script("corel-bench", "corel_annotate.benchmarks.cli:app", "speed and accuracy benchmarks", "train", ("torch",)),
)
BY_NAME = {s.name: s for s in SCRIPTS}


def version() -> str:
    """The installed distribution's version (``0+unknown`` when running from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("corel-annotate")
    except PackageNotFoundError:
        return "0+unknown"


def missing_modules(script: Script) -> list[str]:
    """The modules of the script's extra that this environment lacks."""
    return [m for m in script.needs if importlib.util.find_spec(m) is None]


def run(name: str, argv: Optional[list[str]] = None) -> None:
    """Run console script ``name``: ``--version``, the extra's one-line check, then the typer app."""
    script = BY_NAME[name]
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:
        print(f"{name} {version()}")
        raise SystemExit(0)
    missing = missing_modules(script)
    if missing:
        print(f"error: {name} needs the [{script.extra}] extra ({', '.join(missing)} is not installed): "
              f"pip install 'corel-annotate[{script.extra}]'", file=sys.stderr)
        raise SystemExit(EXIT_MISSING_EXTRA)
    module, attribute = script.app.split(":")
    app = getattr(importlib.import_module(module), attribute)
    app(args=args, prog_name=name)


def infer() -> None: run("corel-infer")
def eval() -> None: run("corel-eval")  # noqa: A001 - the script's name
def web() -> None: run("corel-web")
def serve() -> None: run("corel-serve")
def synth() -> None: run("corel-synth")
def train() -> None: run("corel-train")
def export() -> None: run("corel-export")
def memory() -> None: run("corel-memory")
def plot() -> None: run("corel-plot")
def augment() -> None: run("corel-augment")
def bench() -> None: run("corel-bench")


def main() -> None:
    """List the console scripts (``python -m corel_annotate``)."""
    print(f"corel-annotate {version()}: train image annotation models, export them to ONNX bundles, run them anywhere.\n")
    width = max(len(s.name) for s in SCRIPTS)
    for s in SCRIPTS:
        missing = missing_modules(s)
        note = f"  (needs pip install 'corel-annotate[{s.extra}]')" if missing else ""
        print(f"  {s.name:<{width}}  {s.summary}{note}")
    print("\nEach takes --help and --version.")


if __name__ == "__main__":
    main()
