"""How a bundle's label memory combines with its own scores (the rules of ``manifest.MemorySpec``).

The memory graph itself (kNN label transfer over stored example embeddings) runs in the engine like
any other graph; these are the two small numpy rules every runtime applies to its output.
"""
from __future__ import annotations

import numpy as np

from .bundle.manifest import MemorySpec

EMBEDDING_OUTPUT = "embedding"
"""The encoder output every exported bundle has (format 3): the L2-normalised pooled features ``[B, D]``
that the label memory stores and searches."""


def blend_scores(probs: np.ndarray, memory_scores: np.ndarray, memory: MemorySpec) -> np.ndarray:
    """Score bundles: ``(1 - weight) * sigmoid(logit) + weight * memory`` for the head's labels, the
    memory's score alone for the labels added after them; ``[B, V]`` float32."""
    out = np.array(memory_scores, dtype=np.float32, copy=True)
    head = memory.head_labels
    w = np.float32(memory.weight)
    out[:, :head] = (np.float32(1.0) - w) * probs.astype(np.float32)[:, :head] + w * out[:, :head]
    return out


def interpolate_log_probs(logp: np.ndarray, memory_rows: np.ndarray, weight: float) -> np.ndarray:
    """Sequence bundles (kNN-LM): a step's ``[R, V + 1]`` log-probabilities mixed with the memory's label
    distribution of each row's image ``[R, V]``.  The memory keeps the step's stop probability and shares
    the rest among the labels in proportion to its scores (a row whose memory scores are all 0 keeps the
    step's distribution); the result is ``log((1 - weight) * p + weight * q)`` in float64."""
    if weight == 0.0:
        return logp
    p = np.exp(logp.astype(np.float64))
    num_labels = memory_rows.shape[1]
    mass = memory_rows.astype(np.float64).sum(axis=1, keepdims=True)
    q = p.copy()
    share = np.divide(memory_rows, mass, out=np.zeros_like(memory_rows, dtype=np.float64), where=mass > 0)
    has = mass[:, 0] > 0
    q[has, :num_labels] = (1.0 - p[has, num_labels:num_labels + 1]) * share[has]
    with np.errstate(divide="ignore"):
        return np.log((1.0 - weight) * p + weight * q)
