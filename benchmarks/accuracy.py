"""Accuracy of every method on real photos, in the reference's table form.

    corel-bench accuracy --data DIR [--glove FILE] [--out-dir bench-out/accuracy]

Trains each method with ``corel-train``'s defaults on DIR's train split (checkpoint
selection on its validation split), exports each checkpoint to an fp32 bundle,
evaluates the test split through the runtime (the figures in the table), checks
them against the PyTorch figures the trainer stored in the checkpoint, and times
JPEG file to labels at batch 1.  A linear-probe row (frozen features + one
logistic regression per label, threshold 0.5) is the yardstick every method must beat.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

METRIC_KEYS = ("per_class/precision", "per_class/recall", "per_class/f1", "per_image/precision",
               "per_image/recall", "per_image/f1", "N+", "mAP")


@dataclass(frozen=True)
class Entry:
    """One row of the table: a method with its loss and order-free setting."""

    name: str
    method: str
    loss: str = "bce"
    order_free: str = "none"
    glove: bool = False


ENTRIES = (
    Entry("cnn-bce", "cnn", "bce"),
    Entry("cnn-focal", "cnn", "focal"),
    Entry("cnn-asl", "cnn", "asl"),
    Entry("ml-gcn-asl", "ml-gcn", "asl", glove=True),
    Entry("ria", "ria"),
    Entry("sr-cnn-rnn", "sr-cnn-rnn"),
    Entry("attention", "attention"),
    Entry("attention-mla", "attention", order_free="mla"),
)


def select_entries(names: Sequence[str] | None) -> list[Entry]:
    if not names:
        return list(ENTRIES)
    known = {e.name: e for e in ENTRIES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown rows {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names]


def _latency_ms(annotator, paths: list[Path], warmup: int = 5) -> dict[str, float] | None:
    """JPEG file to labels, one image at a time (batch 1, greedy): median and p10/p90 in ms (None: no paths)."""
    if not paths:
        return None
    for p in paths[:warmup]:
        annotator.annotate([p])
    times = []
    for p in paths:
        t0 = time.perf_counter()
        annotator.annotate([p])
        times.append(1000.0 * (time.perf_counter() - t0))
    times.sort()
    return {"median": statistics.median(times), "p10": times[int(0.1 * (len(times) - 1))],
            "p90": times[int(0.9 * (len(times) - 1))], "images": len(times)}


def run_entry(entry: Entry, data: Path, out_dir: Path, train_overrides: dict, glove: Path | None, cache_dir: Path,
              latency_paths: list[Path], reuse: bool, log: Callable[[str], None]) -> dict:
    """Train (unless reusing a finished checkpoint), export, evaluate through the runtime, time."""
    from export.bundle import export_bundle
    from runtime.annotator import Annotator
    from runtime.evaluation import evaluate_bundle
    from training.checkpoint import load_checkpoint
    from training.config import DecodeConfig, ModelConfig, SequenceConfig, TrainConfig
    from training.trainer import train

    ckpt = out_dir / f"{entry.name}.ckpt"
    if not (reuse and ckpt.is_file() and "test" in load_checkpoint(ckpt)[0].metrics):
        log(f"training {entry.name}")
        model_cfg = ModelConfig(method=entry.method, num_labels=0, loss=entry.loss, order_free=entry.order_free)
        train_cfg = TrainConfig(**{**train_overrides, "glove_path": str(glove) if (entry.glove and glove) else ""})
        train(data, ckpt, model_cfg, SequenceConfig(), DecodeConfig(), train_cfg, cache_dir=cache_dir,
              log=lambda _m: None, show_progress=False)
    cfg, _ = load_checkpoint(ckpt)
    bundle = out_dir / f"{entry.name}.bundle"
    export_bundle(ckpt, bundle, force=True, log=lambda _m: None)
    annotator = Annotator.load(bundle)
    result = evaluate_bundle(annotator, data, "test")
    runtime_metrics = result.metrics.to_dict()
    torch_metrics = cfg.metrics.get("test", {})
    gaps = [abs(float(runtime_metrics[k]) - float(torch_metrics[k])) for k in METRIC_KEYS
            if runtime_metrics.get(k) is not None and torch_metrics.get(k) is not None]
    epochs = [h for h in cfg.history if "seconds" in h]  # the best checkpoint holds the history up to its epoch
    row = {**asdict(entry), "runtime": runtime_metrics, "torch": torch_metrics,
           "max_runtime_torch_gap": max(gaps) if gaps else None,
           "epochs": cfg.train.epochs, "best_epoch": cfg.metrics.get("best_epoch"),
           "seconds_per_epoch": statistics.mean(h["seconds"] for h in epochs) if epochs else None,
           "train_seconds": cfg.metrics.get("train_seconds"), "latency_ms": _latency_ms(annotator, latency_paths),
           "train": asdict(cfg.train), "thresholds": cfg.thresholds,
           "data_info": {k: cfg.data[k] for k in ("fit_images", "val_images", "augmented") if k in cfg.data}}
    m = row["runtime"]
    timing = f" {row['latency_ms']['median']:.1f} ms/img" if row["latency_ms"] else ""
    log(f"{entry.name:14s} per-class F1 {m['per_class/f1']:.4f} per-image F1 {m['per_image/f1']:.4f} N+ {m['N+']} "
        f"(runtime vs PyTorch max gap {row['max_runtime_torch_gap']}) {row['seconds_per_epoch']:.1f} s/epoch{timing}")
    return row


def run_accuracy(data: Path, out_dir: Path, entries: Sequence[Entry], train_overrides: dict, glove: Path | None,
                 cache_dir: Path, latency_images: int = 50, reuse: bool = False, probe: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    """Every row of the table, then the linear probe; returns the result as a JSON-ready dict."""
    from runtime.dataset import CorelDataset
    from training.config import TrainConfig

    from .latency import cpu_count
    from .linear_probe import linear_probe

    out_dir.mkdir(parents=True, exist_ok=True)
    test = CorelDataset(data).read("test")
    latency_paths = [s.path for s in test.samples[:latency_images]]
    started = time.perf_counter()
    rows = [run_entry(e, data, out_dir, train_overrides, glove, cache_dir, latency_paths, reuse, log) for e in entries]
    result = {"data": str(data), "test_images": len(test.samples), "cpu_count": cpu_count(),
              "train_config": asdict(TrainConfig(**train_overrides)), "glove": str(glove) if glove else None,
              "rows": rows}
    if probe:
        t0 = time.perf_counter()
        lp = linear_probe(data, image_size=result["train_config"]["image_size"], cache_dir=cache_dir)
        lp["seconds"] = time.perf_counter() - t0
        result["linear_probe"] = lp
        log(f"linear probe   per-class F1 {lp['metrics']['per_class/f1']:.4f} "
            f"per-image F1 {lp['metrics']['per_image/f1']:.4f}")
    result["seconds"] = time.perf_counter() - started
    return result


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(result: dict, command: str = "") -> str:
    """The reference's table: per-class and per-image P/R/F1, N+, mAP, plus cost columns."""
    cfg = result["train_config"]
    lines = [
        f"Test split of `{result['data']}` ({result['test_images']} images), {result['cpu_count']} CPU cores. "
        f"Backbone tf_efficientnet_lite0 (ImageNet) at {cfg['image_size']} px; {cfg['epochs']} epochs, "
        f"lr {cfg['lr']:g}, top stages trained {cfg['train_top']}, augmented views {cfg['augment_views']}, "
        f"validation fraction {cfg['val_fraction']}, thresholds tuned ({cfg['threshold_tuning']}) for score models.",
        "Metrics are the runtime's (exported fp32 bundle, onnxruntime); the last column is the largest difference "
        "from the PyTorch figures of the same checkpoint.",
        "",
        "| method | P (class) | R (class) | F1 (class) | P (image) | R (image) | F1 (image) | N+ | mAP "
        "| s/epoch | ms/img (b1) | runtime − PyTorch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    best = max(r["runtime"]["per_class/f1"] for r in result["rows"]) if result["rows"] else 0.0
    for r in result["rows"]:
        m = r["runtime"]
        flag = " †" if best - m["per_class/f1"] > 0.05 else ""
        lines.append(f"| {r['name']}{flag} | {_f(m['per_class/precision'])} | {_f(m['per_class/recall'])} | "
                     f"**{_f(m['per_class/f1'])}** | {_f(m['per_image/precision'])} | {_f(m['per_image/recall'])} | "
                     f"**{_f(m['per_image/f1'])}** | {m['N+']} | {_f(m['mAP'])} | {_f(r['seconds_per_epoch'], 1)} | "
                     f"{_f(r['latency_ms']['median'], 1)} | {_f(r['max_runtime_torch_gap'], 4)} |")
    if result.get("linear_probe"):
        m = result["linear_probe"]["metrics"]
        lines.append(f"| linear probe (0.5) | {_f(m['per_class/precision'])} | {_f(m['per_class/recall'])} | "
                     f"{_f(m['per_class/f1'])} | {_f(m['per_image/precision'])} | {_f(m['per_image/recall'])} | "
                     f"{_f(m['per_image/f1'])} | {m['N+']} | {_f(m['mAP'])} | – | – | – |")
    if any(best - r["runtime"]["per_class/f1"] > 0.05 for r in result["rows"]):
        lines += ["", "† more than 0.05 per-class F1 below the best row."]
    if command:
        lines += ["", f"Command: `{command}` ({result['seconds'] / 60:.0f} min in all)."]
    return "\n".join(lines) + "\n"


def chart(result: dict, path: Path) -> None:
    """Per-class and per-image F1 of every row, with the linear probe as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in result["rows"]]
    pc = [r["runtime"]["per_class/f1"] for r in result["rows"]]
    pi = [r["runtime"]["per_image/f1"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], pc, 0.4, label="per-class F1")
    ax.bar([i + 0.2 for i in x], pi, 0.4, label="per-image F1")
    if result.get("linear_probe"):
        ax.axhline(result["linear_probe"]["metrics"]["per_class/f1"], color="grey", linestyle="--",
                   label="linear probe (per-class F1)")
    low = min(pc + pi) if names else 0.0
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=25, ha="right")
    ax.set_ylabel("F1 on the test split (runtime)")
    ax.set_title(f"{Path(result['data']).name}: every method against a linear probe")
    ax.legend(loc="upper center", ncol=3, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_tables(result: dict, out_dir: Path, stem: str, command: str,
                 markdown_of: Callable[[dict, str], str]) -> list[Path]:
    """``stem.json`` (the result with its command) and ``stem.md`` (``markdown_of`` the result)."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    result = {**result, "command": command}
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(result, indent=1))
    paths[1].write_text(markdown_of(result, command))
    return paths


def write(result: dict, out_dir: Path, stem: str = "accuracy", command: str = "") -> list[Path]:
    paths = write_tables(result, out_dir, stem, command, markdown) + [out_dir / f"{stem}.png"]
    chart(result, paths[2])
    return paths
