"""Where the kit's expected records come from: PyTorch (the reference decoders of ``training/``, on a
torch twin of the kit's decoder graph), exhaustive search over every label sequence, and the
spec's score rules written out plainly.  Nothing here calls the runtime under test."""
from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import torch

from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
from corel_annotate.training.decoding import search_labels

from .graphs import TableDecoder


class TwinDecoder:
    """:class:`TableDecoder` in PyTorch (float64), in the shape ``training.decoding`` drives: ``step``
    gives logits and the next state; ``noise`` perturbs every logit (to check a case's margins)."""

    def __init__(self, decoder: TableDecoder, noise: float = 0.0, seed: int = 0) -> None:
        self.config = SimpleNamespace(num_labels=decoder.num_labels)
        self.table, self.history = torch.tensor(decoder.table), torch.tensor(decoder.history)
        self.eye = torch.eye(decoder.num_labels + 2, dtype=torch.float64)
        self.noise, self.rng = noise, torch.Generator().manual_seed(seed)

    def step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict, None]:
        logits = self.table[tokens] + state["bias"] + state["h"] @ self.history
        if self.noise:
            logits = logits + (torch.rand(logits.shape, generator=self.rng, dtype=torch.float64) - 0.5) * 2 * self.noise
        return logits, {"h": state["h"] + self.eye[tokens], "bias": state["bias"]}, None


def first_state(decoder: TableDecoder, means: np.ndarray) -> dict:
    """The encoder's outputs for photos whose channel means (over 255) are ``means`` [B, 3]."""
    f = torch.tensor(means, dtype=torch.float64)
    return {"h": torch.zeros(f.shape[0], decoder.num_labels + 2, dtype=torch.float64),
            "bias": f @ torch.tensor(decoder.colour) + torch.tensor(decoder.offset)}


def pytorch_decode(decoder: TableDecoder, means: np.ndarray, config: DecodingConfig,
                   noise: float = 0.0, seed: int = 0) -> list[tuple[list[int], list[float]]]:
    """Labels and per-label scores by ``training.decoding.search_labels`` (greedy or beam search)."""
    hyps = search_labels(TwinDecoder(decoder, noise, seed), first_state(decoder, means), config)
    return [(h.labels, h.scores) for h in hyps]


def brute_force(decoder: TableDecoder, mean: np.ndarray, config: DecodingConfig) -> tuple[list[int], float, float]:
    """Every label sequence the rules allow, scored ``sum of masked log-probabilities / normaliser(n)``
    (``n`` counting stop; the masked distribution is not renormalised): the best one, its value, and
    the margin to the second best."""
    v, stop = decoder.num_labels, decoder.num_labels
    bias = mean @ decoder.colour + decoder.offset

    def logp(prefix: tuple[int, ...]) -> np.ndarray:
        h = np.zeros(v + 2)
        for token in (v + 1, *prefix[:-1]) if prefix else ():
            h[token] += 1
        token = prefix[-1] if prefix else v + 1
        logits = decoder.table[token] + bias + h @ decoder.history
        return logits - np.logaddexp.reduce(logits)

    values = []
    for n in range(config.min_labels, config.max_len + 1):
        for seq in itertools.product(range(v), repeat=n):
            if config.forbid_repeat and len(set(seq)) < n:
                continue
            total = sum(float(logp(seq[:t])[seq[t]]) for t in range(n)) + float(logp(seq)[stop])
            values.append((total / config.normaliser(n + 1), list(seq)))
    values.sort(key=lambda x: -x[0])
    margin = values[0][0] - values[1][0] if len(values) > 1 else math.inf
    return values[0][1], values[0][0], margin


def sigmoid32(logits: np.ndarray) -> np.ndarray:
    """The reported score of a score bundle, as PyTorch computes it in float32."""
    return torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).numpy()


def spec_select(scores: np.ndarray, thresholds: np.ndarray, top_k: int | None, min_labels: int) -> list[int]:
    """The spec's score rule written out: labels reaching their threshold (``>=``, float32), ranked by
    score / threshold (threshold 0 first), ties to the lower threshold then the lower id; at most
    ``top_k``; fewer than ``min_labels``: the ``min_labels`` best instead."""
    ranked = sorted(range(scores.size), key=lambda i: (-(math.inf if thresholds[i] == 0 else
                                                         float(scores[i]) / float(thresholds[i])),
                                                        float(thresholds[i]), i))
    passed = [i for i in ranked if np.float32(scores[i]) >= np.float32(thresholds[i])]
    chosen = passed[:top_k] if top_k else passed
    return ranked[:min_labels] if len(chosen) < min_labels else chosen
