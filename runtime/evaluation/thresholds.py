"""Decision thresholds for score-based models, tuned on a validation split.

``balanced`` (the default) chooses one threshold for every label, the one that maximises the mean of
per-class and per-image F1 on validation data, with at most as many labels per image as a training
image has and at least one.  On Corel-5k (260 labels, a 449-photo validation split where most labels
have a handful of positives or none) it beats per-label tuning on the test split: per-label thresholds
fit those few validation photos and flood every image with rare labels.

``mcc`` and ``f1`` choose each label's threshold from a grid to maximise that label's Matthews
correlation coefficient (the reference's best variant) or F1; a label without positives (or negatives)
there keeps 0.5.  The thresholds are stored in the checkpoint and the bundle manifest, and the runtime
applies them.
"""
from __future__ import annotations

import numpy as np

METRICS = ("mcc", "f1")
TUNINGS = ("balanced", "mcc", "f1", "none")
GRID = np.round(np.arange(0.05, 0.951, 0.025), 4)


def _counts(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float, float]:
    tp = float(np.sum(y & pred))
    fp = float(np.sum(~y & pred))
    fn = float(np.sum(y & ~pred))
    tn = float(np.sum(~y & ~pred))
    return tp, fp, fn, tn


def mcc(y: np.ndarray, pred: np.ndarray) -> float:
    """Matthews correlation of two boolean vectors (0 when undefined)."""
    tp, fp, fn, tn = _counts(y.astype(bool), pred.astype(bool))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denom) if denom > 0 else 0.0


def f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp, fp, fn, _ = _counts(y.astype(bool), pred.astype(bool))
    return 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0


def tune_thresholds(scores: np.ndarray, targets: np.ndarray, metric: str = "mcc",
                    grid: np.ndarray = GRID) -> np.ndarray:
    """``[L]`` thresholds maximising ``metric`` per label; ties go to the threshold nearest 0.5."""
    if metric not in METRICS:
        raise ValueError(f"unknown threshold metric {metric!r}; choose from {', '.join(METRICS)}")
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must be the same [N, L] shape")
    order = np.array(sorted(grid, key=lambda t: (abs(t - 0.5), t)))
    y = targets.astype(bool)
    # every label at every threshold at once: counts [L, G], as mcc()/f1() count them
    # compared at the scores' own precision, as a scalar threshold is (float32 scores: float32 thresholds)
    pred = scores[:, :, None] >= order.astype(scores.dtype if scores.dtype.kind == "f" else np.float64)[None, None, :]
    positives = y.sum(axis=0).astype(np.float64)[:, None]
    tp = np.einsum("nl,nlg->lg", y.astype(np.float64), pred.astype(np.float64))
    predicted = pred.sum(axis=0).astype(np.float64)
    fp, fn = predicted - tp, positives - tp
    tn = float(y.shape[0]) - tp - fp - fn
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "mcc":
            denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            value = np.where(denom > 0, (tp * tn - fp * fn) / denom, 0.0)
        else:
            value = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    out = order[np.argmax(value, axis=1)].astype(np.float32)  # the first best: nearest 0.5
    out[(positives[:, 0] == 0) | (positives[:, 0] == y.shape[0])] = 0.5
    return out


def balanced_threshold(scores: np.ndarray, targets: np.ndarray, top_k: int = 0, min_labels: int = 0,
                       grid: np.ndarray = GRID) -> float:
    """The one threshold (from ``grid``) maximising the mean of per-class and per-image F1 of the label sets
    that :func:`runtime.scoring.select_labels` makes with it; ties go to the threshold nearest 0.5."""
    from .metrics import annotation_metrics, label_sets_to_matrix
    from ..scoring import select_labels

    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must be the same [N, L] shape")
    best, best_value = 0.5, -np.inf
    for t in sorted(grid, key=lambda t: (abs(t - 0.5), t)):
        chosen = select_labels(scores, [float(t)] * scores.shape[1], top_k, min_labels)
        m = annotation_metrics(targets, label_sets_to_matrix(chosen, scores.shape[1]))
        value = (m.per_class_f1 + m.per_image_f1) / 2
        if value > best_value:
            best, best_value = float(t), value
    return best


def shrunk_thresholds(scores: np.ndarray, targets: np.ndarray, top_k: int = 0, min_labels: int = 0,
                      prior: float = 5.0, grid: np.ndarray = GRID) -> np.ndarray:
    """Per-label thresholds that trust a label's own data as far as it has any: each label's F1-best
    threshold, shrunk toward the :func:`balanced_threshold` by ``n / (n + prior)`` (n: the label's
    positives here), so a label seen once or twice keeps almost the global threshold.  Meant for
    :func:`runtime.scoring.select_labels` with the cap and the floor, which ranks labels by score
    relative to threshold."""
    overall = balanced_threshold(scores, targets, top_k, min_labels, grid)
    own = tune_thresholds(scores, targets, "f1", grid)
    n = np.asarray(targets, dtype=bool).sum(axis=0).astype(np.float64)
    share = n / (n + prior)
    return np.clip(overall + share * (own.astype(np.float64) - overall), 0.0, 1.0).astype(np.float32)
