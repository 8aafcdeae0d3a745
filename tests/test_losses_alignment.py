"""Multi-label losses and order-free alignment against independent computations."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corel_annotate.training.alignment import align_mla, align_pla
from corel_annotate.training.losses import AsymmetricLoss


def test_asl_without_focusing_or_margin_is_bce_summed_over_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g) * 3
    targets = (torch.rand(6, 5, generator=g) > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / 6
    assert AsymmetricLoss(0.0, 0.0, 0.0)(logits, targets) == pytest.approx(float(bce), rel=1e-5)


def test_asl_margin_drops_easy_negatives_and_focusing_shrinks_easy_positives():
    easy_negative = torch.tensor([[-6.0]])
    assert float(AsymmetricLoss(0.0, 4.0, 0.05)(easy_negative, torch.zeros(1, 1))) == pytest.approx(0.0, abs=1e-7)
    easy_positive = torch.tensor([[4.0]])
    plain = float(AsymmetricLoss(0.0, 0.0, 0.0)(easy_positive, torch.ones(1, 1)))
    focal = float(AsymmetricLoss(2.0, 2.0, 0.0)(easy_positive, torch.ones(1, 1)))
    p = 1 / (1 + np.exp(-4.0))
    assert focal == pytest.approx(plain * (1 - p) ** 2, rel=1e-5)


def test_mla_matches_brute_force_permutation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 5))
        log_probs = np.log(rng.dirichlet(np.ones(8), size=(1, 6)))
        labels = rng.choice(7, size=n, replace=False)
        targets = np.full((1, 6), 7)
        targets[0, :n] = labels
        aligned = align_mla(log_probs, targets, np.array([n]))
        cost = lambda order: -sum(log_probs[0, j, order[j]] for j in range(n))
        best = min(itertools.permutations(labels), key=cost)
        assert cost(aligned[0, :n]) == pytest.approx(cost(best))
        assert sorted(aligned[0, :n]) == sorted(labels)
        assert (aligned[0, n:] == 7).all()


def test_pla_keeps_predicted_labels_where_predicted():
    log_probs = np.full((1, 4, 6), np.log(0.01))
    for step, label in enumerate([3, 0, 4, 5]):
        log_probs[0, step, label] = np.log(0.9)
    targets = np.array([[0, 1, 3, 5]])
    aligned = align_pla(log_probs, targets, np.array([3]))
    assert aligned[0, 0] == 3 and aligned[0, 1] == 0
    assert sorted(aligned[0, :3]) == [0, 1, 3]
    assert aligned[0, 3] == 5
