"""What every annotation model shares: a timm backbone and the features it hands the head."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig


class AnnotationModel(nn.Module):
    """Backbone plus a method-specific head.

    ``features`` turns images into what the head reads: pooled ``[B, C]`` or, for
    spatial methods, ``[B, P, C]`` (P = h * w positions).  With a frozen backbone
    these features are computed once and cached, and training only runs the head.
    """

    feature_kind = "pooled"
    is_sequence = False
    method_name = ""

    def __init__(self, config: ModelConfig, backbone: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.freeze_backbone = False

    def set_backbone_frozen(self, frozen: bool) -> None:
        """A frozen backbone gets no gradients and keeps its batch-norm statistics."""
        self.freeze_backbone = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.backbone.eval()

    def train(self, mode: bool = True) -> "AnnotationModel":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone.forward_features(images)
        if fmap.dim() == 4:
            if self.feature_kind == "pooled":
                return fmap.mean(dim=(2, 3))
            return fmap.flatten(2).transpose(1, 2)
        if fmap.dim() == 3:
            return fmap.mean(dim=1) if self.feature_kind == "pooled" else fmap
        raise ValueError(f"backbone {self.config.backbone} gives features of shape {tuple(fmap.shape)}; expected [B,C,H,W]")

    def head_parameters(self) -> list[nn.Parameter]:
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone_ids and p.requires_grad]

    def loss(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError
