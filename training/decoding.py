"""Reference PyTorch decoding for the recurrent models: greedy and beam search.

Kept plain on purpose: it is what the exported runtime's decoders are checked
against.  Rules shared with the runtime:

* at most ``max_len`` labels; once an image has ``max_len`` labels only ``stop``
  may follow, so every hypothesis ends with ``stop``;
* ``forbid_repeat`` masks labels a hypothesis has already emitted;
* beam search keeps ``beam_width`` hypotheses, moves a hypothesis that emits
  ``stop`` to the finished list and shrinks the beam by one (as the reference
  does), and returns the finished hypothesis with the best score, the score
  being the summed log-probability divided by ``((5 + n) / 6) ** length_penalty``
  where ``n`` counts the emitted tokens including ``stop``;
* each label's score is the probability the model gave it at the step it was emitted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import DecodeConfig
from .models.recurrent import SequenceModel, State


@dataclass
class Hypothesis:
    """A decoded label sequence (without start/stop), per-label scores and the total log-probability."""

    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    logprob: float = 0.0
    alphas: list[list[float]] = field(default_factory=list)


def length_normaliser(num_tokens: int, penalty: float) -> float:
    return ((5.0 + num_tokens) / 6.0) ** penalty if penalty else 1.0


def _mask(logp: torch.Tensor, used: torch.Tensor, step: int, config: DecodeConfig, num_labels: int) -> torch.Tensor:
    logp = logp.clone()
    if config.forbid_repeat:
        logp[:, :num_labels] = logp[:, :num_labels].masked_fill(used, float("-inf"))
    if step == config.max_len:
        logp[:, :num_labels] = float("-inf")
    return logp


@torch.no_grad()
def greedy_decode(model: SequenceModel, state: State, config: DecodeConfig) -> list[Hypothesis]:
    """Pick the most likely token at every step, for a whole batch at once."""
    num_labels = model.config.num_labels
    stop = num_labels
    batch = state["h"].shape[0]
    tokens = torch.full((batch,), num_labels + 1, dtype=torch.long, device=state["h"].device)
    used = torch.zeros(batch, num_labels, dtype=torch.bool, device=tokens.device)
    done = [False] * batch
    out = [Hypothesis() for _ in range(batch)]
    for step in range(config.max_len + 1):
        logits, state, alpha = model.step(tokens, state)
        logp = _mask(torch.log_softmax(logits.float(), dim=1), used, step, config, num_labels)
        tokens = logp.argmax(dim=1)
        for i in range(batch):
            if done[i]:
                continue
            token = int(tokens[i])
            out[i].logprob += float(logp[i, token])
            if alpha is not None:
                out[i].alphas.append(alpha[i].tolist())
            if token == stop:
                done[i] = True
            else:
                out[i].labels.append(token)
                out[i].scores.append(float(logp[i, token].exp()))
                used[i, token] = True
        if all(done):
            break
    return out


@torch.no_grad()
def beam_decode(model: SequenceModel, state: State, config: DecodeConfig) -> list[Hypothesis]:
    """Beam search, one image at a time, with that image's beams batched in one step call."""
    return [_beam_one(model, {k: v[i:i + 1] for k, v in state.items()}, config) for i in range(state["h"].shape[0])]


def _beam_one(model: SequenceModel, state: State, config: DecodeConfig) -> Hypothesis:
    num_labels = model.config.num_labels
    stop, width = num_labels, num_labels + 1
    device = state["h"].device
    alive = [Hypothesis()]
    tokens = torch.full((1,), num_labels + 1, dtype=torch.long, device=device)
    scores = torch.zeros(1, device=device)
    finished: list[Hypothesis] = []
    k = config.beam_width
    for step in range(config.max_len + 1):
        logits, state, alpha = model.step(tokens, state)
        used = torch.zeros(len(alive), num_labels, dtype=torch.bool, device=device)
        for b, hyp in enumerate(alive):
            used[b, hyp.labels] = True
        logp = _mask(torch.log_softmax(logits.float(), dim=1), used, step, config, num_labels)
        total = (scores[:, None] + logp).view(-1)
        count = min(k, int(torch.isfinite(total).sum()))
        top, index = total.topk(count)
        keep_rows, next_alive, next_tokens, next_scores = [], [], [], []
        for value, flat in zip(top.tolist(), index.tolist()):
            row, token = divmod(flat, width)
            parent = alive[row]
            hyp = Hypothesis(list(parent.labels), list(parent.scores), value, list(parent.alphas))
            if alpha is not None:
                hyp.alphas.append(alpha[row].tolist())
            if token == stop:
                finished.append(hyp)
                k -= 1
            else:
                hyp.labels.append(token)
                hyp.scores.append(float(logp[row, token].exp()))
                keep_rows.append(row)
                next_alive.append(hyp)
                next_tokens.append(token)
                next_scores.append(value)
        if not next_alive or k <= 0:
            break
        index_rows = torch.tensor(keep_rows, dtype=torch.long, device=device)
        state = {key: value[index_rows] for key, value in state.items()}
        alive = next_alive
        tokens = torch.tensor(next_tokens, dtype=torch.long, device=device)
        scores = torch.tensor(next_scores, device=device)
    return max(finished, key=lambda h: h.logprob / length_normaliser(len(h.labels) + 1, config.length_penalty))


def decode(model: SequenceModel, state: State, config: DecodeConfig) -> list[Hypothesis]:
    """Greedy when ``beam_width == 1``, beam search otherwise."""
    return greedy_decode(model, state, config) if config.beam_width == 1 else beam_decode(model, state, config)
