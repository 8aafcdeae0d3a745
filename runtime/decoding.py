"""Greedy and beam-search decoding in numpy around a single-step decoder graph.

The rules are those of the PyTorch reference (``training/decoding.py``):

* at most ``max_len`` labels; after ``max_len`` labels only ``stop`` may follow,
  so every hypothesis ends (this is the defined result when no beam would stop);
* ``forbid_repeat`` masks labels a hypothesis already emitted;
* beam search keeps ``beam_width`` hypotheses per image; a hypothesis that emits
  ``stop`` is finished and the image's beam shrinks by one; the result is the
  finished hypothesis with the best ``logprob / ((5 + n) / 6) ** length_penalty``
  (``n`` emitted tokens including ``stop``), the first one on ties;
* a label's score is the probability given to it at the step it was emitted.

Beams are batched: every step runs the decoder once on all live rows of all
images (``B x K`` at most), never once per beam.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

State = dict[str, np.ndarray]
StepFn = Callable[[np.ndarray, State], tuple[np.ndarray, State, "np.ndarray | None"]]
"""``(tokens [R], state rows) -> (log_probs [R, V+1], new state rows, attention [R, P] or None)``."""


@dataclass
class Decoded:
    """One image's labels (ids, emission order), their scores, the sequence log-probability, attention per step."""

    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    logprob: float = 0.0
    alphas: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class DecodeOptions:
    num_labels: int
    max_len: int = 5
    beam_width: int = 1
    forbid_repeat: bool = True
    length_penalty: float = 0.0

    @property
    def stop(self) -> int:
        return self.num_labels

    @property
    def start(self) -> int:
        return self.num_labels + 1


def length_normaliser(num_tokens: int, penalty: float) -> float:
    return ((5.0 + num_tokens) / 6.0) ** penalty if penalty else 1.0


def _mask(logp: np.ndarray, used: np.ndarray, step: int, opts: DecodeOptions) -> np.ndarray:
    logp = logp.astype(np.float64, copy=True)
    labels = logp[:, :opts.num_labels]
    if opts.forbid_repeat:
        labels[used] = -np.inf
    if step == opts.max_len:
        labels[:] = -np.inf
    return logp


def greedy(step: StepFn, state: State, opts: DecodeOptions, keep_alphas: bool = False) -> list[Decoded]:
    """The most likely token at every step; finished images drop out of the batch."""
    batch = next(iter(state.values())).shape[0]
    out = [Decoded() for _ in range(batch)]
    rows = np.arange(batch)
    tokens = np.full(batch, opts.start, dtype=np.int64)
    used = np.zeros((batch, opts.num_labels), dtype=bool)
    for t in range(opts.max_len + 1):
        logp, state, alpha = step(tokens, state)
        logp = _mask(logp, used, t, opts)
        tokens = logp.argmax(axis=1)
        chosen = logp[np.arange(rows.size), tokens]
        for r, image in enumerate(rows):
            d = out[image]
            d.logprob += float(chosen[r])
            if keep_alphas and alpha is not None:
                d.alphas.append(np.array(alpha[r]))
            if tokens[r] != opts.stop:
                d.labels.append(int(tokens[r]))
                d.scores.append(float(np.exp(chosen[r])))
        used[np.arange(rows.size)[tokens != opts.stop], tokens[tokens != opts.stop]] = True
        live = tokens != opts.stop
        if not live.any():
            break
        rows, tokens, used = rows[live], tokens[live], used[live]
        state = {k: v[live] for k, v in state.items()}
    return out


def beam_search(step: StepFn, state: State, opts: DecodeOptions, keep_alphas: bool = False) -> list[Decoded]:
    """Beam search over all images at once: ``B x K`` slots, the live ones stepped together."""
    batch = next(iter(state.values())).shape[0]
    k, width, n_labels = opts.beam_width, opts.num_labels + 1, opts.num_labels
    slots = batch * k
    state = {name: np.repeat(v, k, axis=0) for name, v in state.items()}
    scores = np.full((batch, k), -np.inf)
    scores[:, 0] = 0.0
    alive = np.zeros(slots, dtype=bool)
    alive[::k] = True
    remaining = np.full(batch, k)
    seqs = np.zeros((slots, opts.max_len), dtype=np.int64)
    probs = np.zeros((slots, opts.max_len), dtype=np.float64)
    lengths = np.zeros(slots, dtype=np.int64)
    used = np.zeros((slots, n_labels), dtype=bool)
    tokens = np.full(slots, opts.start, dtype=np.int64)
    alphas: np.ndarray | None = None
    best = [None] * batch
    best_value = np.full(batch, -np.inf)
    for t in range(opts.max_len + 1):
        rows = np.flatnonzero(alive)
        if rows.size == 0:
            break
        logp_rows, new_rows, alpha_rows = step(tokens[rows], {name: v[rows] for name, v in state.items()})
        logp = np.full((slots, width), -np.inf)
        logp[rows] = _mask(logp_rows, used[rows], t, opts)
        full_state = {name: np.empty((slots,) + v.shape[1:], dtype=v.dtype) for name, v in new_rows.items()}
        for name, v in new_rows.items():
            full_state[name][rows] = v
        if keep_alphas and alpha_rows is not None:
            if alphas is None:
                alphas = np.zeros((slots, opts.max_len + 1, alpha_rows.shape[1]), dtype=np.float32)
            alphas[rows, t] = alpha_rows
        total = (scores.reshape(-1)[:, None] + logp).reshape(batch, k * width)
        order = np.argsort(-total, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(total, order, axis=1)
        valid = (np.arange(k)[None, :] < remaining[:, None]) & np.isfinite(top)
        parent = order // width
        token = order % width
        src = np.arange(batch)[:, None] * k + parent
        finished = valid & (token == opts.stop)
        for b, j in zip(*np.nonzero(finished)):
            s = src[b, j]
            n = int(lengths[s])
            value = top[b, j] / length_normaliser(n + 1, opts.length_penalty)
            if value > best_value[b]:
                best_value[b] = value
                best[b] = Decoded([int(x) for x in seqs[s, :n]], [float(x) for x in probs[s, :n]], float(top[b, j]),
                                  [alphas[s, i].copy() for i in range(t + 1)] if alphas is not None else [])
        remaining -= finished.sum(axis=1)
        cont = valid & ~finished
        bs, js = np.nonzero(cont)
        new_slot = (np.cumsum(cont, axis=1) - 1)[bs, js]
        s = src[bs, js]
        d = bs * k + new_slot
        tok = token[bs, js]
        seqs_next, probs_next, lengths_next, used_next = (np.zeros_like(seqs), np.zeros_like(probs),
                                                          np.zeros_like(lengths), np.zeros_like(used))
        seqs_next[d], probs_next[d], lengths_next[d], used_next[d] = seqs[s], probs[s], lengths[s], used[s]
        if d.size:
            seqs_next[d, lengths[s]] = tok
            probs_next[d, lengths[s]] = np.exp(logp[s, tok])
            used_next[d, tok] = True
        lengths_next[d] += 1
        seqs, probs, lengths, used = seqs_next, probs_next, lengths_next, used_next
        if alphas is not None:
            alphas_next = np.zeros_like(alphas)
            alphas_next[d] = alphas[s]
            alphas = alphas_next
        state = {name: np.zeros_like(v) for name, v in full_state.items()}
        for name in state:
            state[name][d] = full_state[name][s]
        scores = np.full((batch, k), -np.inf)
        scores[bs, new_slot] = top[bs, js]
        alive = np.zeros(slots, dtype=bool)
        alive[d] = True
        tokens = np.full(slots, opts.start, dtype=np.int64)
        tokens[d] = tok
    return [b if b is not None else Decoded() for b in best]


def decode(step: StepFn, state: State, opts: DecodeOptions, keep_alphas: bool = False) -> list[Decoded]:
    """Greedy for beam width 1, beam search otherwise."""
    if opts.beam_width == 1:
        return greedy(step, state, opts, keep_alphas)
    return beam_search(step, state, opts, keep_alphas)
