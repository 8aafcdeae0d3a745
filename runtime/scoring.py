"""Scores to labels for score-based bundles (cnn, ml-gcn): thresholds, an optional top-k cap and an optional
floor of labels per image.  PyTorch evaluation and every runtime path go through :func:`select_labels`."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -logits.astype(np.float64))).astype(np.float32)


def select_labels(probs: np.ndarray, thresholds: Sequence[float] | np.ndarray,
                  top_k: int | None = None, min_labels: int = 0) -> list[list[int]]:
    """Per image, the label ids whose score reaches that label's threshold, at most ``top_k`` (None or 0:
    no cap); an image with fewer than ``min_labels`` such labels gets its ``min_labels`` best labels
    instead (every training image has a label, so an empty answer is never right).

    Labels rank by score relative to their own threshold (``score / threshold``; a threshold of 0 ranks
    first), ties toward the lower threshold, then the lower id: with one threshold for every label
    this is the order of the scores, and with per-label thresholds the cap and the floor keep the
    labels that clear their own bar by the most."""
    thr = np.asarray(thresholds, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = probs.astype(np.float64) / thr.astype(np.float64)
    ratio = np.where(thr > 0, ratio, np.inf)
    if probs.shape[0] == 0:
        return []
    # one stable sort for the whole batch over columns already in (threshold, id) order, so ties keep
    # that order; the labels that reach their threshold (ratio >= 1) lead each row
    columns = np.argsort(thr, kind="stable")
    order = columns[np.argsort(-ratio[:, columns], axis=1, kind="stable")]
    passed = (np.take_along_axis(probs, order, axis=1) >= thr[order]).sum(axis=1)
    if top_k:
        passed = np.minimum(passed, top_k)
    passed = np.where(passed < min_labels, min(min_labels, thr.size), passed)
    return [row[:k].tolist() for row, k in zip(order, passed)]
