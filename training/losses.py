"""Multi-label losses for the score-based methods: BCE, focal and asymmetric (ASL)."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .config import ModelConfig


class AsymmetricLoss(nn.Module):
    """ASL (Ridnik et al., ICCV 2021): focusing ``gamma_pos`` on positives, ``gamma_neg`` on negatives,
    and a probability margin ``clip`` that discards easy negatives.  Focal loss is the special case
    ``gamma_pos == gamma_neg`` with no margin.  Summed over labels, averaged over images."""

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8) -> None:
        super().__init__()
        self.gamma_pos, self.gamma_neg, self.clip, self.eps = gamma_pos, gamma_neg, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        p_neg = 1.0 - p
        if self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1.0)
        loss = targets * torch.log(p.clamp(min=self.eps)) + (1 - targets) * torch.log(p_neg.clamp(min=self.eps))
        if self.gamma_pos > 0 or self.gamma_neg > 0:
            pt = p * targets + p_neg * (1 - targets)
            gamma = self.gamma_pos * targets + self.gamma_neg * (1 - targets)
            loss = loss * torch.pow(1.0 - pt, gamma)
        return -loss.sum(dim=1).mean()


class BCELoss(nn.Module):
    """Binary cross-entropy on logits, averaged over every image-label pair."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets)


def multilabel_loss(config: ModelConfig) -> nn.Module:
    """The loss ``--loss`` names, with its settings from the config."""
    if config.loss == "bce":
        return BCELoss()
    if config.loss == "focal":
        return AsymmetricLoss(config.focal_gamma, config.focal_gamma, 0.0)
    return AsymmetricLoss(config.gamma_pos, config.gamma_neg, config.clip)
