"""``corel-bench memory``: what the label memory changes, side by side on one checkpoint.

Each checkpoint is exported twice, with and without its label memory (``corel-export --memory`` /
``--no-memory``); both bundles are scored on the test split through the runtime (onnxruntime, fp32)
with the per-label view, and timed photo by photo (JPEG file to labels, batch 1) in alternating
rounds, so the latency ratio comes from one run.  The memory's settings were chosen by the exporter
on the checkpoint's validation photos; nothing is chosen on the test split.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

Log = Callable[[str], None]


def _size_mb(bundle: Path) -> float:
    return sum(p.stat().st_size for p in bundle.iterdir() if p.is_file()) / 1e6


def _latency(annotators: dict, paths: Sequence[Path], rounds: int) -> dict[str, float]:
    """Median ms per photo (one ``annotate([path])`` call each) per bundle, rounds alternating."""
    times: dict[str, list[float]] = {name: [] for name in annotators}
    for name, annotator in annotators.items():
        annotator.annotate(list(paths[:3]), batch_size=1)
    for _ in range(rounds):
        for name, annotator in annotators.items():
            for p in paths:
                t0 = time.perf_counter()
                annotator.annotate([p], batch_size=1)
                times[name].append(1000.0 * (time.perf_counter() - t0))
    return {name: statistics.median(t) for name, t in times.items()}


def run_memory(checkpoints: Sequence[Path], data: Path, out_dir: Path, latency_photos: int, rounds: int,
               command: str, log: Log) -> dict:
    from corel_annotate.export.bundle import export_bundle
    from corel_annotate.runtime.annotator import Annotator
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.runtime.evaluation.runner import evaluate_bundle
    from corel_annotate.runtime.evaluation.metrics import label_sets_to_matrix

    from .hardware import machine
    from .per_label import per_label_view

    ds = CorelDataset(data)
    train = ds.read("train")
    counts = label_sets_to_matrix(train.label_ids(ds.vocabulary), len(ds.vocabulary)).sum(axis=0)
    test = ds.read("test")
    targets = label_sets_to_matrix(test.label_ids(ds.vocabulary), len(ds.vocabulary))
    rows = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for ckpt in checkpoints:
        bundles = {}
        for variant, memory in (("without memory", False), ("with memory", True)):
            target = out_dir / f"{ckpt.stem}.{'memory' if memory else 'plain'}.bundle"
            t0 = time.perf_counter()
            _, manifest, _ = export_bundle(ckpt, target, force=True, memory=memory, log=log)
            bundles[variant] = (target, manifest, time.perf_counter() - t0)
        annotators = {v: Annotator.load(b[0], device="cpu") for v, b in bundles.items()}
        latency = _latency(annotators, [s.path for s in test.samples[:latency_photos]], rounds)
        for variant, (bundle, manifest, seconds) in bundles.items():
            result = evaluate_bundle(annotators[variant], data)
            predictions = label_sets_to_matrix([a.label_ids for a in result.annotations], len(ds.vocabulary))
            view = per_label_view(counts, targets, predictions, ds.vocabulary.labels)
            memory = manifest.memory
            rows.append({"checkpoint": ckpt.name, "method": manifest.method, "variant": variant,
                         "metrics": result.metrics.to_dict(), "per_label": view,
                         "memory": None if memory is None else {"k": memory.k, "temperature": memory.temperature,
                                                                "weight": memory.weight, "examples": memory.examples,
                                                                "validation": manifest.source["memory"]["validation"]},
                         "bundle_mb": round(_size_mb(bundle), 2), "export_seconds": round(seconds, 1),
                         "ms_per_photo": round(latency[variant], 3)})
            m = result.metrics
            log(f"{ckpt.name} {variant}: per-class F1 {m.per_class_f1:.4f}, per-image F1 {m.per_image_f1:.4f}, "
                f"N+ {m.n_plus}, {latency[variant]:.2f} ms/photo")
    return {"data": str(data), "rows": rows, "latency_photos": latency_photos, "rounds": rounds,
            "machine": machine("fp32").to_dict(), "command": command}


def markdown(result: dict) -> str:
    lines = [f"Test split of `{result['data']}` through the runtime (onnxruntime fp32); machine below. "
             "Latency: median ms per photo, JPEG file to "
             f"labels at batch 1, {result['latency_photos']} photos x {result['rounds']} alternating rounds.", "",
             "| checkpoint | bundle | P (class) | R (class) | F1 (class) | F1 (image) | N+ | mAP | labels never predicted "
             "| k / T / weight | MB | ms/photo |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for r in result["rows"]:
        x = r["metrics"]
        mem = r["memory"]
        never = len(r["per_label"]["never_predicted"])
        setting = "–" if mem is None else f"{mem['k']} / {mem['temperature']} / {mem['weight']}"
        lines.append(f"| {r['checkpoint']} | {r['variant']} | {x['per_class/precision']:.3f} | {x['per_class/recall']:.3f} "
                     f"| **{x['per_class/f1']:.3f}** | **{x['per_image/f1']:.3f}** | {x['N+']} "
                     f"| {'–' if x['mAP'] is None else format(x['mAP'], '.3f')} | {never} of {r['per_label']['labels_in_test']} | {setting} "
                     f"| {r['bundle_mb']:.1f} | {r['ms_per_photo']:.2f} |")
    lines += ["", "Mean per-label F1 by training photos per label (labels never predicted in brackets):", "",
              "| checkpoint | bundle | " + " | ".join(b["bucket"] for b in result["rows"][0]["per_label"]["buckets"]) + " |",
              "| --- | --- |" + " ---: |" * len(result["rows"][0]["per_label"]["buckets"])]
    for r in result["rows"]:
        cells = [f"{b['f1']:.3f} ({b['never_predicted']})" if b["f1"] is not None else "–" for b in r["per_label"]["buckets"]]
        lines.append(f"| {r['checkpoint']} | {r['variant']} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def write(result: dict, out_dir: Path, stem: str = "memory") -> list[Path]:
    from .report import write_json_and_markdown

    return write_json_and_markdown(result, out_dir, stem, markdown(result),
                                   default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))
