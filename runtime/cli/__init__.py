"""What the runtime's console scripts share: one console on standard error, one ``fail`` (a one-line
error and exit 2), one progress bar, and the engine options.  One module per script beside it:
``infer`` (corel-infer), ``eval`` (corel-eval), ``serve`` (corel-serve), ``web`` (corel-web)."""
from __future__ import annotations

from enum import Enum
from typing import NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True, soft_wrap=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"
    openvino = "openvino"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


PRECISION_HELP = ("Arithmetic of --device openvino: fp32, or bf16 on CPUs with bfloat16 units (about 2x faster "
                  "encoder, per-class F1 within 0.004 of fp32 on miml-scenes and Corel-5k). auto: bf16 where the "
                  "CPU has it with OpenVINO, else fp32. The engine that ran is printed and recorded.")
DEVICE_HELP = ("auto (default): OpenVINO when installed (pip install 'corel-annotate[openvino]'; the fastest "
               "measured CPU engine), else onnxruntime on the CPU. cpu/cuda/tensorrt: onnxruntime's execution "
               "providers (a missing one falls back to the CPU with a message). openvino: OpenVINO on the CPU.")


class TagMode(str, Enum):
    xmp = "xmp"
    embed = "embed"
    txt = "txt"


class Sidecar(str, Enum):
    append = "append"
    replace = "replace"


class Format(str, Enum):
    jsonl = "jsonl"
    csv = "csv"
    json = "json"


class DefaultCommandGroup(TyperGroup):
    """A script with a main command and a few named ones (``corel-eval conformance KIT``): anything
    that does not start with a command's name goes to the first command, so ``corel-eval --model B``
    and ``corel-eval --help`` stay what they were."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = [next(iter(self.commands)), *args]
        return super().parse_args(ctx, args)


def progress_bar(total: int, enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not enabled)


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(2)


def log(message: str) -> None:
    """One line on standard error, printed as given (no markup, no highlighting)."""
    console.print(message, highlight=False, markup=False)
