"""What every annotation model shares: a timm backbone and the features it hands the head."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig


FEATURE_KINDS = ("pooled", "spatial")


def head_inputs(fmap: torch.Tensor, kind: str, backbone: str = "backbone") -> torch.Tensor:
    """A backbone feature map ``[B, C, H, W]`` (or tokens ``[B, P, C]``) as pooled ``[B, C]`` or spatial ``[B, P, C]``."""
    if fmap.dim() == 4:
        return fmap.mean(dim=(2, 3)) if kind == "pooled" else fmap.flatten(2).transpose(1, 2)
    if fmap.dim() == 3:
        return fmap.mean(dim=1) if kind == "pooled" else fmap
    raise ValueError(f"{backbone} gives features of shape {tuple(fmap.shape)}; expected [B,C,H,W]")


class AnnotationModel(nn.Module):
    """Backbone plus a method-specific head.

    ``features`` turns images into what the head reads: pooled ``[B, C]`` or, for
    spatial methods, ``[B, P, C]`` (P = h * w positions).  With a frozen backbone
    these features are computed once and cached, and training only runs the head.
    """

    feature_kind = "pooled"
    is_sequence = False

    def __init__(self, config: ModelConfig, backbone: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.freeze_backbone = False
        self.top_stages = 0

    @classmethod
    def embedding_words(cls, vocabulary) -> list[str]:
        """Trainer hook: the words whose GloVe vectors ``--glove`` gives this method (one per label)."""
        return list(vocabulary.labels)

    @classmethod
    def training_inputs(cls, config: ModelConfig, fit_label_ids: list[list[int]]) -> dict:
        """Trainer hook: extra constructor arguments computed from the training labels (none by default)."""
        return {}

    def set_backbone_frozen(self, frozen: bool) -> None:
        """A frozen backbone gets no gradients and keeps its batch-norm statistics."""
        self.freeze_backbone = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.backbone.eval()

    def set_trainable_top(self, stages: int) -> None:
        """Train the backbone's last ``stages`` stages and its head convolution; freeze everything below.

        With a frozen bottom, what gets cached is the bottom's output (``cache_kind`` ``stageN``),
        and training runs only the top stages and the head on it: the part of fine-tuning that
        adapts the features to the labels, at a small fraction of its cost.  Batch-norm statistics
        stay as trained on ImageNet.  Needs a timm backbone built from ``conv_stem``, ``bn1``,
        ``blocks``, ``conv_head``, ``bn2`` (the EfficientNet and MobileNet families)."""
        self.top_stages = 0
        if stages == 0:
            return
        b = self.backbone
        if not self.has_stages():
            raise ValueError(f"--train-top needs an EfficientNet/MobileNet-style backbone (stages in .blocks); "
                             f"{self.config.backbone} is not one (use --finetune or --train-top 0)")
        if not 0 < stages <= len(b.blocks):
            raise ValueError(f"--train-top {stages}: {self.config.backbone} has {len(b.blocks)} stages")
        self.top_stages = stages
        self.freeze_backbone = True
        for p in b.parameters():
            p.requires_grad_(False)
        for module in [*b.blocks[len(b.blocks) - stages:], b.conv_head, b.bn2]:
            for p in module.parameters():
                p.requires_grad_(True)
        b.eval()

    def has_stages(self) -> bool:
        """Whether the backbone splits into stages for :meth:`set_trainable_top`."""
        return all(hasattr(self.backbone, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2"))

    @property
    def cache_kind(self) -> str:
        """What the feature cache holds for this model: head inputs, or the frozen bottom's output."""
        return f"stage{len(self.backbone.blocks) - self.top_stages}" if self.top_stages else self.feature_kind

    def cache_inputs(self, images: torch.Tensor, kind: str) -> torch.Tensor:
        """Images to cacheable features: ``pooled``/``spatial`` head inputs, or ``stageN`` (the output of
        the backbone's first N stages)."""
        if kind in FEATURE_KINDS:
            return head_inputs(self.backbone.forward_features(images), kind, self.config.backbone)
        b = self.backbone
        x = b.bn1(b.conv_stem(images))
        for block in b.blocks[:int(kind.removeprefix("stage"))]:
            x = block(x)
        return x

    def head_inputs_from_cache(self, cached: torch.Tensor) -> torch.Tensor:
        """Cached features to head inputs (through the trainable top stages when there are any)."""
        if not self.top_stages:
            return cached
        b = self.backbone
        x = cached
        for block in b.blocks[len(b.blocks) - self.top_stages:]:
            x = block(x)
        return head_inputs(b.bn2(b.conv_head(x)), self.feature_kind, self.config.backbone)

    def trainable_backbone_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> "AnnotationModel":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return head_inputs(self.backbone.forward_features(images), self.feature_kind, self.config.backbone)

    @staticmethod
    def embedding(feats: torch.Tensor) -> torch.Tensor:
        """Head inputs (pooled ``[B, C]`` or spatial ``[B, P, C]``) as the L2-normalised pooled embedding
        ``[B, C]`` that the bundle's label memory stores and searches by cosine similarity."""
        pooled = feats if feats.dim() == 2 else feats.mean(dim=1)
        return torch.nn.functional.normalize(pooled, dim=1)

    def head_parameters(self) -> list[nn.Parameter]:
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone_ids and p.requires_grad]

    def loss(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError
