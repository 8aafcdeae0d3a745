"""One pass of optimisation, shared by the trainer and the cross-fitted heads (``cross_fit.py``)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from .models.base import AnnotationModel


class LossModule(nn.Module):
    """Wraps ``model.loss`` as ``forward`` so DistributedDataParallel can synchronise its gradients.
    ``x`` is images, cached features, or (``head_inputs``) features already through the frozen top."""

    def __init__(self, model: AnnotationModel, from_images: bool, head_inputs: bool = False, amp: str = "off") -> None:
        super().__init__()
        self.model, self.from_images, self.head_inputs, self.amp = model, from_images, head_inputs, amp
        self.last_logs: dict[str, float] = {}

    def forward(self, x, targets, tokens, lengths):
        if self.head_inputs:
            feats = x
        else:
            with self._autocast(x.device):
                feats = self.model.features(x) if self.from_images else self.model.head_inputs_from_cache(x)
            feats = feats.float()
        loss, self.last_logs = self.model.loss(feats, {"targets": targets, "tokens": tokens, "lengths": lengths})
        return loss

    def _autocast(self, device: torch.device):
        """``amp="bf16"``: the backbone (nearly all the arithmetic) under bfloat16 autocast; the head and
        the loss stay in float32, where the small probabilities of ASL and the LSTM's state need it.
        bf16 keeps float32's range, so no loss scaling is needed."""
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if self.amp == "bf16" else nullcontext()


def train_batches(model: AnnotationModel, wrapped: nn.Module, loader: DataLoader, optimizer, scheduler,
                  grad_clip: float, device: str, on_batch: Callable[[float], None] = lambda _loss: None,
                  after_step: Callable[[], None] = lambda: None) -> float:
    """One pass over ``loader`` in training mode (clipped gradients, a scheduler step per batch); the mean loss.
    ``after_step`` runs after every optimiser step (the weight average's update)."""
    model.train()
    total, batches = 0.0, 0
    for x, targets, tokens, lengths in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = wrapped(x.to(device), targets.to(device), tokens.to(device), lengths.to(device))
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        after_step()
        total += float(loss.detach())
        batches += 1
        on_batch(total / batches)
    return total / max(1, batches)
