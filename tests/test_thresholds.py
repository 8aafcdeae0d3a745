"""Per-label thresholds: MCC/F1 against hand counts, the tuner against brute force, and the bundle carrying them."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runtime.thresholds import GRID, f1, mcc, tune_thresholds
from training.checkpoint import load_checkpoint


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
        assert len(cfg.thresholds) == len(cfg.vocabulary)
        assert any(abs(t - 0.5) > 1e-6 for t in cfg.thresholds), "thresholds were tuned on validation data"
