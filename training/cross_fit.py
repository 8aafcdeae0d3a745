"""Out-of-fold head scores for every training photo (``--threshold-tuning oof``).

The final model trains on all training photos, so no photo is left to tune its operating point on.
Instead the head is cross-fitted: the training photos are split into ``folds`` parts, and for each
part a fresh head (built as the final one is, from the other parts' labels) trains for the same
number of epochs on the other parts' head inputs and scores the part it never saw.  Every photo then
has a score it was not trained on, and every label's threshold sees all of the label's positives.

The head inputs are the final model's: with ``--train-top`` its trained top stages (frozen here)
turn the cached features into head inputs, so only the head is cross-fitted; the top stages saw
every photo.  With a frozen backbone and ``--train-top 0`` the out-of-fold scores are exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from .config import DecodingConfig, TrainConfig
from .evaluation import predict_features
from .models.base import AnnotationModel

Log = Callable[[str], None]


def fold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint, sorted index sets covering ``range(n)``, from a permutation seeded by ``seed``."""
    if folds < 2 or n < folds:
        raise ValueError(f"cross-fitting needs at least 2 folds and a photo per fold ({n} photos, {folds} folds)")
    order = np.random.default_rng(seed + 7919).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


@dataclass
class CrossFit:
    """Out-of-fold scores ``[N, L]`` (row i from the head that did not train on photo i) and the folds."""

    scores: np.ndarray
    folds: list[np.ndarray]


def cross_fit_scores(make_head: Callable[[np.ndarray], AnnotationModel], views: list[np.ndarray],
                     targets: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, train_cfg: TrainConfig,
                     decode: DecodingConfig, device: str, log: Log,
                     on_epoch: Callable[[], None] = lambda: None) -> CrossFit:
    """Cross-fit the head over ``views`` (head inputs of every training photo; view 0 the plain one).

    ``make_head(fit_idx)`` builds a fresh model whose head trains on those photos; its optimiser,
    schedule, epochs, batch size and seeds are the final model's (``train_cfg``)."""
    from .data import ViewDataset
    from .loop import LossModule, train_batches

    n = views[0].shape[0]
    folds = fold_indices(n, train_cfg.folds, train_cfg.seed)
    scores: np.ndarray | None = None
    for k, held in enumerate(folds):
        fit = np.setdiff1d(np.arange(n), held)
        torch.manual_seed(train_cfg.seed * 1000 + 100 + k)
        model = make_head(fit).to(device)
        generator = torch.Generator().manual_seed(train_cfg.seed * 1000 + 200 + k)
        loader = DataLoader(ViewDataset(views, fit, targets, tokens, lengths), batch_size=train_cfg.batch_size,
                            shuffle=True, generator=generator, num_workers=0)
        optimizer = torch.optim.Adam(model.head_parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train_cfg.lr, epochs=train_cfg.epochs,
                                                        steps_per_epoch=max(1, len(loader)),
                                                        pct_start=train_cfg.pct_start)
        wrapped = LossModule(model, from_images=False, head_inputs=True)
        loss = float("nan")
        for _ in range(train_cfg.epochs):
            loss = train_batches(model, wrapped, loader, optimizer, scheduler, train_cfg.grad_clip, device)
            on_epoch()
        held_inputs = torch.from_numpy(np.asarray(views[0][held], dtype=np.float32))
        part = predict_features(model, held_inputs, decode.greedy()).scores
        if scores is None:
            scores = np.zeros((n, part.shape[1]), dtype=np.float32)
        scores[held] = part
        log(f"fold {k + 1}/{len(folds)}: head trained on {fit.size} photos (last loss {loss:.4f}), "
            f"scored the other {held.size}")
    assert scores is not None
    return CrossFit(scores, folds)
