"""``corel-eval``: the reference metrics of a bundle on a Corel-layout split (``python -m
corel_annotate.runtime.cli.eval`` is the same)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from . import DEVICE_HELP, PRECISION_HELP, DefaultCommandGroup, Device, Precision, fail, log, progress_bar

eval_app = typer.Typer(add_completion=False, cls=DefaultCommandGroup,
                       help="Evaluate an exported bundle on a Corel-layout split, or a runtime on the conformance kit.")


@eval_app.command("evaluate")
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
    recall and F1, N+, and mAP for score-based bundles. Exit codes: 0 done, 2 bad bundle or data.

    Also: `corel-eval conformance KIT --runtime CMD` checks a runtime against the conformance kit."""
    from ..annotator import Annotator
    from ..dataset import CorelDataset
    from ..evaluation.runner import evaluate_bundle

    try:
        annotator = Annotator.load(model, device=device.value, threads=threads, precision=precision.value)
        annotator.check_overrides(beam_width)
        if annotator.engine_note:
            log(annotator.engine_note)
        total = len(CorelDataset(data).read(split).samples)
        with progress_bar(total, progress and sys.stderr.isatty()) as bar:
            task = bar.add_task(f"evaluating {split}", total=total)
            result = evaluate_bundle(annotator, data, split, beam_width, batch_size, lambda k: bar.advance(task, k))
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        payload = {"bundle": str(model), "data": str(data), "split": split, "images": len(result.images),
                   "kind": annotator.kind, "method": annotator.method, "engine": annotator.engine, "seconds": round(result.seconds, 3), **result.metrics.to_dict()}
        typer.echo(json.dumps(payload, indent=1))
    else:
        typer.echo(f"{annotator.method} bundle {model} ({annotator.engine}) on {data}/{split}.json ({len(result.images)} images, "
                   f"{result.seconds:.1f}s)")
        typer.echo(result.metrics.format_table())


@eval_app.command("conformance")
def conformance(
    kit: Path = typer.Argument(..., help="A kit written by `corel-export conformance DIR`."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="The runtime under test: a shell command with "
                                          "{bundle}, {photos} and {out}, writing one JSON record per photo "
                                          "({\"image\", \"status\", \"labels\", \"scores\"}) to {out}. Default: this "
                                          "package's corel-infer (with --device)."),
    device: Device = typer.Option(Device.cpu, help="The default runtime's --device (ignored with --runtime)."),
    work: Optional[Path] = typer.Option(None, help="Keep the runtime's records here (default: a temporary folder)."),
    timeout: float = typer.Option(600.0, help="Seconds each run of the runtime may take."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Runs of the runtime at a time."),
    only: Optional[str] = typer.Option(None, "--only", help="Only the runs whose name starts with this (probe-, scores-, seq-)."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdicts as JSON."),
) -> None:
    """Run a runtime over every bundle of the conformance kit and judge each case: labels (in order
    where the rules fix one) and scores within the case's stated tolerance, against records made by
    PyTorch and exhaustive search. Exit codes: 0 every case passed, 1 some case failed, 2 bad kit or
    command."""
    import tempfile

    from ..evaluation.conformance import default_runtime, format_results, results_json, run_kit

    extra = "--precision fp32" if device == Device.openvino else ""
    template = runtime or default_runtime(f"--device {device.value} {extra}")
    try:
        with tempfile.TemporaryDirectory(prefix="corel-conformance-") as tmp:
            results = run_kit(kit, template, work or Path(tmp), timeout, log, only, jobs)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(results_json(results, template) if as_json else format_results(results))
    raise typer.Exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    eval_app()
