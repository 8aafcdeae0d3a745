"""The per-label view of a test run: which labels are never predicted, and F1 by training frequency.

Per-class F1 and N+ average over all labels, so on Corel-5k (260 labels, a long tail of labels with
one to five training photos) they are decided by the rare labels.  This module splits the labels
into buckets by how many training photos carry them and reports, per bucket, the mean per-label
precision, recall and F1 (over labels with at least one test photo) and how many of them are
never predicted on the test split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

# Upper bounds (inclusive) of the training-frequency buckets; the last bucket is open-ended.
BUCKETS: tuple[tuple[str, int, float], ...] = (("1-5", 1, 5), ("6-20", 6, 20), ("21-100", 21, 100),
                                                ("101+", 101, float("inf")))


def label_scores(targets: np.ndarray, predictions: np.ndarray) -> dict[str, np.ndarray]:
    """Per-label true positives, predicted and ground-truth counts, precision, recall and F1 (``[L]`` each;
    precision is 0 for a label never predicted, recall 0 for a label with no test photo)."""
    t = np.asarray(targets, dtype=bool)
    o = np.asarray(predictions, dtype=bool)
    if t.shape != o.shape or t.ndim != 2:
        raise ValueError(f"targets {t.shape} and predictions {o.shape} must be the same [N, L] shape")
    tp = (t & o).sum(axis=0).astype(np.float64)
    predicted = o.sum(axis=0).astype(np.float64)
    positives = t.sum(axis=0).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, positives, out=np.zeros_like(tp), where=positives > 0)
    f1 = np.divide(2 * tp, predicted + positives, out=np.zeros_like(tp), where=(predicted + positives) > 0)
    return {"tp": tp, "predicted": predicted, "positives": positives, "precision": precision, "recall": recall,
            "f1": f1}


def per_label_view(train_counts: Sequence[int], targets: np.ndarray, predictions: np.ndarray,
                   vocabulary: Sequence[str]) -> dict:
    """Buckets by training frequency and the labels never predicted, as a JSON-ready dict.

    A bucket's ``f1``, ``precision`` and ``recall`` are means over its labels that have test photos;
    ``never_predicted`` counts those of them the method never outputs on the test split."""
    counts = np.asarray(train_counts)
    if counts.shape != (len(vocabulary),):
        raise ValueError(f"train counts {counts.shape} do not match {len(vocabulary)} labels")
    s = label_scores(targets, predictions)
    in_test = s["positives"] > 0
    buckets = []
    for name, low, high in BUCKETS:
        members = (counts >= low) & (counts <= high)
        scored = members & in_test
        n = int(scored.sum())
        buckets.append({
            "bucket": name, "labels": int(members.sum()), "labels_in_test": n,
            "test_positives": int(s["positives"][scored].sum()),
            "precision": float(s["precision"][scored].mean()) if n else None,
            "recall": float(s["recall"][scored].mean()) if n else None,
            "f1": float(s["f1"][scored].mean()) if n else None,
            "never_predicted": int((scored & (s["predicted"] == 0)).sum()),
        })
    never = np.flatnonzero(in_test & (s["predicted"] == 0))
    return {
        "buckets": buckets,
        "never_predicted": [{"label": vocabulary[i], "train": int(counts[i]), "test": int(s["positives"][i])}
                            for i in never],
        "labels_in_test": int(in_test.sum()),
        "labels_predicted": int((s["predicted"] > 0).sum()),
    }


def chart(rows: Sequence[tuple[str, dict]], path: Path, title: str) -> None:
    """Grouped bars: mean per-label F1 in each training-frequency bucket, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [b[0] for b in BUCKETS]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / max(1, len(rows))
    for k, (name, view) in enumerate(rows):
        values = [b["f1"] or 0.0 for b in view["buckets"]]
        ax.bar([i - 0.4 + width * (k + 0.5) for i in range(len(names))], values, width, label=name)
    first = rows[0][1]["buckets"] if rows else []
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{b['bucket']} training photos\n({b['labels_in_test']} labels in test)" for b in first]
                       if first else names)
    ax.set_ylabel("mean per-label F1 (test)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
