"""``cnn``: backbone + linear multi-label head (the seed's CNN baseline)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..losses import multilabel_loss
from .base import AnnotationModel


class ScoreModel(AnnotationModel):
    """A model that scores every label independently; thresholds turn scores into labels."""

    def __init__(self, config: ModelConfig, backbone: nn.Module) -> None:
        super().__init__(config, backbone)
        self.criterion = multilabel_loss(config)

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(images))

    def loss(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.criterion(self.logits(feats), batch["targets"])
        return loss, {"loss": float(loss.detach())}


class CNNModel(ScoreModel):
    def __init__(self, config: ModelConfig, backbone: nn.Module) -> None:
        super().__init__(config, backbone)
        self.dropout = nn.Dropout(config.head_dropout)
        self.fc = nn.Linear(config.feature_dim, config.num_labels)

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(feats))
