"""Tests for label sequences (training.sequences) and the ML-GCN correlation matrix."""
from __future__ import annotations

import numpy as np
import pytest

from corel_annotate.runtime.bundle.vocabulary import Vocabulary
from corel_annotate.training.models.gcn import correlation_matrix
from corel_annotate.training.sequences import encode_sequences, label_rank, multi_hot

VOCAB = Vocabulary(("a", "b", "c", "d", "e"))  # V = 5, stop = 5, start = 6

# label frequencies in TRAIN: a=1, b=4, c=2, d=0, e=2
TRAIN = [[1, 0], [1, 2], [1, 4], [2, 1, 4]]


def test_rare_first_rank():
    rank = label_rank("rare-first", TRAIN, 5)
    # ascending frequency: d(0), a(1), c(2), e(2), b(4); c before e by vocabulary order
    order = sorted(range(5), key=lambda i: rank[i])
    assert order == [3, 0, 2, 4, 1]
    assert rank == (1, 4, 2, 0, 3)


def test_frequent_first_rank():
    rank = label_rank("frequent-first", TRAIN, 5)
    # descending frequency: b(4), c(2), e(2), a(1), d(0); c before e by vocabulary order
    order = sorted(range(5), key=lambda i: rank[i])
    assert order == [1, 2, 4, 0, 3]
    assert rank == (3, 0, 1, 4, 2)


def test_rank_ties_by_vocabulary_order():
    # all labels equally frequent: both orderings reduce to vocabulary order
    train = [[0, 1, 2, 3]]
    assert label_rank("rare-first", train, 4) == (0, 1, 2, 3)
    assert label_rank("frequent-first", train, 4) == (0, 1, 2, 3)
    # unseen labels tie at zero
    assert label_rank("rare-first", [[3]], 4) == (0, 1, 2, 3)
    assert label_rank("frequent-first", [[3]], 4) == (1, 2, 3, 0)


def test_rank_is_a_permutation():
    for ordering in ("rare-first", "frequent-first"):
        rank = label_rank(ordering, TRAIN, 5)
        assert sorted(rank) == [0, 1, 2, 3, 4]


def test_dataset_order_kept():
    assert label_rank("dataset", TRAIN, 5) == ()
    enc = encode_sequences([[4, 0, 2], [1]], VOCAB, (), max_len=4)
    assert enc.tokens.tolist() == [[6, 4, 0, 2, 5, 5], [6, 1, 5, 5, 5, 5]]
    assert enc.lengths.tolist() == [3, 1]
    assert enc.truncated == 0


def test_encode_rare_first_layout():
    rank = label_rank("rare-first", TRAIN, 5)
    label_ids = [[1, 0], [4, 2, 3], [1], []]
    enc = encode_sequences(label_ids, VOCAB, rank, max_len=4)
    assert VOCAB.stop_id == 5 and VOCAB.start_id == 6
    assert enc.tokens.shape == (4, 6)
    assert enc.tokens.dtype == np.int64
    assert enc.tokens.tolist() == [
        [6, 0, 1, 5, 5, 5],      # a(1) before b(4)
        [6, 3, 2, 4, 5, 5],      # d(0), c(2), e(2)
        [6, 1, 5, 5, 5, 5],
        [6, 5, 5, 5, 5, 5],
    ]
    assert enc.lengths.tolist() == [2, 3, 1, 0]
    assert enc.truncated == 0


def test_encode_frequent_first_layout():
    rank = label_rank("frequent-first", TRAIN, 5)
    enc = encode_sequences([[0, 1], [3, 4, 2]], VOCAB, rank, max_len=3)
    assert enc.tokens.tolist() == [[6, 1, 0, 5, 5], [6, 2, 4, 3, 5]]
    assert enc.lengths.tolist() == [2, 3]
    assert enc.truncated == 0


def test_truncation_keeps_first_in_rank_order():
    rare = label_rank("rare-first", TRAIN, 5)
    freq = label_rank("frequent-first", TRAIN, 5)
    label_ids = [[0, 1, 2, 3, 4], [1, 4], [2, 3, 0]]
    enc = encode_sequences(label_ids, VOCAB, rare, max_len=2)
    # rare-first keeps the two rarest: d(0), a(1)
    assert enc.tokens.tolist() == [[6, 3, 0, 5], [6, 4, 1, 5], [6, 3, 0, 5]]
    assert enc.lengths.tolist() == [2, 2, 2]
    assert enc.truncated == 2
    enc = encode_sequences(label_ids, VOCAB, freq, max_len=2)
    # frequent-first keeps the two most frequent: b(4), c(2)
    assert enc.tokens.tolist() == [[6, 1, 2, 5], [6, 1, 4, 5], [6, 2, 0, 5]]
    assert enc.truncated == 2
    enc = encode_sequences(label_ids, VOCAB, (), max_len=2)
    assert enc.tokens.tolist() == [[6, 0, 1, 5], [6, 1, 4, 5], [6, 2, 3, 5]]
    assert enc.truncated == 2


def test_exact_max_len_is_not_truncated():
    rank = label_rank("rare-first", TRAIN, 5)
    enc = encode_sequences([[0, 1, 2]], VOCAB, rank, max_len=3)
    assert enc.truncated == 0
    assert enc.tokens.tolist() == [[6, 0, 2, 1, 5]]
    assert enc.lengths.tolist() == [3]


def test_multi_hot():
    out = multi_hot([[0, 2], [], [4, 4, 1]], 5)
    assert out.dtype == np.float32
    assert out.tolist() == [[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 1]]


# --- ML-GCN correlation matrix ---------------------------------------------

GCN_LABELS = [[0, 1], [0, 1, 2], [0, 2], [0], [1, 3], [2, 2, 0]]
# counts (a label repeated in one sample counts once):
#   n0 = 5, n1 = 3, n2 = 3, n3 = 1
# co-occurrence (samples with both):
#   (0,1) = 2, (0,2) = 3, (1,2) = 1, (1,3) = 1, others 0


def expected_correlation(threshold, p):
    n = np.array([5.0, 3.0, 3.0, 1.0])
    both = np.zeros((4, 4))
    both[0, 1] = both[1, 0] = 2
    both[0, 2] = both[2, 0] = 3
    both[1, 2] = both[2, 1] = 1
    both[1, 3] = both[3, 1] = 1
    cond = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            if i != j:
                cond[i, j] = both[i, j] / n[i]  # P(j | i)
    binary = np.where(cond >= threshold, 1.0, 0.0)
    np.fill_diagonal(binary, 0.0)
    out = np.zeros((4, 4))
    for j in range(4):
        col_sum = binary[:, j].sum()
        for i in range(4):
            out[i, j] = binary[i, j] * p / (col_sum + 1e-6)
    return out + np.eye(4)


def test_conditional_probabilities_by_hand():
    # spelled out for threshold 0.4:
    # P(1|0)=2/5=.4 P(2|0)=3/5=.6 P(3|0)=0
    # P(0|1)=2/3    P(2|1)=1/3    P(3|1)=1/3
    # P(0|2)=1      P(1|2)=1/3    P(3|2)=0
    # P(0|3)=0      P(1|3)=1      P(2|3)=0
    binary = np.array([[0, 1, 1, 0],
                       [1, 0, 0, 0],
                       [1, 0, 0, 0],
                       [0, 1, 0, 0]], dtype=float)
    p = 0.25
    col = binary.sum(axis=0)  # [2, 2, 1, 0]
    want = binary * p / (col[None, :] + 1e-6) + np.eye(4)
    assert np.allclose(expected_correlation(0.4, p), want)
    got = correlation_matrix(GCN_LABELS, 4, threshold=0.4, p=p)
    assert got.dtype == np.float32 and got.shape == (4, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("threshold,p", [(0.4, 0.25), (0.3, 0.25), (0.5, 0.2), (0.7, 0.4), (1.0, 0.25)])
def test_correlation_matrix_matches_hand_computation(threshold, p):
    got = correlation_matrix(GCN_LABELS, 4, threshold=threshold, p=p)
    np.testing.assert_allclose(got, expected_correlation(threshold, p), rtol=1e-6, atol=1e-7)


def test_correlation_matrix_diagonal_and_column_sums():
    p = 0.25
    got = correlation_matrix(GCN_LABELS, 4, threshold=0.3, p=p).astype(np.float64)
    np.testing.assert_allclose(np.diag(got), np.ones(4), atol=1e-7)
    off = got - np.eye(4)
    for j in range(4):
        k = np.count_nonzero(off[:, j])
        if k:
            # off-diagonal entries of a column sum to p (up to the 1e-6 term)
            assert off[:, j].sum() == pytest.approx(p * k / (k + 1e-6), rel=1e-6)
        else:
            assert off[:, j].sum() == 0.0


def test_correlation_matrix_is_directional():
    # label 3 only ever appears with 1: P(1|3) = 1 but P(3|1) = 1/3
    got = correlation_matrix(GCN_LABELS, 4, threshold=0.5, p=0.25)
    assert got[3, 1] > 0       # P(1|3) = 1 >= 0.5
    assert got[1, 3] == 0      # P(3|1) = 1/3 < 0.5


def test_unseen_label_has_only_identity():
    got = correlation_matrix([[0, 1]], 3, threshold=0.5, p=0.25)
    np.testing.assert_array_equal(got[2], [0, 0, 1])
    np.testing.assert_array_equal(got[:, 2], [0, 0, 1])
