"""Scores to labels for score-based bundles (cnn, ml-gcn): thresholds, then an optional top-k cap."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -logits.astype(np.float64))).astype(np.float32)


def select_labels(probs: np.ndarray, thresholds: Sequence[float] | np.ndarray,
                  top_k: int | None = None) -> list[list[int]]:
    """Per image, the label ids whose score reaches that label's threshold, best first, at most ``top_k``."""
    thr = np.asarray(thresholds, dtype=np.float32)
    out = []
    for row in probs:
        ids = np.flatnonzero(row >= thr)
        ids = ids[np.argsort(-row[ids], kind="stable")]
        if top_k is not None:
            ids = ids[:top_k]
        out.append([int(i) for i in ids])
    return out
