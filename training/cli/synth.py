"""``corel-synth``: a synthetic Corel-layout dataset (the demo's and the tests' data)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from corel_annotate.runtime.cli import fail

from ..synth import SynthConfig, generate

app = typer.Typer(add_completion=False, help="Generate a synthetic Corel-like multi-label dataset.")


@app.command()
def main(
    out: Path = typer.Argument(..., help="output directory (Corel layout)"),
    images: int = typer.Option(600, help="total images, train + test"),
    labels: int = typer.Option(12, help="vocabulary size (2..300)"),
    scenes: int = typer.Option(4, help="latent scenes driving label co-occurrence"),
    image_size: int = typer.Option(128, help="square image side in pixels"),
    min_labels: int = typer.Option(1, help="fewest labels per image"),
    max_labels: int = typer.Option(4, help="most labels per image (capped at 5)"),
    test_fraction: float = typer.Option(0.2, help="share of images in the test split"),
    seed: int = typer.Option(0, help="random seed"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Write OUT/images, OUT/train.json, OUT/test.json and OUT/vocabulary.txt."""
    config = SynthConfig(images=images, labels=labels, scenes=scenes, image_size=image_size,
                         min_labels=min_labels, max_labels=max_labels,
                         test_fraction=test_fraction, seed=seed)
    try:
        summary = generate(out, config, progress=not quiet)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(json.dumps(summary))


if __name__ == "__main__":
    app()
