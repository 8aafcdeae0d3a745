"""Does ML-WGAN augmentation help?  Paired runs with and without ``corel-augment``'s images.

    corel-bench augmentation --data DIR [--data SUBSET] --augmented AUG --rows sr-cnn-rnn --seeds 1,2,3

For every data directory, row and seed, the row is trained twice with ``corel-train``'s
defaults, once on the photos alone and once with the generated images of AUG mixed in
(``--augmented``; offspring of validation photos are left out), exported to an fp32
bundle and scored on the test split through the runtime.  Seeds pair the runs (same
validation split, same initialisation, same augmented views of the photos), so the table
reports each condition's mean and spread and the per-seed difference with − without.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable, Sequence

from .accuracy import Entry, run_entry, write_tables

SUMMARY_KEYS = ("per_class/precision", "per_class/recall", "per_class/f1", "per_image/precision",
                "per_image/recall", "per_image/f1", "N+")


def run_augmentation(datasets: Sequence[Path], augmented: Path, entries: Sequence[Entry], seeds: Sequence[int],
                     train_overrides: dict, glove: Path | None, cache_dir: Path, out_dir: Path, reuse: bool = False,
                     log: Callable[[str], None] = print) -> dict:
    """Train, export and score every (data, row, seed) without and with ``augmented``; return runs and summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for data in datasets:
        for entry in entries:
            for seed in seeds:
                for with_aug in (False, True):
                    where = out_dir / Path(data).name / f"seed{seed}" / ("wgan" if with_aug else "photos")
                    overrides = {**train_overrides, "seed": seed, "augmented_dir": str(augmented) if with_aug else ""}
                    log(f"{Path(data).name} {entry.name} seed {seed} {'with' if with_aug else 'without'} generated images")
                    row = run_entry(entry, Path(data), where, overrides, glove, cache_dir, [], reuse, log)
                    runs.append({"data": str(data), "row": entry.name, "seed": seed, "augmented": with_aug,
                                 "fit_images": row["data_info"].get("fit_images"),
                                 "generated_images": row["data_info"].get("augmented", {}).get("images", 0),
                                 "runtime": row["runtime"], "max_runtime_torch_gap": row["max_runtime_torch_gap"],
                                 "best_epoch": row["best_epoch"], "train_seconds": row["train_seconds"]})
    return {"augmented": str(augmented), "seeds": list(seeds), "train_overrides": train_overrides,
            "runs": runs, "summary": summarise(runs)}


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: list[dict]) -> list[dict]:
    """Per (data, row): each condition's mean/sd over seeds and the paired per-seed differences with − without."""
    groups: dict[tuple[str, str], dict[bool, dict[int, dict]]] = {}
    for r in runs:
        groups.setdefault((r["data"], r["row"]), {}).setdefault(r["augmented"], {})[r["seed"]] = r
    out = []
    for (data, row), by_cond in groups.items():
        entry: dict = {"data": data, "row": row}
        for cond, name in ((False, "without"), (True, "with")):
            seeds = by_cond.get(cond, {})
            if seeds:
                first = next(iter(seeds.values()))
                entry[name] = {"fit_images": first["fit_images"], "generated_images": first["generated_images"],
                               **{k: _stats([s["runtime"][k] for s in seeds.values()]) for k in SUMMARY_KEYS}}
        paired = sorted(set(by_cond.get(False, {})) & set(by_cond.get(True, {})))
        if paired:
            entry["delta"] = {k: _stats([by_cond[True][s]["runtime"][k] - by_cond[False][s]["runtime"][k]
                                         for s in paired]) for k in ("per_class/f1", "per_image/f1")}
            entry["delta"]["seeds"] = paired
        out.append(entry)
    return out


def _ms(stats: dict) -> str:
    return f"{stats['mean']:.3f} ± {stats['sd']:.3f}"


def _delta(stats: dict) -> str:
    return f"{stats['mean']:+.3f} ({stats['min']:+.3f} to {stats['max']:+.3f})"


def markdown(result: dict, command: str = "") -> str:
    """One line per (data, row, condition): mean ± sd over seeds; the paired difference on the 'with' line."""
    lines = [
        f"Generated images: `{result['augmented']}`. Seeds {', '.join(map(str, result['seeds']))}; metrics on the "
        "test split through the runtime (fp32 bundle); mean ± sd over seeds. Δ is the per-seed difference "
        "with − without (mean, min to max).",
        "",
        "| data | method | generated images | fit images | P (class) | R (class) | F1 (class) | F1 (image) | N+ "
        "| Δ F1 (class) | Δ F1 (image) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in result["summary"]:
        for name in ("without", "with"):
            if name not in s:
                continue
            c = s[name]
            delta = s.get("delta") if name == "with" else None
            lines.append(
                f"| {Path(s['data']).name} | {s['row']} | {c['generated_images'] if name == 'with' else '–'} | "
                f"{c['fit_images']} | {_ms(c['per_class/precision'])} | {_ms(c['per_class/recall'])} | "
                f"**{_ms(c['per_class/f1'])}** | **{_ms(c['per_image/f1'])}** | {c['N+']['mean']:.1f} | "
                f"{_delta(delta['per_class/f1']) if delta else '–'} | {_delta(delta['per_image/f1']) if delta else '–'} |")
    if command:
        lines += ["", f"Command: `{command}`."]
    return "\n".join(lines) + "\n"


def write(result: dict, out_dir: Path, stem: str = "augmentation", command: str = "") -> list[Path]:
    return write_tables(result, out_dir, stem, command, markdown, precision="fp32 (onnxruntime)")
