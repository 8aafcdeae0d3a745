"""Label sets to ``start, l1 .. ln, stop, stop ..`` sequences for the recurrent methods."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from corel_annotate.runtime.bundle.vocabulary import Vocabulary


def label_rank(ordering: str, train_label_ids: Sequence[Sequence[int]], num_labels: int) -> tuple[int, ...]:
    """Rank of every label id under ``ordering`` (lower rank comes first in a sequence).

    ``rare-first`` sorts by ascending training-set frequency (the reference
    default), ``frequent-first`` by descending frequency; ties go by vocabulary
    order.  ``dataset`` keeps each annotation's own order and returns ``()``.
    """
    if ordering == "dataset":
        return ()
    if ordering not in ("rare-first", "frequent-first"):
        raise ValueError(f"unknown ordering {ordering!r}")
    counts = Counter(i for ids in train_label_ids for i in ids)
    sign = 1 if ordering == "rare-first" else -1
    order = sorted(range(num_labels), key=lambda i: (sign * counts.get(i, 0), i))
    rank = [0] * num_labels
    for position, label in enumerate(order):
        rank[label] = position
    return tuple(rank)


@dataclass
class EncodedSequences:
    """Token matrix ``[N, max_len + 2]`` and the number of labels kept per sequence."""

    tokens: np.ndarray
    lengths: np.ndarray
    truncated: int


def encode_sequences(label_ids: Sequence[Sequence[int]], vocabulary: Vocabulary, rank: Sequence[int],
                     max_len: int) -> EncodedSequences:
    """Order each label set by ``rank`` (or keep it as given when ``rank`` is empty), cap it at
    ``max_len`` labels, and pad with stop.  Sets longer than ``max_len`` are counted in ``truncated``."""
    tokens = np.full((len(label_ids), max_len + 2), vocabulary.stop_id, dtype=np.int64)
    tokens[:, 0] = vocabulary.start_id
    lengths = np.zeros(len(label_ids), dtype=np.int64)
    truncated = 0
    for row, ids in enumerate(label_ids):
        ordered = sorted(ids, key=lambda i: rank[i]) if rank else list(ids)
        if len(ordered) > max_len:
            truncated += 1
            ordered = ordered[:max_len]
        tokens[row, 1:1 + len(ordered)] = ordered
        lengths[row] = len(ordered)
    return EncodedSequences(tokens, lengths, truncated)


def multi_hot(label_ids: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """``[N, L]`` float32 targets from label-id lists."""
    out = np.zeros((len(label_ids), num_labels), dtype=np.float32)
    for row, ids in enumerate(label_ids):
        out[row, list(ids)] = 1.0
    return out
