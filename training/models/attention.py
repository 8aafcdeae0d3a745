"""``attention``: CNN-RNN with soft attention over the spatial feature map (Show-Attend-Tell style).

At every step the hidden state attends over the ``P`` feature positions; a
sigmoid gate from the hidden state scales the attended context, which enters
the LSTM with the previous label's embedding.  The encoder-side attention
projection ``encoder_att(features)`` does not depend on the step, so it is
computed once in ``init_state`` (the reference recomputes it every step).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from .recurrent import SequenceModel, State


class Attention(nn.Module):
    def __init__(self, encoder_size: int, hidden_size: int, attention_size: int) -> None:
        super().__init__()
        self.encoder_att = nn.Linear(encoder_size, attention_size)
        self.decoder_att = nn.Linear(hidden_size, attention_size)
        self.full_att = nn.Linear(attention_size, 1)

    def forward(self, features: torch.Tensor, projection: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context ``[B, C]`` and weights ``[B, P]`` from features ``[B, P, C]`` and their projection ``[B, P, A]``."""
        scores = self.full_att(torch.relu(projection + self.decoder_att(hidden).unsqueeze(1))).squeeze(2)
        alpha = torch.softmax(scores, dim=1)
        return (features * alpha.unsqueeze(2)).sum(dim=1), alpha


class AttentionModel(SequenceModel):
    feature_kind = "spatial"

    def __init__(self, config: ModelConfig, backbone: nn.Module, embeddings: np.ndarray | None = None) -> None:
        super().__init__(config, backbone, embeddings)
        c = config.feature_dim
        self.features_embedding = nn.Linear(c, config.hidden_size)
        self.attention = Attention(c, config.hidden_size, config.attention_size)
        self.f_beta = nn.Linear(config.hidden_size, c)
        self.lstm_cell = nn.LSTMCell(config.emb_size + c, config.hidden_size)

    def init_state(self, feats: torch.Tensor) -> State:
        h = self.features_embedding(feats.mean(dim=1))
        return {"h": h, "c": torch.zeros_like(h), "features": feats,
                "projection": self.attention.encoder_att(feats)}

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State, torch.Tensor]:
        context, alpha = self.attention(state["features"], state["projection"], state["h"])
        context = torch.sigmoid(self.f_beta(state["h"])) * context
        inputs = torch.cat([self.emb_dropout(self.word_emb(tokens)), context], dim=1)
        state = self.lstm_step(inputs, state)
        return self.fc(self.dropout(state["h"])), state, alpha
