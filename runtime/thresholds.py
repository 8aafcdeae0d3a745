"""Per-label decision thresholds for score-based models, tuned on a validation split.

For each label the threshold on its sigmoid score is chosen from a grid to maximise that label's
Matthews correlation coefficient (the reference's best variant) or F1 on validation data; a
label without positives (or negatives) there keeps 0.5.  The thresholds are stored in the
checkpoint and the bundle manifest, and the runtime applies them.
"""
from __future__ import annotations

import numpy as np

METRICS = ("mcc", "f1")
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
    score_fn = mcc if metric == "mcc" else f1
    order = sorted(grid, key=lambda t: (abs(t - 0.5), t))
    out = np.full(scores.shape[1], 0.5, dtype=np.float32)
    y_all = targets.astype(bool)
    for label in range(scores.shape[1]):
        y = y_all[:, label]
        if y.all() or not y.any():
            continue
        best, best_value = 0.5, -np.inf
        for t in order:
            value = score_fn(y, scores[:, label] >= t)
            if value > best_value:
                best, best_value = t, value
        out[label] = best
    return out
