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

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
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


SOURCE_ROW = "cnn-asl"  # two-stage: the row whose adapted backbone every other row starts from


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


def per_label(data: Path, label_sets: Sequence[Sequence[int]]) -> dict:
    """The per-label view of a runtime evaluation (buckets by training frequency, never-predicted labels)."""
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.runtime.evaluation.metrics import label_sets_to_matrix

    from .per_label import per_label_view

    ds = CorelDataset(data)
    vocab = ds.vocabulary
    train_counts = label_sets_to_matrix(ds.read("train").label_ids(vocab), len(vocab)).sum(axis=0)
    test = ds.read("test")
    targets = label_sets_to_matrix(test.label_ids(vocab), len(vocab))
    predictions = label_sets_to_matrix(label_sets, len(vocab))
    return per_label_view(train_counts, targets, predictions, list(vocab.labels))


def run_entry(entry: Entry, data: Path, out_dir: Path, train_overrides: dict, glove: Path | None, cache_dir: Path,
              latency_paths: list[Path], reuse: bool, log: Callable[[str], None],
              backbone: str = DEFAULT_BACKBONE) -> dict:
    """Train (unless reusing a finished checkpoint), export, evaluate through the runtime, time."""
    from corel_annotate.export.bundle import export_bundle
    from corel_annotate.runtime.annotator import Annotator
    from corel_annotate.runtime.evaluation.runner import evaluate_bundle
    from corel_annotate.training.checkpoint import load_checkpoint
    from corel_annotate.training.config import DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
    from corel_annotate.training.trainer import train

    ckpt = out_dir / f"{entry.name}.ckpt"
    if not (reuse and ckpt.is_file() and "test" in load_checkpoint(ckpt)[0].metrics):
        log(f"training {entry.name}")
        model_cfg = ModelConfig(method=entry.method, num_labels=0, loss=entry.loss, order_free=entry.order_free,
                                backbone=backbone)
        train_cfg = TrainConfig(**{**train_overrides, "glove_path": str(glove) if (entry.glove and glove) else ""})
        train(data, ckpt, model_cfg, SequenceConfig(), DecodingConfig(), train_cfg, cache_dir=cache_dir,
              log=lambda _m: None, show_progress=False)
    cfg, _ = load_checkpoint(ckpt)
    bundle = out_dir / f"{entry.name}.bundle"
    export_bundle(ckpt, bundle, force=True, memory=False, log=lambda _m: None)  # parity with PyTorch; memory rows: corel-bench memory
    annotator = Annotator.load(bundle)
    result = evaluate_bundle(annotator, data, "test")
    runtime_metrics = result.metrics.to_dict()
    labels = per_label(data, [a.label_ids for a in result.annotations])
    torch_metrics = cfg.metrics.get("test", {})
    gaps = [abs(float(runtime_metrics[k]) - float(torch_metrics[k])) for k in METRIC_KEYS
            if runtime_metrics.get(k) is not None and torch_metrics.get(k) is not None]
    epochs = [h for h in cfg.history if "seconds" in h]  # the best checkpoint holds the history up to its epoch
    row = {**asdict(entry), "backbone": cfg.model.backbone, "runtime": runtime_metrics, "torch": torch_metrics,
           "max_runtime_torch_gap": max(gaps) if gaps else None,
           "epochs": cfg.train.epochs, "best_epoch": cfg.metrics.get("best_epoch"),
           "seconds_per_epoch": statistics.mean(h["seconds"] for h in epochs) if epochs else None,
           "train_seconds": cfg.metrics.get("train_seconds"), "latency_ms": _latency_ms(annotator, latency_paths),
           "train": asdict(cfg.train), "thresholds": cfg.thresholds, "per_label": labels,
           "data_info": {k: cfg.data[k] for k in ("fit_images", "val_images", "augmented") if k in cfg.data}}
    m = row["runtime"]
    timing = f" {row['latency_ms']['median']:.1f} ms/img" if row["latency_ms"] else ""
    log(f"{entry.name:14s} per-class F1 {m['per_class/f1']:.4f} per-image F1 {m['per_image/f1']:.4f} N+ {m['N+']} "
        f"(runtime vs PyTorch max gap {row['max_runtime_torch_gap']}) {row['seconds_per_epoch']:.1f} s/epoch{timing}")
    return row


def run_accuracy(data: Path, out_dir: Path, entries: Sequence[Entry], train_overrides: dict, glove: Path | None,
                 cache_dir: Path, latency_images: int = 50, reuse: bool = False, probe: bool = True,
                 log: Callable[[str], None] = print, backbone: str = DEFAULT_BACKBONE,
                 head_epochs: int | None = None) -> dict:
    """Every row of the table, then the linear probe; returns the result as a JSON-ready dict.

    With ``head_epochs`` (two-stage), the ``cnn-asl`` row trains first (top stages and head, as
    ``corel-train`` does by default) and every other row trains only its head for ``head_epochs`` on that
    row's frozen backbone (``corel-train --backbone-from cnn-asl.ckpt``)."""
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.training.config import TrainConfig

    from .latency import cpu_count
    from .linear_probe import linear_probe

    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = CorelDataset(data)
    test = dataset.read("test")
    latency_paths = [s.path for s in test.samples[:latency_images]]
    started = time.perf_counter()
    if head_epochs:
        source = next(e for e in ENTRIES if e.name == SOURCE_ROW)
        entries = [source] + [e for e in entries if e.name != SOURCE_ROW]
    rows = []
    for e in entries:
        overrides = train_overrides
        if head_epochs and e.name != SOURCE_ROW:
            overrides = {**train_overrides, "epochs": head_epochs,
                         "backbone_from": str(out_dir / f"{SOURCE_ROW}.ckpt")}
        rows.append(run_entry(e, data, out_dir, overrides, glove, cache_dir, latency_paths, reuse, log, backbone))
    result = {"data": str(data), "test_images": len(test.samples), "num_labels": len(dataset.vocabulary),
              "head_epochs": head_epochs,
              "backbone": backbone, "cpu_count": cpu_count(),
              "train_config": asdict(TrainConfig(**train_overrides)), "glove": str(glove) if glove else None,
              "rows": rows}
    if probe:
        t0 = time.perf_counter()
        lp = linear_probe(data, backbone=backbone,
                          image_size=result["train_config"]["image_size"], cache_dir=cache_dir)
        lp["seconds"] = time.perf_counter() - t0
        lp["per_label"] = per_label(data, lp.pop("label_sets"))
        result["linear_probe"] = lp
        log(f"linear probe   per-class F1 {lp['metrics']['per_class/f1']:.4f} "
            f"per-image F1 {lp['metrics']['per_image/f1']:.4f}")
    result["seconds"] = time.perf_counter() - started
    return result


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# The reference implementations' Corel-5k table (TResNet-M at 448 px, fine-tuned end to end on a GPU;
# test split, 260 labels): per-class P/R/F1, per-image P/R/F1, N+.  Shown beside our rows on Corel-5k.
REFERENCE_COREL5K = (
    ("RIA", (0.409, 0.421, 0.415, 0.647, 0.606, 0.626, 156)),
    ("SR-CNN-RNN", (0.405, 0.391, 0.398, 0.680, 0.616, 0.646, 145)),
    ("CNN-RNN + attention", (0.438, 0.429, 0.434, 0.663, 0.616, 0.638, 160)),
    ("attention + MLA", (0.449, 0.413, 0.431, 0.656, 0.608, 0.632, 155)),
    ("ML-GCN + ASL", (0.453, 0.495, 0.473, 0.594, 0.670, 0.630, 175)),
)


def is_corel5k(result: dict) -> bool:
    """Whether the run scored Corel-5k's test split (499 photos, 260 labels): the reference rows apply."""
    return result.get("test_images") == 499 and result.get("num_labels") == 260


def _metric_cells(m: dict, bold: bool = True) -> str:
    b = "**" if bold else ""
    return (f"{_f(m['per_class/precision'])} | {_f(m['per_class/recall'])} | {b}{_f(m['per_class/f1'])}{b} | "
            f"{_f(m['per_image/precision'])} | {_f(m['per_image/recall'])} | {b}{_f(m['per_image/f1'])}{b} | "
            f"{m['N+']} | {_f(m.get('mAP'))}")


def markdown(result: dict, command: str = "") -> str:
    """The reference's table: per-class and per-image P/R/F1, N+, mAP, plus cost columns, then the
    per-label view (mean per-label F1 by training frequency, labels never predicted)."""
    cfg = result["train_config"]
    backbone = result.get("backbone", DEFAULT_BACKBONE)
    lines = [
        f"Test split of `{result['data']}` ({result['test_images']} images), {result['cpu_count']} CPU cores, "
        f"CPU only. Backbone {backbone} (ImageNet) at {cfg['image_size']} px; {cfg['epochs']} epochs, "
        f"lr {cfg['lr']:g}, top stages trained {cfg['train_top']}, augmented views {cfg['augment_views']}, "
        f"validation fraction {cfg['val_fraction']}, score models' labels: {cfg['threshold_tuning']} thresholds.",
        *([f"Two-stage: `{SOURCE_ROW}` trains the top stages and its head; every other row trains only its head "
           f"({result['head_epochs']} epochs) on that frozen backbone (`corel-train --backbone-from {SOURCE_ROW}.ckpt`)."]
          if result.get("head_epochs") else []),
        "Metrics are the runtime's (exported fp32 bundle, onnxruntime); the last column is the largest difference "
        "from the PyTorch figures of the same checkpoint. Training minutes exclude the shared feature extraction.",
        "",
        "| method | P (class) | R (class) | F1 (class) | P (image) | R (image) | F1 (image) | N+ | mAP "
        "| train min | s/epoch | ms/img (b1) | runtime − PyTorch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    if is_corel5k(result):
        for name, (cp, cr, cf, ip, ir, i_f, n_plus) in REFERENCE_COREL5K:
            lines.append(f"| reference: {name} (GPU) | {cp:.3f} | {cr:.3f} | {cf:.3f} | {ip:.3f} | {ir:.3f} | "
                         f"{i_f:.3f} | {n_plus} | – | – | – | – | – |")
    best = max(r["runtime"]["per_class/f1"] for r in result["rows"]) if result["rows"] else 0.0
    for r in result["rows"]:
        flag = " †" if best - r["runtime"]["per_class/f1"] > 0.05 else ""
        minutes = r["train_seconds"] / 60 if r.get("train_seconds") else None
        latency = r["latency_ms"]["median"] if r.get("latency_ms") else None
        lines.append(f"| {r['name']}{flag} | {_metric_cells(r['runtime'])} | {_f(minutes, 1)} | "
                     f"{_f(r['seconds_per_epoch'], 1)} | {_f(latency, 1)} | {_f(r['max_runtime_torch_gap'], 4)} |")
    probe = result.get("linear_probe")
    if probe:
        lines.append(f"| linear probe (0.5) | {_metric_cells(probe['metrics'], bold=False)} | "
                     f"{_f(probe.get('fit_seconds', 0) / 60, 1)} | – | – | – |")
    if any(best - r["runtime"]["per_class/f1"] > 0.05 for r in result["rows"]):
        lines += ["", "† more than 0.05 per-class F1 below the best row."]
    views = [(r["name"], r["per_label"]) for r in result["rows"] if r.get("per_label")]
    if probe and probe.get("per_label"):
        views.append(("linear probe (0.5)", probe["per_label"]))
    if views:
        buckets = views[0][1]["buckets"]
        lines += ["", "Mean per-label F1 on the test split by the number of training photos of the label "
                  "(labels with test photos in each bucket; never predicted in brackets):", "",
                  "| method | " + " | ".join(f"{b['bucket']} ({b['labels_in_test']} labels)" for b in buckets)
                  + " | labels never predicted |",
                  "| --- |" + " ---: |" * (len(buckets) + 1)]
        for name, view in views:
            cells = " | ".join(f"{_f(b['f1'])} ({b['never_predicted']})" for b in view["buckets"])
            lines.append(f"| {name} | {cells} | {len(view['never_predicted'])} of {view['labels_in_test']} |")
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
                 markdown_of: Callable[[dict, str], str], precision: str | None = None) -> list[Path]:
    """``stem.json`` (the result with its command and its ``"machine"`` record, measured at ``precision``)
    and ``stem.md`` (``markdown_of`` the result, then the line naming the machine)."""
    import json

    from .hardware import record_of, with_machine_line

    out_dir.mkdir(parents=True, exist_ok=True)
    result = {**record_of(result, precision), "command": command}
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(result, indent=1))
    paths[1].write_text(with_machine_line(markdown_of(result, command), result["machine"]))
    return paths


def write(result: dict, out_dir: Path, stem: str = "accuracy", command: str = "") -> list[Path]:
    from .per_label import chart as label_chart

    paths = write_tables(result, out_dir, stem, command, markdown, precision="fp32 (onnxruntime)")
    paths += [out_dir / f"{stem}.png", out_dir / f"{stem}-labels.png"]
    chart(result, paths[2])
    views = [(r["name"], r["per_label"]) for r in result["rows"]]
    if result.get("linear_probe"):
        views.append(("linear probe", result["linear_probe"]["per_label"]))
    label_chart(views, paths[3], f"{Path(result['data']).name}: F1 by how many training photos a label has")
    return paths
