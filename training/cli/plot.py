"""``corel-plot``: figures of a trained model or an augmented dataset, as PNG files."""
from __future__ import annotations

from pathlib import Path

import typer
from corel_annotate.runtime.cli import console, fail

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)


def _fail(exc: Exception) -> None:
    fail(str(exc))


@app.command("embeddings")
def embeddings(
    checkpoint: Path = typer.Argument(..., help="An ml-gcn checkpoint (from corel-train --method ml-gcn)."),
    out: Path = typer.Option(Path("embeddings.png"), "--out", "-o", help="PNG to write."),
    seed: int = typer.Option(0, help="t-SNE random seed."),
) -> None:
    """t-SNE of the label embeddings before the GCN (GloVe or learned) and after it (the label classifiers),
    side by side with the labels written on the points. Exit codes: 0 written, 2 bad input."""
    from ..plots import embeddings_figure

    try:
        stats = embeddings_figure(checkpoint, out, seed)
    except ValueError as exc:
        _fail(exc)
    shares = ", ".join(f"{k}: {100 * v:.0f}%" for k, v in stats.items())
    console.print(f"wrote {out} (labels whose nearest neighbour co-occurs with them: {shares})",
                  highlight=False, markup=False)


@app.command("augmentation")
def augmentation(
    data: Path = typer.Argument(..., help="The Corel-layout directory the images were generated from."),
    augmented: Path = typer.Argument(..., help="corel-augment's output directory (train_aug.json, images/)."),
    out: Path = typer.Option(Path("augmentation.png"), "--out", "-o", help="PNG to write."),
    rows: int = typer.Option(6, help="Source images shown, one per row."),
) -> None:
    """Contact sheet: each source photo beside the images its WGAN generated. Exit codes: 0 written, 2 bad input."""
    from ..plots import augmentation_sheet

    try:
        augmentation_sheet(data, augmented, out, rows)
    except (ValueError, OSError) as exc:
        _fail(exc)
    console.print(f"wrote {out}", highlight=False, markup=False)


if __name__ == "__main__":
    app()
