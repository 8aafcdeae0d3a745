"""Per-label thresholds: MCC/F1 against hand counts, the tuner against brute force, and the bundle carrying them."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from corel_annotate.runtime.evaluation.thresholds import GRID, f1, mcc, tune_thresholds
from corel_annotate.training.checkpoint import load_checkpoint


def test_mcc_and_f1_hand_counts():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    p = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    tp, fp, fn, tn = 2, 1, 1, 4
    assert mcc(y, p) == pytest.approx((tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert f1(y, p) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert mcc(y, np.zeros_like(y)) == 0.0


@pytest.mark.parametrize("metric", ["mcc", "f1"])
def test_tuner_finds_the_grid_optimum(metric):
    rng = np.random.default_rng(0)
    targets = rng.random((80, 6)) < 0.3
    scores = np.clip(targets * 0.35 + rng.random((80, 6)) * 0.6, 0, 1).astype(np.float32)
    fn = mcc if metric == "mcc" else f1
    chosen = tune_thresholds(scores, targets, metric)
    for label in range(6):
        best = max(fn(targets[:, label], scores[:, label] >= t) for t in GRID)
        assert fn(targets[:, label], scores[:, label] >= chosen[label]) == pytest.approx(best)


@pytest.mark.parametrize("metric", ["mcc", "f1"])
def test_ties_go_to_the_threshold_nearest_half(metric):
    targets = np.array([[1, 1], [1, 0], [0, 0], [0, 1]], dtype=bool)
    # label 0: every grid threshold separates perfectly; label 1: every threshold from 0.05 to 0.6 does
    scores = np.array([[1.0, 0.9], [1.0, 0.0], [0.0, 0.0], [0.0, 0.61]], dtype=np.float32)
    assert tune_thresholds(scores, targets, metric).tolist() == pytest.approx([0.5, 0.5])
    scores[:, 1] = [0.3, 0.0, 0.0, 0.31]  # now only thresholds up to 0.3 are perfect: 0.3 is nearest 0.5
    assert tune_thresholds(scores, targets, metric)[1] == pytest.approx(0.3)


def test_label_without_positives_keeps_half():
    scores = np.random.default_rng(1).random((20, 2)).astype(np.float32)
    targets = np.zeros((20, 2), dtype=bool)
    targets[:5, 0] = True
    assert tune_thresholds(scores, targets)[1] == pytest.approx(0.5)


def test_trained_thresholds_reach_the_bundle(bundles):
    for method in ("cnn", "ml-gcn"):
        ckpt, bundle = bundles[method]
        cfg, _ = load_checkpoint(ckpt)
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["scoring"]["thresholds"] == pytest.approx(cfg.thresholds)
        assert len(cfg.thresholds) == len(cfg.vocabulary) and len(set(cfg.thresholds)) == 1  # balanced: one threshold
        # at most as many labels as a training image has (the synthetic photos carry 1-4), at least one
        assert manifest["scoring"]["top_k"] == cfg.top_k == 4 and manifest["scoring"]["min_labels"] == cfg.min_labels == 1
        from corel_annotate.runtime.annotator import Annotator

        annotator = Annotator.load(bundle)
        assert (annotator.manifest.scoring.top_k, annotator.manifest.scoring.min_labels) == (4, 1)
        probs = np.zeros((2, len(cfg.vocabulary)), dtype=np.float32)
        probs[0, :6] = 0.99  # six labels above any threshold: capped at 4
        probs[1, 3] = 1e-3  # none above: the floor keeps the best one
        chosen = annotator.labels_from_scores(probs)
        assert [len(a.label_ids) for a in chosen] == [4, 1] and chosen[1].label_ids == [3]


def test_balanced_threshold_is_the_grid_optimum():
    from corel_annotate.runtime.evaluation.metrics import annotation_metrics, label_sets_to_matrix
    from corel_annotate.runtime.scoring import select_labels
    from corel_annotate.runtime.evaluation.thresholds import balanced_threshold

    rng = np.random.default_rng(2)
    targets = rng.random((120, 9)) < np.linspace(0.05, 0.5, 9)  # rare to common labels
    scores = np.clip(targets * 0.3 + rng.random((120, 9)) * 0.7, 0, 1).astype(np.float32)

    def value(t):
        m = annotation_metrics(targets, label_sets_to_matrix(select_labels(scores, [t] * 9, 3, 1), 9))
        return (m.per_class_f1 + m.per_image_f1) / 2

    chosen = balanced_threshold(scores, targets, top_k=3, min_labels=1)
    assert chosen in GRID and value(chosen) == pytest.approx(max(value(t) for t in GRID))


def test_select_labels_cap_and_floor():
    from corel_annotate.runtime.scoring import select_labels

    probs = np.array([[0.9, 0.8, 0.7, 0.1], [0.2, 0.1, 0.3, 0.05], [0.6, 0.2, 0.1, 0.0]], dtype=np.float32)
    thr = [0.5] * 4
    assert select_labels(probs, thr) == [[0, 1, 2], [], [0]]
    assert select_labels(probs, thr, top_k=2) == [[0, 1], [], [0]]
    # the floor fills an image that has too few labels above threshold with its best-scored ones
    assert select_labels(probs, thr, top_k=2, min_labels=1) == [[0, 1], [2], [0]]
    assert select_labels(probs, thr, min_labels=2) == [[0, 1, 2], [2, 0], [0, 1]]


def test_labels_rank_by_score_relative_to_their_threshold():
    from corel_annotate.runtime.scoring import select_labels

    probs = np.array([[0.6, 0.9, 0.3, 0.9], [0.1, 0.2, 0.05, 0.0]], dtype=np.float32)
    # one threshold: score order, ties to the lower id; the floor takes the best label
    assert select_labels(probs, [0.5] * 4, top_k=2, min_labels=1) == [[1, 3], [1]]
    # per-label: 0.3/0.1 = 3 ranks before 0.9/0.5 = 1.8, 0.6/0.5 = 1.2 and 0.9/0.8 = 1.125; the cap keeps the first two
    assert select_labels(probs, [0.5, 0.8, 0.1, 0.5], top_k=2, min_labels=1) == [[2, 3], [2]]
    # equal ratios: the lower threshold first
    assert select_labels(np.array([[0.4, 0.2]], dtype=np.float32), [0.8, 0.4], min_labels=0) == [[]]
    assert select_labels(np.array([[0.8, 0.4]], dtype=np.float32), [0.8, 0.4]) == [[1, 0]]


def test_shrunk_thresholds_follow_the_labels_own_evidence():
    from corel_annotate.runtime.evaluation.thresholds import balanced_threshold, shrunk_thresholds

    rng = np.random.default_rng(3)
    targets = np.zeros((200, 3), dtype=bool)
    targets[:100, 0] = True   # 100 positives: nearly its own threshold
    targets[:1, 1] = True     # 1 positive: nearly the global one
    scores = rng.random((200, 3)).astype(np.float32) * 0.5
    scores[:100, 0] += 0.45
    scores[0, 1] = 0.95
    overall = balanced_threshold(scores, targets)
    own = tune_thresholds(scores, targets, "f1")
    got = shrunk_thresholds(scores, targets, prior=5.0)
    assert got[0] == pytest.approx(overall + 100 / 105 * (own[0] - overall), abs=1e-6)
    assert got[1] == pytest.approx(overall + 1 / 6 * (own[1] - overall), abs=1e-6)
    assert got[2] == pytest.approx(overall, abs=1e-6)  # no positives: the global threshold
