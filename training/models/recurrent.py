"""Recurrent annotators: an LSTM emits labels one step at a time until ``stop``.

``ria`` (Jin & Nakayama, ICPR 2016): pooled CNN features initialise the hidden state.
``sr-cnn-rnn`` (Liu et al., CVPR 2017): the CNN predicts concept probabilities
(trained with their own multi-label loss), which initialise the hidden state.

Every recurrent model exposes ``init_state(features)`` and one decoding
``step(tokens, state)``; training, the PyTorch reference decoders and the ONNX
export all go through these two.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..alignment import align_targets
from ..config import ModelConfig
from .base import AnnotationModel

State = dict[str, torch.Tensor]


class SequenceModel(AnnotationModel):
    """Shared decoder parts: the token embedding, the output layer and the training loss."""

    is_sequence = True

    def __init__(self, config: ModelConfig, backbone: nn.Module, embeddings: np.ndarray | None = None) -> None:
        super().__init__(config, backbone)
        vocab_tokens = config.num_labels + 2
        self.word_emb = nn.Embedding(vocab_tokens, config.emb_size)
        if embeddings is not None:
            self.word_emb.weight.data.copy_(torch.as_tensor(embeddings, dtype=torch.float32))
        if config.glove:
            self.word_emb.weight.requires_grad_(False)
        self.emb_dropout = nn.Dropout(config.emb_dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.hidden_size, config.num_labels + 1)

    @classmethod
    def embedding_words(cls, vocabulary) -> list[str]:
        """Every token the decoder embeds: the labels, then ``stop`` and ``start``."""
        return vocabulary.tokens()

    def init_state(self, feats: torch.Tensor) -> State:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """One decoding step: logits over labels + stop, the new state, attention weights if any."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> State:
        return self.init_state(self.features(images))

    def unroll(self, state: State, tokens: torch.Tensor | None, steps: int) -> torch.Tensor:
        """Logits ``[B, steps, V+1]``: teacher-forced on ``tokens`` or, when None, fed its own argmax."""
        batch = next(iter(state.values())).shape[0]
        current = torch.full((batch,), self.config.num_labels + 1, dtype=torch.long, device=state["h"].device)
        outputs = []
        for t in range(steps):
            if tokens is not None:
                current = tokens[:, t]
            logits, state, _ = self.step(current, state)
            outputs.append(logits)
            current = logits.argmax(dim=1)
        return torch.stack(outputs, dim=1)

    def sequence_loss(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy over each image's labels and its stop, as the reference's packed sequences."""
        tokens, lengths = batch["tokens"], batch["lengths"]
        steps = int(lengths.max()) + 1
        state = self.init_state(feats)
        targets = tokens[:, 1:steps + 1]
        if self.config.order_free == "none":
            logits = self.unroll(state, tokens, steps)
        else:
            logits = self.unroll(state, None, steps)
            targets = align_targets(self.config.order_free, logits, targets, lengths)
        mask = torch.arange(steps, device=tokens.device)[None, :] <= lengths[:, None]
        return F.cross_entropy(logits[mask], targets[mask])

    def loss(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.sequence_loss(feats, batch)
        return loss, {"loss": float(loss.detach())}

    def lstm_step(self, inputs: torch.Tensor, state: State) -> State:
        h, c = self.lstm_cell(inputs, (state["h"], state["c"]))
        return {**state, "h": h, "c": c}




class RIAModel(SequenceModel):
    def __init__(self, config: ModelConfig, backbone: nn.Module, embeddings: np.ndarray | None = None) -> None:
        super().__init__(config, backbone, embeddings)
        self.features_embedding = nn.Linear(config.feature_dim, config.hidden_size)
        self.lstm_cell = nn.LSTMCell(config.emb_size, config.hidden_size)

    def init_state(self, feats: torch.Tensor) -> State:
        h = self.features_embedding(feats)
        return {"h": h, "c": torch.zeros_like(h)}

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State, None]:
        state = self.lstm_step(self.emb_dropout(self.word_emb(tokens)), state)
        return self.fc(self.dropout(state["h"])), state, None


class SRCNNRNNModel(RIAModel):
    """Concept probabilities from the CNN initialise the LSTM; the concept head has its own loss and
    the LSTM's loss does not reach it (the reference detaches the concepts for the LSTM).

    With ``concept_norm="layer"`` (the default) the probabilities are layer-normalised per photo
    before the LSTM's input layer.  Raw, nearly every probability sits near 0, so the LSTM's
    initial state hardly varies between photos and its weights on them learn about 100 times more
    slowly than its bias.  On 300 Corel-5k photos the raw version learned the unconditional label
    sequence (test per-class F1 0.007, N+ 8); the normalised one reached 0.163 and N+ 65."""

    def __init__(self, config: ModelConfig, backbone: nn.Module, embeddings: np.ndarray | None = None) -> None:
        super().__init__(config, backbone, embeddings)
        self.concept_dropout = nn.Dropout(config.head_dropout)
        self.concept_fc = nn.Linear(config.feature_dim, config.num_labels)
        self.features_embedding = nn.Linear(config.num_labels, config.hidden_size)

    def concept_logits(self, feats: torch.Tensor) -> torch.Tensor:
        return self.concept_fc(self.concept_dropout(feats))

    def init_state(self, feats: torch.Tensor) -> State:
        concepts = self.concept_logits(feats)
        probs = torch.sigmoid(concepts)
        probs = probs.detach() if self.training else probs
        if self.config.concept_norm == "layer":
            probs = F.layer_norm(probs, (self.config.num_labels,))
        h = self.features_embedding(probs)
        return {"h": h, "c": torch.zeros_like(h), "concepts": concepts}

    def loss(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        concept_loss = F.multilabel_soft_margin_loss(self.concept_logits(feats), batch["targets"])
        lstm_loss = self.sequence_loss(feats, batch)
        loss = concept_loss + lstm_loss
        return loss, {"loss": float(loss.detach()), "loss_cnn": float(concept_loss.detach()),
                      "loss_lstm": float(lstm_loss.detach())}
