"""A label learned without retraining: train with one label held out, then ``corel-memory add`` 5, 10 and
20 of its photos, and measure that label on the test split next to the other labels.

    corel-bench new-label --data ../shared/corel5k --train-args "--train-top 0 --augment-views 0"

1. ``minus/``: the data set with the label taken out of the vocabulary and of every label set (a label
   that never stands alone in a training label set is chosen, so every photo stays and the adapted
   backbone of ``--backbone-from`` can be reused).
2. ``cnn`` with ASL trains on it (with ``--backbone-from``, only its head, on that checkpoint's adapted
   backbone, which saw the label: the head and the memory never did; with ``--train-top 0`` in
   ``--train-args``, on the frozen ImageNet backbone, which never saw it) and is exported with its label
   memory.
3. For each count n, n training photos that carry the label (a seeded draw, nested: the 5 are among the
   10) are added with ``corel-memory add``; they are already in the memory, so the label joins their
   existing examples.  The test split is annotated by each bundle through the runtime.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

Log = Callable[[str], None]


def choose_label(data: Path, low: int = 25, high: int = 80) -> str:
    """The label with ``low``-``high`` training photos that is never a photo's only label and has the most test
    photos (ties: vocabulary order)."""
    from corel_annotate.runtime.dataset import CorelDataset

    ds = CorelDataset(data)
    train, test = ds.read("train"), ds.read("test")
    alone = {s.labels[0] for s in train.samples if len(s.labels) == 1}
    counts = {label: sum(label in s.labels for s in train.samples) for label in ds.vocabulary.labels}
    tests = {label: sum(label in s.labels for s in test.samples) for label in ds.vocabulary.labels}
    candidates = [label for label in ds.vocabulary.labels if low <= counts[label] <= high and label not in alone]
    if not candidates:
        raise ValueError(f"{data}: no label with {low}-{high} training photos that never stands alone")
    return max(candidates, key=lambda label: (tests[label], -ds.vocabulary.labels.index(label)))


def _split(samples, drop: str | None = None, only: Sequence[str] | None = None) -> list[dict]:
    out = []
    for s in samples:
        if only is not None and s.image_name not in only:
            continue
        labels = [label for label in s.labels if label != drop]
        if labels:
            out.append({"image_name": s.image_name, "image_labels": labels})
    return out


def make_dirs(data: Path, label: str, out: Path, shots: Sequence[int], seed: int = 0) -> tuple[Path, dict[int, Path]]:
    """``out/minus`` (the label held out) and ``out/add-N`` (N training photos that carry it, full label sets)."""
    from corel_annotate.runtime.dataset import CorelDataset

    ds = CorelDataset(data)
    train, test = ds.read("train"), ds.read("test")
    minus = out / "minus"
    minus.mkdir(parents=True, exist_ok=True)
    if not (minus / "images").exists():
        (minus / "images").symlink_to((data / "images").resolve(), target_is_directory=True)
    (minus / "vocabulary.txt").write_text("\n".join(v for v in ds.vocabulary.labels if v != label) + "\n")
    (minus / "train.json").write_text(json.dumps({"samples": _split(train.samples, drop=label)}))
    (minus / "test.json").write_text(json.dumps({"samples": _split(test.samples, drop=label)}))
    carriers = [s.image_name for s in train.samples if label in s.labels]
    drawn = random.Random(seed).sample(carriers, min(max(shots), len(carriers)))
    adds = {}
    for n in shots:
        d = out / f"add-{n}"
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "images").exists():
            (d / "images").symlink_to((data / "images").resolve(), target_is_directory=True)
        (d / "vocabulary.txt").write_text("\n".join(ds.vocabulary.labels) + "\n")
        (d / "train.json").write_text(json.dumps({"samples": _split(train.samples, only=set(drawn[:n]))}))
        adds[n] = d
    return minus, adds


def _run(args: list[str], log: Log) -> None:
    log("$ " + " ".join(args))
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise ValueError(f"{args[0]} failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")


def _scores(bundle: Path, data: Path, label: str) -> dict:
    """The held-out label's test precision/recall/F1 and the other labels' per-class F1 (over the source
    vocabulary minus the label), annotating the test split of ``data`` through the runtime."""
    from corel_annotate.runtime.annotator import Annotator
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.runtime.evaluation.metrics import annotation_metrics, label_sets_to_matrix

    ds = CorelDataset(data)
    test = ds.read("test")
    annotator = Annotator.load(bundle, device="cpu")
    got = annotator.annotate([s.path for s in test.samples], batch_size=32)
    others = [v for v in ds.vocabulary.labels if v != label]
    index = {v: i for i, v in enumerate(others)}
    truth = label_sets_to_matrix([[index[v] for v in s.labels if v in index] for s in test.samples], len(others))
    said = label_sets_to_matrix([[index[v] for v in a.labels if v in index] for a in got], len(others))
    m = annotation_metrics(truth, said)
    t = np.array([label in s.labels for s in test.samples])
    p = np.array([label in a.labels for a in got])
    tp = int((t & p).sum())
    return {"label_test_photos": int(t.sum()), "label_predicted": int(p.sum()), "label_tp": tp,
            "label_recall": tp / max(1, int(t.sum())), "label_precision": tp / max(1, int(p.sum())),
            "label_f1": 2 * tp / max(1, int(t.sum()) + int(p.sum())),
            "others_per_class_f1": m.per_class_f1, "others_per_image_f1": m.per_image_f1, "others_n_plus": m.n_plus}


def run_new_label(data: Path, backbone_from: Path | None, out_dir: Path, label: str | None, shots: Sequence[int],
                  train_args: Sequence[str], command: str, log: Log) -> dict:
    from .hardware import machine

    bin_dir = Path(sys.executable).parent
    label = label or choose_label(data)
    log(f"held-out label: {label}")
    minus, adds = make_dirs(data, label, out_dir, shots)
    ckpt, bundle = out_dir / "minus.ckpt", out_dir / "minus.bundle"
    if not ckpt.exists():
        source = ["--backbone-from", str(backbone_from)] if backbone_from else []
        _run([str(bin_dir / "corel-train"), "--data", str(minus), "--method", "cnn", "--loss", "asl", *source,
              "--out", str(ckpt), "--no-progress", *train_args], log)
    _run([str(bin_dir / "corel-export"), str(ckpt), "-o", str(bundle), "--force"], log)
    rows = [{"added_photos": 0, **_scores(bundle, data, label)}]
    for n, d in adds.items():
        plus = out_dir / f"plus-{n}.bundle"
        _run([str(bin_dir / "corel-memory"), "add", str(bundle), "--data", str(d), "-o", str(plus), "--force"], log)
        rows.append({"added_photos": n, **_scores(plus, data, label)})
        log(f"{n} photos: {label} recall {rows[-1]['label_recall']:.3f} precision {rows[-1]['label_precision']:.3f}; "
            f"other labels per-class F1 {rows[-1]['others_per_class_f1']:.4f}")
    return {"data": str(data), "label": label, "backbone_from": str(backbone_from) if backbone_from else None, "rows": rows,
            "machine": machine("fp32").to_dict(), "command": command}


def markdown(result: dict) -> str:
    lines = [f"Held-out label `{result['label']}` ({result['rows'][0]['label_test_photos']} test photos); the other "
             "labels' figures are over the rest of the vocabulary. Test split through the runtime (onnxruntime fp32).",
             "", "| photos added | label recall | label precision | label F1 | other labels: per-class F1 | per-image F1 | N+ |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['added_photos']} | {r['label_recall']:.3f} | {r['label_precision']:.3f} | {r['label_f1']:.3f} "
                     f"| {r['others_per_class_f1']:.4f} | {r['others_per_image_f1']:.4f} | {r['others_n_plus']} |")
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def write(result: dict, out_dir: Path, stem: str = "new-label") -> list[Path]:
    from .report import write_json_and_markdown

    return write_json_and_markdown(result, out_dir, stem, markdown(result))
