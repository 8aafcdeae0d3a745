"""Evaluate a bundle on a Corel-layout split with the reference metrics, through the runtime only."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..annotator import Annotation, Annotator
from ..dataset import CorelDataset
from ..photos import prefetch_batches
from .metrics import AnnotationMetrics, annotation_metrics, label_sets_to_matrix


@dataclass
class EvalResult:
    metrics: AnnotationMetrics
    annotations: list[Annotation]
    images: list[Path]
    seconds: float


def evaluate_bundle(annotator: Annotator, data_dir: str | Path, split: str = "test", beam_width: int | None = None,
                    batch_size: int = 16, progress: Callable[[int], None] | None = None) -> EvalResult:
    """Annotate every image of ``split`` and score the label sets (and, for score bundles, mAP)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size!r}")
    ds = CorelDataset(data_dir)
    if list(ds.vocabulary.labels) != list(annotator.vocabulary.labels):
        raise ValueError(f"{data_dir}/vocabulary.txt differs from the bundle's vocabulary")
    data = ds.read(split)
    if not data.samples:
        raise ValueError(f"{data_dir}/{split}.json: no usable samples")
    paths = [s.path for s in data.samples]
    annotations: list[Annotation] = []
    scores = []
    started = time.perf_counter()
    for batch in prefetch_batches(paths, annotator.preprocess_config, batch_size):
        if batch.failed:
            raise ValueError(f"{batch.failed[0][1]}")
        if annotator.manifest.is_sequence:
            annotations.extend(annotator.annotate_batch(batch.array, beam_width=beam_width))
        else:
            probs = annotator.scores(batch.array)
            scores.append(probs)
            annotations.extend(annotator.labels_from_scores(probs))
        if progress:
            progress(len(batch.paths))
    seconds = time.perf_counter() - started
    targets = label_sets_to_matrix(data.label_ids(ds.vocabulary), len(ds.vocabulary))
    predictions = label_sets_to_matrix([a.label_ids for a in annotations], len(ds.vocabulary))
    metrics = annotation_metrics(targets, predictions, np.concatenate(scores) if scores else None)
    return EvalResult(metrics, annotations, paths, seconds)


def per_class_f1(annotator: Annotator, images: np.ndarray, targets: np.ndarray, batch_size: int = 16) -> float:
    """Per-class F1 of ``annotator`` on preprocessed ``images`` (``Annotator.preprocess``) against multi-hot ``targets``
    ``[N, labels]``, with the bundle's own decoding or thresholds (the export's int8 accuracy check)."""
    ids: list[tuple[int, ...]] = []
    for i in range(0, len(images), batch_size):
        ids.extend(a.label_ids for a in annotator.annotate_batch(images[i:i + batch_size]))
    predictions = label_sets_to_matrix(ids, targets.shape[1])
    return annotation_metrics(targets, predictions).per_class_f1
