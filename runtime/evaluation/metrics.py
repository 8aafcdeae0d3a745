"""Multi-label annotation metrics (numpy only).

The formulas reproduce the reference PyTorch evaluation exactly, in float64:
per-class precision/recall are averaged over *all* labels (a label never
predicted contributes precision 0, a label without ground truth contributes
recall 0), per-image ("overall", micro) precision/recall pool every
image-label pair, and F1 adds ``EPS`` to the denominator like the reference.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

EPS = 1e-7

__all__ = [
    "EPS",
    "AnnotationMetrics",
    "annotation_metrics",
    "average_precision",
    "mean_average_precision",
    "label_sets_to_matrix",
]


@dataclass(frozen=True)
class AnnotationMetrics:
    """Result of :func:`annotation_metrics`; ``mean_ap`` is set only when scores were given."""

    per_class_precision: float
    per_class_recall: float
    per_class_f1: float
    per_image_precision: float
    per_image_recall: float
    per_image_f1: float
    n_plus: int
    mean_ap: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """Flat mapping with the metric names used in logs and reports."""
        return {
            "per_class/precision": self.per_class_precision,
            "per_class/recall": self.per_class_recall,
            "per_class/f1": self.per_class_f1,
            "per_image/precision": self.per_image_precision,
            "per_image/recall": self.per_image_recall,
            "per_image/f1": self.per_image_f1,
            "N+": self.n_plus,
            "mAP": self.mean_ap,
        }

    def format_table(self) -> str:
        """Aligned plain-text table, one metric per line (``n/a`` for a missing mAP)."""
        items = self.to_dict()
        width = max(len(name) for name in items)
        lines = []
        for name, value in items.items():
            if value is None:
                text = "n/a"
            elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                text = str(int(value))
            else:
                text = f"{float(value):.4f}"
            lines.append(f"{name:<{width}}  {text:>8}")
        return "\n".join(lines)


def _as_binary(name: str, array: np.ndarray) -> np.ndarray:
    """Check that ``array`` is a non-empty-in-N 2-D 0/1 matrix and return it as float64."""
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, L], got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError(f"{name} must contain at least one image (N >= 1), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be bool or numeric, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    if not np.all((out == 0.0) | (out == 1.0)):
        raise ValueError(f"{name} must contain only 0/1 values")
    return out


def _as_scores(scores: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Check that ``scores`` is a finite real matrix of the given shape; return float64."""
    arr = np.asarray(scores)
    if arr.shape != shape:
        raise ValueError(f"scores shape {arr.shape} does not match targets shape {shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            or arr.dtype == bool):
        raise ValueError(f"scores must be real-valued, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError("scores must be finite (no NaN or inf)")
    return out


def _f1(precision: float, recall: float) -> float:
    """Reference F1: ``2 p r / (p + r + EPS)``."""
    return 2.0 * (precision * recall) / (precision + recall + EPS)


def annotation_metrics(
    targets: np.ndarray,
    predictions: np.ndarray,
    scores: np.ndarray | None = None,
) -> AnnotationMetrics:
    """Per-class / per-image precision, recall, F1 and N+ for binary [N, L] matrices.

    ``scores`` (optional, [N, L] real) additionally yields the mean average precision.
    """
    t = _as_binary("targets", targets)
    o = _as_binary("predictions", predictions)
    if t.shape != o.shape:
        raise ValueError(f"targets shape {t.shape} does not match predictions shape {o.shape}")

    tp = (t * o).sum(axis=0)
    predicted = o.sum(axis=0)
    groundtruth = t.sum(axis=0)

    per_class_precision = float(np.mean(tp / (predicted + EPS))) if t.shape[1] else 0.0
    per_class_recall = float(np.mean(tp / (groundtruth + EPS))) if t.shape[1] else 0.0
    per_image_precision = float(tp.sum() / (predicted.sum() + EPS))
    per_image_recall = float(tp.sum() / (groundtruth.sum() + EPS))

    mean_ap = None
    if scores is not None:
        mean_ap = mean_average_precision(t, scores)

    return AnnotationMetrics(
        per_class_precision=per_class_precision,
        per_class_recall=per_class_recall,
        per_class_f1=_f1(per_class_precision, per_class_recall),
        per_image_precision=per_image_precision,
        per_image_recall=per_image_recall,
        per_image_f1=_f1(per_image_precision, per_image_recall),
        n_plus=int(np.count_nonzero(tp > 0)),
        mean_ap=mean_ap,
    )


def average_precision(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-label average precision, shape [L]; NaN for labels without any positive image.

    Images are ranked by descending score; AP is the mean, over the positive images,
    of the precision at each positive's rank. Ties are broken by a stable sort of
    ``-scores``, i.e. tied images keep their original (row) order, so the result is
    deterministic.
    """
    t = _as_binary("targets", targets)
    s = _as_scores(scores, t.shape)
    order = np.argsort(-s, axis=0, kind="stable")
    ranked = np.take_along_axis(t, order, axis=0)
    ranks = np.arange(1, t.shape[0] + 1, dtype=np.float64)[:, None]
    precision_at_rank = np.cumsum(ranked, axis=0) / ranks
    n_pos = ranked.sum(axis=0)
    summed = (precision_at_rank * ranked).sum(axis=0)
    ap = np.full(t.shape[1], np.nan, dtype=np.float64)
    has_pos = n_pos > 0
    ap[has_pos] = summed[has_pos] / n_pos[has_pos]
    return ap


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean of :func:`average_precision` over labels with at least one positive (NaN if none)."""
    ap = average_precision(targets, scores)
    valid = ap[~np.isnan(ap)]
    if valid.size == 0:
        return float("nan")
    return float(valid.mean())


def label_sets_to_matrix(label_sets: Sequence[Iterable[int]], num_labels: int) -> np.ndarray:
    """Convert per-image collections of label ids into a [N, num_labels] uint8 indicator matrix."""
    if isinstance(num_labels, bool) or not isinstance(num_labels, numbers.Integral) or num_labels < 0:
        raise ValueError(f"num_labels must be a non-negative integer, got {num_labels!r}")
    matrix = np.zeros((len(label_sets), int(num_labels)), dtype=np.uint8)
    for row, labels in enumerate(label_sets):
        for label in labels:
            if isinstance(label, bool) or not isinstance(label, numbers.Integral):
                raise ValueError(f"image {row}: label id {label!r} is not an integer")
            if not 0 <= label < num_labels:
                raise ValueError(
                    f"image {row}: label id {int(label)} out of range [0, {int(num_labels)})"
                )
            matrix[row, int(label)] = 1
    return matrix
