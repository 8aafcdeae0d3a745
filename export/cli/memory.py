"""``corel-memory``: list and edit a bundle's label memory (new labels without retraining).

The memory is kNN label transfer over stored, labelled example embeddings (``corel-export`` builds it
from the training photos).  ``add`` embeds more labelled photos with the bundle's own encoder; labels
the bundle has never seen join its vocabulary, each with a threshold from the memory's leave-one-out
scores.  Every edit writes a new verified bundle (``-o``); the original is never changed.

Exit codes: 0 done, 2 bad input (nothing is written), 1 unexpected failure.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, List, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from corel_annotate.runtime.cli import console, fail, log

T = TypeVar("T")

out_console = Console(soft_wrap=True)
app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)


def _checked(run: Callable[[], T]) -> T:
    """``run()``, with a ValueError (bad input: nothing was written) as one red line and exit code 2."""
    try:
        return run()
    except ValueError as exc:
        fail(str(exc))


@app.command("add")
def add(
    bundle: Path = typer.Argument(..., help="A bundle with a label memory (corel-export writes one)."),
    data: Path = typer.Option(..., "--data", help="Corel-layout directory of labelled photos: images/, "
                              "SPLIT.json, vocabulary.txt. Labels the bundle does not know become new labels."),
    out: Path = typer.Option(..., "--out", "-o", help="The new bundle directory."),
    split: str = typer.Option("train", help="Which split file of --data holds the photos to add."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON on stdout."),
) -> None:
    """Add DIR's labelled photos to the bundle's memory and write a new bundle."""
    from ..memory import add_examples

    _, edit = _checked(lambda: add_examples(bundle, data, out, split=split, force=force,
                                            log=log))
    if as_json:
        out_console.print_json(json.dumps(edit.to_dict()))
        return
    new = ", ".join(f"{label} (threshold {t:.3f})" for label, t in edit.thresholds.items()) or "none"
    console.print(f"wrote {out}: memory {edit.examples_before} -> {edit.examples_after} examples; new labels: {new}"
                  + (f"; {len(edit.unreadable)} unreadable photos left out" if edit.unreadable else ""),
                  highlight=False, markup=False)


@app.command("remove")
def remove(
    bundle: Path = typer.Argument(..., help="A bundle with a label memory."),
    labels: List[str] = typer.Argument(..., help="Labels added with 'corel-memory add' to take out."),
    out: Path = typer.Option(..., "--out", "-o", help="The new bundle directory."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Remove labels added to the memory (and their examples) and write a new bundle."""
    from ..memory import remove_labels

    _, edit = _checked(lambda: remove_labels(bundle, labels, out, force=force))
    console.print(f"wrote {out}: removed {', '.join(edit.removed_labels)}; memory {edit.examples_before} -> "
                  f"{edit.examples_after} examples", highlight=False, markup=False)


@app.command("list")
def list_memory(
    bundle: Path = typer.Argument(..., help="A bundle with a label memory."),
    as_json: bool = typer.Option(False, "--json", help="Print the listing as JSON."),
) -> None:
    """What the memory holds: its settings, the added labels and the examples per label."""
    from ..memory import describe

    listing = _checked(lambda: describe(bundle))
    if as_json:
        out_console.print_json(json.dumps(listing.to_dict()))
        return
    out_console.print(f"{bundle}: {listing.examples} examples, k {listing.k}, temperature {listing.temperature}, "
                      f"weight {listing.weight}; {listing.trained_labels} trained labels, "
                      f"{len(listing.added_labels)} added", highlight=False, markup=False)
    table = Table("label", "examples", "added")
    for label, count in listing.examples_per_label.items():
        table.add_row(label, str(count), "yes" if label in listing.added_labels else "")
    out_console.print(table)


if __name__ == "__main__":
    app()
