"""PyTorch vs exported runtime on one Corel-layout split: metrics side by side and batch-1 latency.

    python -m corel_annotate.benchmarks.parity --data DIR CKPT [CKPT ...] [--bundles DIR] [--latency-images 100]

For each checkpoint: export (unless its bundle exists), evaluate the test split through
PyTorch eager (the reference path) and through the runtime, and time each image end to
end at batch 1 (JPEG file -> labels, greedy) for both, reporting medians.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import typer

from corel_annotate.export.bundle import export_bundle
from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.runtime.evaluation.runner import evaluate_bundle
from corel_annotate.runtime.evaluation.metrics import annotation_metrics, label_sets_to_matrix
from corel_annotate.runtime.preprocessing import preprocess_file
from corel_annotate.training.checkpoint import model_from_checkpoint
from corel_annotate.training.evaluation import predict_images

app = typer.Typer(add_completion=False, help=__doc__)


def torch_labels(model, cfg, batch: np.ndarray, beam_width: int = 1) -> tuple[list[list[int]], np.ndarray | None]:
    decode_config = cfg.decode.replace(beam_width=beam_width)
    p = predict_images(model, batch, decode_config, cfg.thresholds, cfg.top_k, cfg.min_labels)
    return p.label_sets, p.scores


def _time_each(paths: list[Path], fn) -> list[float]:
    """Seconds per image after five warm-up images; each path is timed alone, one engine at a time
    (interleaving them lets onnxruntime's spinning threads slow PyTorch down)."""
    for p in paths[:5]:
        fn(p)
    out = []
    for p in paths:
        t0 = time.perf_counter()
        fn(p)
        out.append(time.perf_counter() - t0)
    return out


@app.command()
def main(checkpoints: List[Path], data: Path = typer.Option(...), bundles: Optional[Path] = None,
         latency_images: int = 100, out: Optional[Path] = None) -> None:
    ds = CorelDataset(data)
    split = ds.read("test")
    paths = [s.path for s in split.samples]
    targets = label_sets_to_matrix(split.label_ids(ds.vocabulary), len(ds.vocabulary))
    rows = []
    for ckpt in checkpoints:
        bundle = (bundles or ckpt.parent) / (ckpt.stem + ".bundle")
        if not bundle.exists():
            export_bundle(ckpt, bundle, memory=False, log=lambda _m: None)
        model, cfg = model_from_checkpoint(ckpt)
        pre = cfg.preprocess
        sets, scores = [], []
        for start in range(0, len(paths), 32):
            batch = np.stack([preprocess_file(p, pre) for p in paths[start:start + 32]])
            s, pr = torch_labels(model, cfg, batch)
            sets += s
            if pr is not None:
                scores.append(pr)
        torch_metrics = annotation_metrics(targets, label_sets_to_matrix(sets, len(ds.vocabulary)),
                                           np.concatenate(scores) if scores else None)
        annotator = Annotator.load(bundle)
        runtime_result = evaluate_bundle(annotator, data, "test", beam_width=1)
        agree = sum(set(a.label_ids) == set(b) for a, b in zip(runtime_result.annotations, sets))
        timing_paths = paths[:latency_images]
        t_torch = _time_each(timing_paths, lambda p: torch_labels(model, cfg, preprocess_file(p, pre)[None]))
        t_runtime = _time_each(timing_paths, lambda p: annotator.annotate([p]))
        row = {"checkpoint": ckpt.name, "method": cfg.model.method, "images": len(paths),
               "label_sets_equal": agree, "torch": torch_metrics.to_dict(), "runtime": runtime_result.metrics.to_dict(),
               "latency_ms_median_torch": 1000 * statistics.median(t_torch),
               "latency_ms_median_runtime": 1000 * statistics.median(t_runtime), "latency_images": len(timing_paths),
               "torch_threads": torch.get_num_threads()}
        row["speedup"] = row["latency_ms_median_torch"] / row["latency_ms_median_runtime"]
        rows.append(row)
        typer.echo(f"{ckpt.name:24s} agree {agree}/{len(paths)}  per-class F1 torch {torch_metrics.per_class_f1:.4f} "
                   f"runtime {runtime_result.metrics.per_class_f1:.4f}  per-image F1 torch "
                   f"{torch_metrics.per_image_f1:.4f} runtime {runtime_result.metrics.per_image_f1:.4f}  N+ "
                   f"{torch_metrics.n_plus}/{runtime_result.metrics.n_plus}  latency b1 torch "
                   f"{row['latency_ms_median_torch']:.1f} ms runtime {row['latency_ms_median_runtime']:.1f} ms "
                   f"({row['speedup']:.2f}x)")
    if out:
        out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    app()
