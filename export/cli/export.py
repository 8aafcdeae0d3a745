"""``corel-export``: turn a checkpoint into an ONNX bundle that the torch-free runtime runs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from corel_annotate.runtime.cli import DefaultCommandGroup, console, fail, log

app = typer.Typer(add_completion=False, help=__doc__, cls=DefaultCommandGroup)


@app.command("bundle")
def main(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by corel-train."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle directory (default: CHECKPOINT with .bundle)."),
    opset: int = typer.Option(17, help="ONNX opset."),
    tolerance: float = typer.Option(1e-4, help="Largest allowed |ONNX - PyTorch| on any graph output."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle directory."),
    precision: str = typer.Option("fp32", help="fp32, fp16 (float16 weights and arithmetic, float32 inputs and "
                                  "outputs), or int8 (static QDQ encoder by NNCF, calibrated on photos and accuracy-controlled on "
                                  "the checkpoint's validation photos; dynamic int8 decoder step)."),
    max_drop: float = typer.Option(0.01, help="int8: largest per-class F1 drop from fp32 allowed on the validation "
                                   "photos; the most sensitive layers stay float until the bundle is within it."),
    calibration: Optional[Path] = typer.Option(None, help="int8: calibration photos (folder, files or list); "
                                               "default: a sample of 64 of the checkpoint's training images."),
    engine: Optional[str] = typer.Option(None, help="'tensorrt': also build TensorRT engines into the bundle "
                                         "(needs an NVIDIA GPU and the [gpu] extra); run them with --device tensorrt."),
    min_batch: int = typer.Option(1, help="TensorRT profile: smallest batch."),
    opt_batch: int = typer.Option(8, help="TensorRT profile: batch to optimise for."),
    max_batch: int = typer.Option(32, help="TensorRT profile: largest batch."),
    input_dtype: str = typer.Option("uint8", "--input-dtype", help="uint8: the encoder takes the resized photo's "
                                    "8-bit RGB pixels [batch, S, S, 3] and normalises them in the graph (faster; "
                                    "format 4). float32: the normalised [batch, 3, S, S] tensor of earlier bundles."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Give the bundle its label memory: the "
                                "checkpoint's training photos embedded by the exported encoder (kNN label transfer, "
                                "k, temperature and blend chosen on its validation photos; edit it later with "
                                "corel-memory). Skipped with a message when the training data is not here."),
) -> None:
    """Export the encoder (and, for recurrent methods, one decoder step) to ONNX, check each graph with
    onnx.checker, compare every output with PyTorch at batch sizes 1 and 5 (traced at 2), and write
    manifest.json with the sha256 of every file.

    Exit codes: 0 exported, 2 bad input or parity failure (nothing is written), 1 unexpected failure.

    Also: `corel-export conformance DIR` writes the conformance kit.
    """
    from ..bundle import export_bundle
    from ..tensorrt import EngineSettings

    try:
        path, manifest, _ = export_bundle(checkpoint, out, opset=opset, tolerance=tolerance, force=force,
                                          precision=precision, calibration=calibration, engine=engine, max_drop=max_drop, memory=memory,
                                          input_dtype=input_dtype,
                                          engine_settings=EngineSettings(min_batch, opt_batch, max_batch,
                                                                         fp16=precision == "fp16"),
                                          log=log)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"wrote {path} ({manifest.method}, {manifest.kind}, {manifest.precision}, graphs: {', '.join(manifest.graphs)})",
                  highlight=False, markup=False)


if __name__ == "__main__":
    app()


@app.command("conformance")
def conformance(
    out: Path = typer.Argument(..., help="The kit's folder (kit.json, bundles/, photos/)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
) -> None:
    """Write the conformance kit: small bundles of known graphs (a pixel probe, score rules, a recurrent
    decoder under every decoding rule), photos for every pixel rule, and the records a conforming
    runtime must write, from PyTorch and exhaustive search. Run a runtime on it with
    `corel-eval conformance DIR --runtime CMD`. Exit codes: 0 written, 2 bad input."""
    from ..conformance.kit import write_kit

    try:
        kit = write_kit(out, force=force, log=log)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"wrote {out}: {len(kit.runs)} bundles, {len(kit.cases)} cases", highlight=False, markup=False)
