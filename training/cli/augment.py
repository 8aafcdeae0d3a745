"""``corel-augment``: ML-WGAN augmentation, new labelled images from one small WGAN-GP per training image."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from corel_annotate.runtime.cli import fail, log

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    data: Annotated[Path, typer.Argument(help="Corel-layout directory: images/, train.json, vocabulary.txt.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: images/, train_aug.json, "
                                      "vocabulary.txt, augment.json.")],
    per_image: Annotated[int, typer.Option(help="Images generated per training image.")] = 3,
    limit: Annotated[int | None, typer.Option(help="Only the first N training images (default: all).")] = None,
    shuffle: Annotated[bool, typer.Option("--shuffle", help="Take the training images in a random order (from "
                                          "--seed), so that --limit picks a random subset rather than the first "
                                          "N of train.json, which is often sorted by label.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out: training images "
                                         "whose generated files all exist are skipped.")] = False,
    iterations: Annotated[int, typer.Option(help="Generator steps per image (each after --n-critic critic "
                                            "steps).")] = 300,
    height: Annotated[int, typer.Option(help="Generated image height (a multiple of 16).")] = 128,
    width: Annotated[int, typer.Option(help="Generated image width (a multiple of 16).")] = 192,
    base_channels: Annotated[int, typer.Option(help="Width of the generator and critic (DCGAN base "
                                               "channels).")] = 64,
    batch_size: Annotated[int, typer.Option(help="Crops of the real image (and generated images) per step.")] = 16,
    n_critic: Annotated[int, typer.Option(help="Critic steps per generator step.")] = 5,
    lr: Annotated[float, typer.Option(help="Adam learning rate of both networks (betas 0, 0.9).")] = 1e-4,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed (each image's GAN gets its own seed derived from it).")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Train one WGAN-GP per training image (random crops and flips of that image are the real data) and write PER_IMAGE generated images for each, labelled like their source.

    Writes OUT/images/{stem}_gan_{k}.jpeg, OUT/train_aug.json (train.json format: the split 'train_aug' of OUT), OUT/vocabulary.txt and OUT/augment.json (config, timings, final losses).

    Exit codes: 0 done, 2 bad input (data, flags, files), 1 unexpected failure.
    """
    from ..wgan import WGANConfig, augment_dataset

    try:
        cfg = WGANConfig(height=height, width=width, base_channels=base_channels, iterations=iterations,
                         n_critic=n_critic, lr=lr, batch_size=batch_size, per_image=per_image, seed=seed)
        summary = augment_dataset(data, out, cfg, limit=limit, resume=resume, device=device, shuffle=shuffle,
                                  log=log,
                                  show_progress=progress and sys.stderr.isatty())
    except ValueError as exc:
        fail(str(exc))
    typer.echo(json.dumps(summary))


if __name__ == "__main__":
    app()
