"""``corel-infer`` and ``corel-eval``: the runtime's commands (numpy + onnxruntime + pillow, no torch)."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .preprocessing import MAX_PIXELS, display_path

console = Console(stderr=True, soft_wrap=True)
infer_app = typer.Typer(add_completion=False, help="Annotate photos with an exported bundle.")
eval_app = typer.Typer(add_completion=False, help="Evaluate an exported bundle on a Corel-layout split.")


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


class Format(str, Enum):
    jsonl = "jsonl"
    csv = "csv"
    json = "json"


def _progress(total: int, enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not enabled)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(2)


def _check_options(annotator, beam_width: int | None, top_k: int | None = None, threshold: float | None = None) -> None:
    """Refuse bad decoding options before any image is read (a ValueError, exit 2)."""
    if annotator.manifest.is_sequence:
        annotator.decoding_config(beam_width)
    else:
        from .scoring import check_options

        check_options(top_k, threshold)


@infer_app.command()
def infer(
    paths: List[Path] = typer.Argument(..., help="Image files, folders (searched recursively), .txt/.lst files "
                                       "listing one image path per line, or a Corel split file (DIR/test.json)."),
    model: Path = typer.Option(..., "--model", "-m", help="Bundle directory written by corel-export."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write results here (default: standard output)."),
    fmt: Format = typer.Option(Format.jsonl, "--format", help="jsonl (one record per line), csv, or json (one array)."),
    batch_size: int = typer.Option(8, help="Images per encoder call."),
    beam_width: Optional[int] = typer.Option(None, help="Recurrent bundles: beam width (default: the manifest's)."),
    top_k: Optional[int] = typer.Option(None, help="Score bundles: keep at most K labels per image."),
    threshold: Optional[float] = typer.Option(None, help="Score bundles: one threshold for every label "
                                              "(default: the manifest's per-label thresholds)."),
    attention_maps: Optional[Path] = typer.Option(None, help="Attention bundles: write a PNG overlay per emitted "
                                                  "label into this folder."),
    device: Device = typer.Option(Device.auto, help=DEVICE_HELP),
    precision: Precision = typer.Option(Precision.auto, help=PRECISION_HELP),
    threads: int = typer.Option(0, help="Engine threads (0: the engine's default)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first image that cannot be read."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run: keep the records already in "
                                "--output and annotate only the images without one."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file."),
    max_pixels: int = typer.Option(MAX_PIXELS, help="Refuse images with more pixels (decompression-bomb guard)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on standard error."),
) -> None:
    """Annotate photos. One record per image: {"image", "status": "ok"|"error", "labels", "scores"} or an
    "error" reason; bad files (corrupt, truncated, not images, special files, broken links, too large)
    get an error record and the run goes on. Each record is written and flushed as it is produced, so
    a killed run loses nothing: rerun it with --resume. Exit codes: 0 every image annotated, 1 some
    images failed, 2 bad bundle or arguments."""
    from .annotator import Annotator
    from .attention_maps import write_attention_maps
    from .inputs import collect_paths, prefetch_batches
    from .writers import ResultWriter, completed_images

    try:
        annotator = Annotator.load(model, device=device.value, threads=threads, precision=precision.value)
        _check_options(annotator, beam_width, top_k, threshold)
    except ValueError as exc:
        _fail(str(exc))
    if attention_maps is not None and not annotator.has_attention:
        _fail(f"--attention-maps needs a bundle whose decoder gives attention weights; {model} ({annotator.method}) "
              "has none")
    files = collect_paths(paths)
    if not files:
        _fail("no images found in " + ", ".join(map(str, paths)))
    done: set[str] = set()
    append = False
    if resume and output is None:
        _fail("--resume needs --output FILE")
    if output is not None and output.exists() and output.stat().st_size > 0:
        if resume:
            try:
                done = completed_images(output, fmt.value)
            except ValueError as exc:
                _fail(str(exc))
            append = True
        elif not overwrite:
            _fail(f"{output}: already exists; --resume continues it, --overwrite replaces it")
    todo = [f for f in files if display_path(f) not in done]
    if done:
        console.print(f"resuming: {len(files) - len(todo)} of {len(files)} images already have a record",
                      highlight=False, markup=False)
    stream = open(output, "a" if append else "w", encoding="utf-8") if output else sys.stdout
    writer = ResultWriter(stream, fmt.value, header=not append)
    failures = 0
    files = todo
    options = {"beam_width": beam_width} if annotator.manifest.is_sequence else {"top_k": top_k, "threshold": threshold}
    try:
        with _progress(len(files), progress and sys.stderr.isatty()) as bar:
            task = bar.add_task("annotating", total=len(files))
            for batch in prefetch_batches(files, annotator.preprocess_config, batch_size, max_pixels=max_pixels):
                for path, reason in batch.failed:
                    failures += 1
                    writer.write({"image": display_path(path), "status": "error", "error": reason})
                    if strict:
                        console.print(f"[red]error:[/red] {escape(reason)}", highlight=False)
                        raise typer.Exit(1)
                if batch.array is not None:
                    results = annotator.annotate_batch(batch.array, keep_alphas=attention_maps is not None, **options)
                    for path, result in zip(batch.paths, results):
                        writer.write({"image": display_path(path), "status": "ok", **result.to_dict()})
                        if attention_maps is not None:
                            write_attention_maps(path, result.labels, result.alphas, attention_maps)
                bar.advance(task, len(batch.paths) + len(batch.failed))
    finally:
        writer.close()
        if output:
            stream.close()
    console.print(f"{len(files) - failures}/{len(files)} images annotated in this run ({annotator.engine})"
                  + (f", {failures} failed" if failures else "") + (f"; results in {output}" if output else ""),
                  highlight=False, markup=False)
    raise typer.Exit(1 if failures else 0)


@eval_app.command()
def evaluate(
    model: Path = typer.Option(..., "--model", "-m", help="Bundle directory written by corel-export."),
    data: Path = typer.Option(..., "--data", help="Corel-layout directory (images/, SPLIT.json, vocabulary.txt)."),
    split: str = typer.Option("test", help="Which split file to evaluate: DATA/SPLIT.json."),
    beam_width: Optional[int] = typer.Option(None, help="Recurrent bundles: beam width (default: the manifest's)."),
    batch_size: int = typer.Option(16, help="Images per encoder call."),
    device: Device = typer.Option(Device.auto, help=DEVICE_HELP),
    precision: Precision = typer.Option(Precision.auto, help=PRECISION_HELP),
    threads: int = typer.Option(0, help="Engine threads (0: default)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on standard error."),
) -> None:
    """Run the runtime over a split and print the reference metrics: per-class and per-image precision,
    recall and F1, N+, and mAP for score-based bundles. Exit codes: 0 done, 2 bad bundle or data."""
    from .annotator import Annotator
    from .dataset import CorelDataset
    from .evaluation import evaluate_bundle

    try:
        annotator = Annotator.load(model, device=device.value, threads=threads, precision=precision.value)
        _check_options(annotator, beam_width)
        total = len(CorelDataset(data).read(split).samples)
        with _progress(total, progress and sys.stderr.isatty()) as bar:
            task = bar.add_task(f"evaluating {split}", total=total)
            result = evaluate_bundle(annotator, data, split, beam_width, batch_size, lambda k: bar.advance(task, k))
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        payload = {"bundle": str(model), "data": str(data), "split": split, "images": len(result.images),
                   "kind": annotator.kind, "method": annotator.method, "engine": annotator.engine, "seconds": round(result.seconds, 3), **result.metrics.to_dict()}
        typer.echo(json.dumps(payload, indent=1))
    else:
        typer.echo(f"{annotator.method} bundle {model} ({annotator.engine}) on {data}/{split}.json ({len(result.images)} images, "
                   f"{result.seconds:.1f}s)")
        typer.echo(result.metrics.format_table())
