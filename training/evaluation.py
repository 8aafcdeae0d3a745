"""PyTorch-side prediction and the reference metrics, for validation and test splits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from corel_annotate.runtime.evaluation.metrics import AnnotationMetrics, annotation_metrics, label_sets_to_matrix
from corel_annotate.runtime.scoring import select_labels

from .config import DecodingConfig
from .decoding import search_labels
from .models.base import AnnotationModel


@dataclass
class Predictions:
    """Label sets for every image, a binary matrix of them, and label scores where the method has them."""

    label_sets: list[list[int]]
    matrix: np.ndarray
    scores: np.ndarray | None


@torch.no_grad()
def predict_features(model: AnnotationModel, feats: torch.Tensor, decode_config: DecodingConfig,
                     thresholds: Sequence[float] | None = None, batch_size: int = 64, top_k: int = 0,
                     min_labels: int = 0) -> Predictions:
    """Predict from head inputs (cached features), batch by batch, in eval mode; score models choose labels
    as the runtime does (thresholds, ``top_k`` cap, ``min_labels`` floor)."""
    was_training = model.training
    model.eval()
    num_labels = model.config.num_labels
    sets: list[list[int]] = []
    all_scores = []
    device = next(model.parameters()).device
    try:
        for start in range(0, feats.shape[0], batch_size):
            chunk = feats[start:start + batch_size].to(device)
            if model.is_sequence:
                sets.extend(hyp.labels for hyp in search_labels(model, model.init_state(chunk), decode_config))
            else:
                probs = torch.sigmoid(model.logits(chunk)).float().cpu().numpy()
                thr = np.asarray(thresholds if thresholds else [0.5] * num_labels, dtype=np.float32)
                all_scores.append(probs)
                sets.extend(select_labels(probs, thr, top_k, min_labels))
    finally:
        model.train(was_training)
    scores = np.concatenate(all_scores) if all_scores else None
    return Predictions(sets, label_sets_to_matrix(sets, num_labels), scores)


@torch.no_grad()
def predict_images(model: AnnotationModel, images: np.ndarray, decode_config: DecodingConfig,
                   thresholds: Sequence[float] | None = None, top_k: int = 0, min_labels: int = 0) -> Predictions:
    """The PyTorch reference path from preprocessed images ``[B, 3, S, S]`` to labels (eval mode)."""
    model.eval()
    return predict_features(model, model.features(torch.from_numpy(images)), decode_config, thresholds,
                            top_k=top_k, min_labels=min_labels)


def evaluate(predictions: Predictions, targets: np.ndarray) -> AnnotationMetrics:
    """The reference metrics (plus mAP for score-based methods)."""
    return annotation_metrics(targets.astype(np.uint8), predictions.matrix, predictions.scores)
