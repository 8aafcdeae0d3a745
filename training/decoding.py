"""Reference PyTorch decoding for the recurrent models: greedy and beam search.

Kept plain on purpose (one image at a time, Python lists, no early stopping): it is what the
exported runtime's batched numpy decoders (``runtime/search.py``) are checked against.  The
rules are :class:`~corel_annotate.runtime.bundle.decoding_config.DecodingConfig`'s:

* at most ``max_len`` labels, then only ``stop``; ``stop`` masked before ``min_labels`` labels;
* ``forbid_repeat`` masks labels a hypothesis has already emitted;
* beam search ranks every extension of the live hypotheses by summed log-probability (ties: the
  earlier parent, then the lower token id); walking that ranking, a ``stop`` ranked among the first
  ``beam_width`` finishes its hypothesis, and the first ``beam_width`` other extensions stay live,
  until none is live; the result is the finished hypothesis with the best
  ``logprob / config.normaliser(n)`` (``n`` tokens including ``stop``), the first one on ties;
* each label's score is the probability the model gave it at the step it was emitted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
from .models.recurrent import SequenceModel, State


@dataclass
class Hypothesis:
    """A decoded label sequence (without start/stop), per-label scores and the total log-probability."""

    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    logprob: float = 0.0
    alphas: list[list[float]] = field(default_factory=list)


def _mask(logp: torch.Tensor, used: torch.Tensor, step: int, config: DecodingConfig, num_labels: int) -> torch.Tensor:
    logp = logp.clone()
    if config.forbid_repeat:
        logp[:, :num_labels] = logp[:, :num_labels].masked_fill(used, float("-inf"))
    if step == config.max_len:
        logp[:, :num_labels] = float("-inf")
    if step < config.min_labels:
        logp[:, num_labels] = float("-inf")
    return logp


@torch.no_grad()
def greedy_search(model: SequenceModel, state: State, config: DecodingConfig) -> list[Hypothesis]:
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
        logp = _mask(torch.log_softmax(logits.double(), dim=1), used, step, config, num_labels)
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
def beam_search(model: SequenceModel, state: State, config: DecodingConfig) -> list[Hypothesis]:
    """Beam search, one image at a time, with that image's live hypotheses batched in one step call."""
    return [_beam_one(model, {k: v[i:i + 1] for k, v in state.items()}, config) for i in range(state["h"].shape[0])]


def _beam_one(model: SequenceModel, state: State, config: DecodingConfig) -> Hypothesis:
    num_labels = model.config.num_labels
    stop, width, k = num_labels, num_labels + 1, config.beam_width
    device = state["h"].device
    alive = [Hypothesis()]
    tokens = torch.full((1,), num_labels + 1, dtype=torch.long, device=device)
    best: Hypothesis | None = None
    best_value = float("-inf")
    for step in range(config.max_len + 1):
        logits, state, alpha = model.step(tokens, state)
        used = torch.zeros(len(alive), num_labels, dtype=torch.bool, device=device)
        for b, hyp in enumerate(alive):
            used[b, hyp.labels] = True
        logp = _mask(torch.log_softmax(logits.double(), dim=1), used, step, config, num_labels)
        total = (torch.tensor([h.logprob for h in alive], dtype=torch.float64, device=device)[:, None] + logp).view(-1)
        ranked = sorted(range(total.numel()), key=lambda i: (-float(total[i]), i))
        keep_rows, next_alive, next_tokens = [], [], []
        for rank, flat in enumerate(ranked):
            value = float(total[flat])
            if value == float("-inf") or (len(next_alive) == k and rank >= k):
                break
            row, token = divmod(flat, width)
            parent = alive[row]
            hyp = Hypothesis(list(parent.labels), list(parent.scores), value, list(parent.alphas))
            if alpha is not None:
                hyp.alphas.append(alpha[row].tolist())
            if token == stop:
                normalised = value / config.normaliser(len(hyp.labels) + 1)
                if rank < k and normalised > best_value:
                    best, best_value = hyp, normalised
            elif len(next_alive) < k:
                hyp.labels.append(token)
                hyp.scores.append(float(logp[row, token].exp()))
                keep_rows.append(row)
                next_alive.append(hyp)
                next_tokens.append(token)
        if not next_alive:
            break
        index_rows = torch.tensor(keep_rows, dtype=torch.long, device=device)
        state = {key: value[index_rows] for key, value in state.items()}
        alive = next_alive
        tokens = torch.tensor(next_tokens, dtype=torch.long, device=device)
    return best if best is not None else Hypothesis()


def search_labels(model: SequenceModel, state: State, config: DecodingConfig) -> list[Hypothesis]:
    """Greedy when ``beam_width == 1``, beam search otherwise."""
    config.check_labels(model.config.num_labels)
    return greedy_search(model, state, config) if config.beam_width == 1 else beam_search(model, state, config)
