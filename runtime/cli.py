"""``corel-infer`` and ``corel-eval``: the runtime's commands (numpy + onnxruntime + pillow, no torch)."""
from __future__ import annotations

import json
import re
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperCommand

from .preprocessing import MAX_PIXELS

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
    if annotator.kind == "sequence":
        annotator.decoding_config(beam_width)
    else:
        from .scoring import check_options

        check_options(top_k, threshold)


class _RayOptionCommand(TyperCommand):
    """``corel-infer`` with ``--ray`` taking an optional value (typer has no optional-value options):
    ``--ray`` followed by nothing, by another option or by something that is not a Ray address
    (``ray://...``, ``HOST:PORT``, ``auto``, ``local``) means ``--ray=local``."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _ray_flag(list(args)))


_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.\-]+:\d+)$")


def _ray_flag(args: list[str]) -> list[str]:
    out = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        nxt = args[i + 1] if i + 1 < len(args) else None
        out.append("--ray=local" if arg == "--ray" and (nxt is None or not _RAY_ADDRESS.match(nxt)) else arg)
    return out


@infer_app.command(cls=_RayOptionCommand)
def infer(
    paths: List[str] = typer.Argument(..., help="Image files, folders (searched recursively), .txt/.lst files "
                                      "listing one image path per line, or a Corel split file (DIR/test.json). "
                                      "With --ray also a URI Ray reads (file:///data/photos, s3://bucket/photos)."),
    model: str = typer.Option(..., "--model", "-m", help="Bundle directory written by corel-export; with "
                              "--server, the model's name on the server (corel-serve prints it)."),
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
    server: Optional[str] = typer.Option(None, "--server", help="Annotate on a corel-serve (Triton) server at "
                                         "this URL (http://HOST:8000 or grpc://HOST:8001) instead of in this "
                                         "process; same records, --resume and error records."),
    in_flight: int = typer.Option(4, help="--server: most requests in flight at once, each of --batch-size photos."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]",
                                      help="Run on Ray Data: --ray alone starts a local Ray sized to this "
                                      "machine, --ray ADDRESS (ray://HOST:10001, HOST:6379 or auto) joins a "
                                      "cluster. Needs pip install 'corel-annotate[ray]'."),
    workers: int = typer.Option(0, help="--ray: Annotator actors (0: one per CPU of the cluster)."),
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
    from .attention_maps import write_attention_maps
    from .infer_job import InferOptions, RecordOutput, local_records

    if server is not None and ray is not None:
        _fail("--server and --ray are two ways to run the job; choose one")
    options = InferOptions(beam_width, top_k, threshold, attention_maps is not None, batch_size, max_pixels)
    uris = [p for p in paths if "://" in p]
    if uris and ray is None:
        _fail(f"{uris[0]}: a URI input needs --ray (Ray reads it); give a local path otherwise")
    files = _collect([p for p in paths if "://" not in p])
    if not files and not uris:
        _fail("no images found in " + ", ".join(map(str, paths)))
    try:
        out = RecordOutput(output, fmt.value, resume, overwrite)
    except ValueError as exc:
        _fail(str(exc))
    engine = ""
    try:
        if server is not None:
            from .triton_client import TritonJob

            job = TritonJob.connect(server, model, in_flight)
        elif ray is not None:
            from .ray_job import RayJob

            job = RayJob.start(ray, Path(model), device.value, precision.value, workers)
        else:
            from .annotator import Annotator

            job = Annotator.load(Path(model), device=device.value, threads=threads, precision=precision.value)
        _check_job(job, beam_width, top_k, threshold, attention_maps, model)
    except ValueError as exc:
        out.close()
        _fail(str(exc))
    todo = out.todo(files)
    if out.resumed:
        have = f"{len(files) - len(todo)} of {len(files)}" if files else str(out.resumed)
        console.print(f"resuming: {have} images already have a record", highlight=False, markup=False)
    try:
        with _progress(len(todo), progress and sys.stderr.isatty()) as bar:
            task = bar.add_task("annotating", total=len(todo) or None)
            if server is not None or ray is not None:
                produced = job.records(todo, options, uris=uris, done=out.done) if ray is not None \
                    else job.records(todo, options)
            else:
                produced = local_records(job, todo, options)
            for item in produced:
                if not out.write(item.record):
                    continue
                if item.failed and strict:
                    console.print(f"[red]error:[/red] {escape(item.record['error'])}", highlight=False)
                    raise typer.Exit(1)
                if attention_maps is not None and item.alphas is not None:
                    write_attention_maps(item.path, item.record["labels"], item.alphas, attention_maps)
                bar.advance(task, 1)
        engine = job.engine
    except ValueError as exc:
        _fail(str(exc))
    finally:
        out.close()
        if hasattr(job, "close"):
            job.close()
    console.print(f"{out.written - out.failures}/{out.written} images annotated in this run ({engine})"
                  + (f", {out.failures} failed" if out.failures else "") + (f"; results in {output}" if output else ""),
                  highlight=False, markup=False)
    raise typer.Exit(1 if out.failures else 0)


def _collect(paths: list[str]) -> list[Path]:
    from .inputs import collect_paths

    return collect_paths(paths)


def _check_job(job, beam_width: int | None, top_k: int | None, threshold: float | None,
               attention_maps: Path | None, model: str) -> None:
    """Refuse options the job's bundle cannot honour before any image is read (ValueError, exit 2)."""
    _check_options(job, beam_width, top_k, threshold)
    if attention_maps is not None and not job.has_attention:
        raise ValueError(f"--attention-maps needs a bundle whose decoder gives attention weights; {model} "
                         f"({job.method}) has none")


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
