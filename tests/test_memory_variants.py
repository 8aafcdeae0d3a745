"""2PKNN label scores against numbers worked by hand."""
from __future__ import annotations

import numpy as np

from corel_annotate.benchmarks.memory_variants import two_pass_scores


def test_two_pass_takes_each_labels_nearest_holders():
    # four stored photos on a circle; labels: photo 0 {a}, 1 {a}, 2 {b}, 3 {b, c}
    angles = np.radians([0.0, 10.0, 90.0, 170.0])
    keys = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1]], dtype=bool)
    query = np.array([[1.0, 0.0]])
    # k1 = 1: label a's nearest holder is photo 0, b's is photo 2, c's is photo 3
    scores = two_pass_scores(query, keys, labels, k1=1, temperature=1.0)
    sims = np.array([1.0, np.cos(np.radians(90.0)), np.cos(np.radians(170.0))])
    w = np.exp(sims) / np.exp(sims).sum()
    np.testing.assert_allclose(scores[0], [w[0], w[1] + w[2], w[2]], atol=1e-12)
    # leaving photo 0 out: a's nearest holder becomes photo 1
    left_out = two_pass_scores(query, keys, labels, k1=1, temperature=1.0, exclude=np.array([0]))
    sims = np.array([np.cos(np.radians(10.0)), 0.0, np.cos(np.radians(170.0))])
    w = np.exp(sims) / np.exp(sims).sum()
    np.testing.assert_allclose(left_out[0], [w[0], w[1] + w[2], w[2]], atol=1e-12)
