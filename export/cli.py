"""``corel-export``: turn a checkpoint into an ONNX bundle that the torch-free runtime runs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by corel-train."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle directory (default: CHECKPOINT with .bundle)."),
    opset: int = typer.Option(17, help="ONNX opset."),
    tolerance: float = typer.Option(1e-4, help="Largest allowed |ONNX - PyTorch| on any graph output."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle directory."),
) -> None:
    """Export the encoder (and, for recurrent methods, one decoder step) to ONNX, check each graph with
    onnx.checker, compare every output with PyTorch at batch sizes 1 and 5 (traced at 2), and write
    manifest.json with the sha256 of every file.

    Exit codes: 0 exported, 2 bad input or parity failure (nothing is written), 1 unexpected failure.
    """
    from .bundle import export_bundle

    try:
        path, manifest, _ = export_bundle(checkpoint, out, opset=opset, tolerance=tolerance, force=force,
                                          log=lambda m: console.print(m, highlight=False))
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2)
    console.print(f"wrote {path} ({manifest.method}, graphs: {', '.join(manifest.graphs)})", highlight=False)


if __name__ == "__main__":
    app()
