"""``ml-gcn``: ML-GCN (Chen et al., CVPR 2019).

A two-layer graph convolution over label embeddings (GloVe or trainable) and a
label correlation matrix built from training-set co-occurrence produces one
classifier per label; an image's scores are its pooled features dotted with
those classifiers.  The classifiers do not depend on the image.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..config import ModelConfig
from .cnn import ScoreModel


def correlation_matrix(label_ids: Sequence[Sequence[int]], num_labels: int, threshold: float, p: float) -> np.ndarray:
    """The re-weighted adjacency of ML-GCN: P(j|i) from co-occurrence counts, binarised at
    ``threshold``, each column re-weighted so neighbours share weight ``p``, plus identity."""
    counts = np.zeros(num_labels, dtype=np.float64)
    co = np.zeros((num_labels, num_labels), dtype=np.float64)
    for ids in label_ids:
        ids = sorted(set(ids))
        counts[ids] += 1
        for a in ids:
            for b in ids:
                if a != b:
                    co[a, b] += 1
    cond = co / np.maximum(counts[:, None], 1.0)
    adj = (cond >= threshold).astype(np.float64)
    np.fill_diagonal(adj, 0.0)
    adj = adj * p / (adj.sum(axis=0, keepdims=True) + 1e-6)
    return (adj + np.eye(num_labels)).astype(np.float32)


def normalised_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """Symmetric normalisation ``D^-1/2 A^T D^-1/2`` as in the ML-GCN code (``gen_adj``)."""
    d = torch.pow(adj.sum(1), -0.5)
    d = torch.diag(d)
    return torch.matmul(torch.matmul(adj, d).t(), d)


class GraphConvolution(nn.Module):
    """``out = A (X W)`` without bias, initialised as in the ML-GCN code."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        bound = 1.0 / math.sqrt(out_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return adj @ (x @ self.weight)


class MLGCNModel(ScoreModel):
    def __init__(self, config: ModelConfig, backbone: nn.Module, embeddings: np.ndarray | None = None,
                 adjacency: np.ndarray | None = None) -> None:
        super().__init__(config, backbone)
        n = config.num_labels
        emb = torch.zeros(n, config.emb_size) if embeddings is None else torch.as_tensor(embeddings, dtype=torch.float32)
        if config.glove:
            self.register_buffer("label_inputs", emb.clone())
        else:
            self.label_inputs = nn.Parameter(emb.clone() if embeddings is not None else torch.randn(n, config.emb_size) * 0.1)
        adj = torch.eye(n) if adjacency is None else torch.as_tensor(adjacency, dtype=torch.float32)
        self.adjacency = nn.Parameter(adj.clone())
        self.gc1 = GraphConvolution(emb.shape[1], config.gcn_hidden)
        self.gc2 = GraphConvolution(config.gcn_hidden, config.feature_dim)

    @classmethod
    def training_inputs(cls, config: ModelConfig, fit_label_ids: list[list[int]]) -> dict:
        """The label correlation matrix from the training images' co-occurrences."""
        return {"adjacency": correlation_matrix(fit_label_ids, config.num_labels, config.gcn_threshold, config.gcn_p)}

    def label_classifiers(self) -> torch.Tensor:
        """``[L, C]``: one classifier per label, independent of the image."""
        adj = normalised_adjacency(self.adjacency)
        x = F.leaky_relu(self.gc1(self.label_inputs, adj), 0.2)
        return self.gc2(x, adj)

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        return feats @ self.label_classifiers().t()
