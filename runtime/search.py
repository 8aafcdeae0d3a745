"""Greedy and beam-search decoding in numpy around a single-step decoder graph.

The rules are those of the PyTorch reference (``training/decoding.py``) and of
:class:`~corel_annotate.runtime.bundle.decoding_config.DecodingConfig`:

* token ids: labels ``0..V-1``, ``stop`` = V, ``start`` = V + 1;
* at step ``t`` every live hypothesis has ``t`` labels; ``stop`` is masked while ``t < min_labels``,
  labels are masked once ``t == max_len`` (and, with ``forbid_repeat``, those already emitted);
* beam search ranks all ``K x (V + 1)`` extensions of an image's live hypotheses by summed
  log-probability (ties: lower parent slot, then lower token id); walking that ranking, a ``stop``
  ranked among the first K finishes its hypothesis (Hugging Face's rule), the first K other
  extensions become the next live hypotheses; an image is done when none is live or none can
  beat its best finished hypothesis, scored ``logprob / normaliser(n)`` (the first one on ties);
* a label's score is the probability given to it at the step it was emitted.

Beams are batched: every step runs the decoder once on all live rows of all
images (``B x K`` at most), never once per beam.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .decoder_state import DecoderState
from .bundle.decoding_config import DecodingConfig

StepFn = Callable[[np.ndarray, DecoderState], tuple[np.ndarray, DecoderState, "np.ndarray | None"]]
"""``(tokens [R], state) -> (log_probs [R, V+1], state after the step, attention [R, P] or None)``."""


@dataclass
class Decoded:
    """One image's labels (ids, emission order), their scores, the sequence log-probability, attention per step."""

    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    logprob: float = 0.0
    alphas: list[np.ndarray] = field(default_factory=list)


def _checked(logp: np.ndarray, rows: int, num_labels: int, step: int, source: str) -> np.ndarray:
    """The step's log-probabilities as float64, refusing a wrong shape, NaN and +inf."""
    if logp.shape != (rows, num_labels + 1):
        raise ValueError(f"{source}: log-probabilities of shape {tuple(logp.shape)} at step {step}; "
                         f"expected ({rows}, {num_labels + 1})")
    logp = logp.astype(np.float64, copy=True)
    bad = np.isnan(logp) | np.isposinf(logp)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise ValueError(f"{source}: non-finite log-probability {logp[row, col]} at step {step} (row {row}, "
                         f"token {col}); the graph overflowed or is broken")
    return logp


def _mask(logp: np.ndarray, used: np.ndarray, step: int, config: DecodingConfig, num_labels: int) -> np.ndarray:
    if config.forbid_repeat:
        logp[:, :num_labels][used] = -np.inf
    if step == config.max_len:
        logp[:, :num_labels] = -np.inf
    if step < config.min_labels:
        logp[:, num_labels] = -np.inf
    return logp


def greedy(step: StepFn, state: DecoderState, config: DecodingConfig, num_labels: int, keep_alphas: bool = False,
           source: str = "decoder") -> list[Decoded]:
    """The most likely token at every step; finished images drop out of the batch."""
    batch = state.num_rows
    stop = num_labels
    out = [Decoded() for _ in range(batch)]
    rows = np.arange(batch)
    tokens = np.full(batch, num_labels + 1, dtype=np.int64)
    used = np.zeros((batch, num_labels), dtype=bool)
    for t in range(config.max_len + 1):
        logp, state, alpha = step(tokens, state)
        logp = _mask(_checked(logp, rows.size, num_labels, t, source), used, t, config, num_labels)
        tokens = logp.argmax(axis=1)
        chosen = logp[np.arange(rows.size), tokens]
        for r, image in enumerate(rows):
            d = out[image]
            d.logprob += float(chosen[r])
            if keep_alphas and alpha is not None:
                d.alphas.append(np.array(alpha[r]))
            if tokens[r] != stop:
                d.labels.append(int(tokens[r]))
                d.scores.append(float(np.exp(chosen[r])))
        live = tokens != stop
        used[np.flatnonzero(live), tokens[live]] = True
        if not live.any():
            break
        rows, tokens, used = rows[live], tokens[live], used[live]
        state = state.select(np.flatnonzero(live))
    return out


def beam_search(step: StepFn, state: DecoderState, config: DecodingConfig, num_labels: int,
                keep_alphas: bool = False, source: str = "decoder") -> list[Decoded]:
    """Beam search over all images at once: up to K live hypotheses per image, stepped together."""
    batch, k, width, stop = state.num_rows, config.beam_width, num_labels + 1, num_labels
    out = [Decoded() for _ in range(batch)]
    images = np.arange(batch)                     # original index of each active image
    score = np.full((batch, k), -np.inf)          # summed log-probability of each live hypothesis
    score[:, 0] = 0.0
    seqs = np.zeros((batch, k, config.max_len), dtype=np.int64)
    probs = np.zeros((batch, k, config.max_len))
    used = np.zeros((batch, k, num_labels), dtype=bool)
    alphas: np.ndarray | None = None
    best_value = np.full(batch, -np.inf)
    n_max = max(config.normaliser(config.min_labels + 1), config.normaliser(config.max_len + 1))
    for t in range(config.max_len + 1):
        live = np.isfinite(score)                 # [A, K]; the state's rows are the live slots, row-major
        tokens = np.full(live.sum(), num_labels + 1, dtype=np.int64) if t == 0 else seqs[live][:, t - 1]
        logp_rows, state, alpha = step(tokens, state)
        logp_rows = _mask(_checked(logp_rows, tokens.size, num_labels, t, source), used[live], t, config, num_labels)
        a_n = score.shape[0]
        logp = np.full((a_n, k, width), -np.inf)
        logp[live] = logp_rows
        if keep_alphas and alpha is not None:
            if alphas is None:
                alphas = np.zeros((a_n, k, config.max_len + 1, alpha.shape[1]), dtype=np.float32)
            alphas[:, :, t][live] = alpha
        total = (score[:, :, None] + logp).reshape(a_n, k * width)
        order = np.argsort(-total, axis=1, kind="stable")[:, :2 * k]
        top = np.take_along_axis(total, order, axis=1)
        parent, token = order // width, order % width
        finite = np.isfinite(top)
        is_stop = finite & (token == stop)
        # a stop ranked among the first K finishes its hypothesis; the best one per image counts
        finishing = is_stop & (np.arange(order.shape[1])[None, :] < k)
        value = np.where(finishing, top / config.normaliser(t + 1), -np.inf)
        j = value.argmax(axis=1)
        rows_a = np.arange(a_n)
        better = value[rows_a, j] > best_value[images]
        for a in np.flatnonzero(better):
            b, p = images[a], parent[a, j[a]]
            best_value[b] = value[a, j[a]]
            out[b] = Decoded([int(x) for x in seqs[a, p, :t]], [float(x) for x in probs[a, p, :t]], float(top[a, j[a]]),
                             [alphas[a, p, i].copy() for i in range(t + 1)] if alphas is not None else [])
        # the first K other extensions are the next live hypotheses, in rank order
        extend = finite & ~is_stop
        slot = np.cumsum(extend, axis=1) - 1
        extend &= slot < k
        a_idx, r_idx = np.nonzero(extend)
        new_slot, par, tok = slot[a_idx, r_idx], parent[a_idx, r_idx], token[a_idx, r_idx]
        new_score = np.full((a_n, k), -np.inf)
        new_score[a_idx, new_slot] = top[a_idx, r_idx]
        # stop early where no live hypothesis can beat the best finished one (log-probabilities only fall)
        bound = new_score.max(axis=1) / n_max if t + 1 <= config.max_len else np.full(a_n, -np.inf)
        done = ~np.isfinite(new_score).any(axis=1) | (best_value[images] >= bound)
        keep = ~done[a_idx]
        a_idx, new_slot, par, tok = a_idx[keep], new_slot[keep], par[keep], tok[keep]
        if a_idx.size == 0:
            break
        # rows of the current step: live slots in row-major order
        row_of = np.full((a_n, k), -1, dtype=np.int64)
        row_of[live] = np.arange(int(live.sum()))
        state = state.select(row_of[a_idx, par])
        active = np.flatnonzero(~done)
        remap = np.full(a_n, -1, dtype=np.int64)
        remap[active] = np.arange(active.size)
        a_new = remap[a_idx]
        shape = (active.size, k)
        seqs_next = np.zeros(shape + seqs.shape[2:], dtype=seqs.dtype)
        probs_next = np.zeros(shape + probs.shape[2:])
        used_next = np.zeros(shape + used.shape[2:], dtype=bool)
        seqs_next[a_new, new_slot] = seqs[a_idx, par]
        seqs_next[a_new, new_slot, t] = tok
        probs_next[a_new, new_slot] = probs[a_idx, par]
        probs_next[a_new, new_slot, t] = np.exp(logp[a_idx, par, tok])
        used_next[a_new, new_slot] = used[a_idx, par]
        used_next[a_new, new_slot, tok] = True
        if alphas is not None:
            alphas_next = np.zeros(shape + alphas.shape[2:], dtype=alphas.dtype)
            alphas_next[a_new, new_slot] = alphas[a_idx, par]
            alphas = alphas_next
        score = np.full(shape, -np.inf)
        score[a_new, new_slot] = new_score[a_idx, new_slot]
        seqs, probs, used, images = seqs_next, probs_next, used_next, images[active]
    return out


def search_labels(step: StepFn, state: DecoderState, config: DecodingConfig, num_labels: int, keep_alphas: bool = False,
           source: str = "decoder") -> list[Decoded]:
    """Greedy for beam width 1, beam search otherwise."""
    config.check_labels(num_labels)
    search = greedy if config.beam_width == 1 else beam_search
    return search(step, state, config, num_labels, keep_alphas, source)
