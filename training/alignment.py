"""Order-free target alignment for the recurrent decoders.

``mla``: minimal-loss alignment (Yazici et al., CVPR 2020): for each image, the
target labels are re-ordered by a Hungarian assignment of labels to steps on
the step-wise losses.  ``pla``: the reference's partial alignment: labels the
model already predicts keep the step where it predicts them, and only the rest
are assigned by the Hungarian algorithm.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def align_mla(log_probs: np.ndarray, targets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``log_probs [B, T, V+1]``, ``targets [B, T]`` (labels then stop), ``lengths [B]`` -> re-ordered targets."""
    out = targets.copy()
    for i, n in enumerate(lengths):
        n = int(n)
        if n < 2:
            continue
        labels = targets[i, :n]
        cost = -log_probs[i, :n][:, labels]
        rows, cols = linear_sum_assignment(cost)
        out[i, rows] = labels[cols]
    return out


def align_pla(log_probs: np.ndarray, targets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Partial alignment as in the reference: keep predicted labels where predicted, Hungarian for the rest."""
    predicted = log_probs.argmax(axis=2)
    out = targets.copy()
    for i, n in enumerate(lengths):
        n = int(n)
        if n < 1:
            continue
        row = out[i]
        label_set = set(int(x) for x in targets[i, :n])
        predicted_set = set(int(x) for x in predicted[i])
        common = label_set & predicted_set
        missing = label_set - predicted_set
        for j in range(n):
            label = int(predicted[i, j])
            if label in common:
                if row[j] != label:
                    k = int(np.where(row[:n] == label)[0][0])
                    row[k], row[j] = row[j], label
                common.discard(label)
        if len(missing) > 1:
            positions = [j for j in range(n) if int(row[j]) in missing]
            labels = row[positions].copy()
            cost = -log_probs[i, positions][:, labels]
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                row[positions[r]] = labels[c]
    return out


def align_targets(mode: str, logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Re-order ``targets`` for ``mode`` (``mla`` or ``pla``) given free-running ``logits``."""
    log_probs = torch.log_softmax(logits.detach().float(), dim=-1).cpu().numpy()
    t = targets.detach().cpu().numpy()
    n = lengths.detach().cpu().numpy()
    aligned = align_mla(log_probs, t, n) if mode == "mla" else align_pla(log_probs, t, n)
    return torch.as_tensor(aligned, device=targets.device)
