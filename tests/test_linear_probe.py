"""The linear-probe baseline's logistic regression reaches its optimum and separates easy data."""
from __future__ import annotations

import numpy as np
import torch

from corel_annotate.benchmarks.linear_probe import fit_logistic, linear_probe


def test_fit_reaches_a_stationary_point_of_the_regularised_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    y = (x @ rng.normal(size=(5, 3)) + rng.normal(scale=0.5, size=(120, 3)) > 0).astype(np.float64)
    w, b = fit_logistic(x, y, c=1.0)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(x) @ wt + bt, torch.tensor(y),
                                                                reduction="sum") / 120 + (wt * wt).sum() / 240
    loss.backward()
    assert float(wt.grad.abs().max()) < 1e-5 and float(bt.grad.abs().max()) < 1e-5
    accuracy = ((x @ w + b > 0) == (y > 0.5)).mean()
    assert accuracy > 0.8


def test_probe_on_synthetic_photos_beats_chance(synth_data, feature_cache):
    result = linear_probe(synth_data, image_size=128, cache_dir=feature_cache)
    assert result["metrics"]["per_class/f1"] > 0.6
    assert result["train_images"] > result["test_images"] > 0
