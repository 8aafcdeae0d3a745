"""Backbone and input size against accuracy and per-image cost: the measurement behind ``--preset``.

    corel-bench backbones --data DIR [--candidates tf_efficientnet_lite0@224,tf_efficientnet_lite2@260]

For every ``backbone@size`` it trains one row of ``corel-bench accuracy`` (``cnn-asl`` by default) on
the frozen backbone's features (``--train-top 0 --augment-views 0`` unless told otherwise, so one
plain extraction per candidate is the whole cost), exports it, scores the test split through the
runtime and times JPEG file to labels at batch 1; the encoder's FLOPs come from its ONNX graph.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from .accuracy import Entry, _f, run_entry

DEFAULT_CANDIDATES = ("tf_efficientnet_lite0@224", "tf_efficientnet_lite0@288", "tf_efficientnet_lite1@240",
                      "tf_efficientnet_lite2@260", "tf_efficientnet_lite2@320")


def parse_candidates(text: str) -> list[tuple[str, int]]:
    """``name@size,name@size`` to ``[(name, size)]``."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, size = item.partition("@")
        if not name or not size.isdigit() or int(size) < 32:
            raise ValueError(f"candidate {item!r}: expected BACKBONE@SIZE, for example tf_efficientnet_lite0@224")
        out.append((name, int(size)))
    if not out:
        raise ValueError("no candidates given")
    return out


def run_backbones(data: Path, out_dir: Path, candidates: Sequence[tuple[str, int]], entry: Entry, overrides: dict,
                  glove: Path | None, cache_dir: Path, latency_images: int, reuse: bool,
                  log: Callable[[str], None]) -> dict:
    """One accuracy row per candidate, each in its own folder of ``out_dir``; returns a JSON-ready dict."""
    from corel_annotate.runtime.dataset import CorelDataset

    from .flops import graph_flops
    from .latency import cpu_count

    test = CorelDataset(data).read("test")
    latency_paths = [s.path for s in test.samples[:latency_images]]
    rows = []
    started = time.perf_counter()
    for name, size in candidates:
        folder = out_dir / f"{name}@{size}"
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        row = run_entry(entry, data, folder, {**overrides, "image_size": size}, glove, cache_dir, latency_paths,
                        reuse, log, backbone=name)
        row.update(image_size=size, wall_seconds=time.perf_counter() - t0,
                   encoder_gflops=graph_flops(folder / f"{entry.name}.bundle" / "encoder.onnx") / 1e9)
        rows.append(row)
    return {"data": str(data), "entry": entry.name, "overrides": overrides, "cpu_count": cpu_count(),
            "test_images": len(test.samples), "rows": rows, "seconds": time.perf_counter() - started}


def markdown(result: dict, command: str = "") -> str:
    """One line per candidate: cost (FLOPs, ms per image) beside accuracy (mAP, F1, N+)."""
    lines = [f"`{result['entry']}` on the frozen features of each backbone ({result['overrides']}), test split of "
             f"`{result['data']}` through the runtime; {result['cpu_count']} CPU cores.", "",
             "| backbone | px | GFLOP/img | ms/img (b1) | mAP | F1 (class) | F1 (image) | N+ | wall min |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        m = r["runtime"]
        latency = r["latency_ms"]["median"] if r.get("latency_ms") else None
        lines.append(f"| {r['backbone']} | {r['image_size']} | {_f(r['encoder_gflops'], 2)} | {_f(latency, 1)} | "
                     f"{_f(m['mAP'])} | {_f(m['per_class/f1'])} | {_f(m['per_image/f1'])} | {m['N+']} | "
                     f"{_f(r['wall_seconds'] / 60, 1)} |")
    if command:
        lines += ["", f"Command: `{command}` ({result['seconds'] / 60:.0f} min in all)."]
    return "\n".join(lines) + "\n"
