"""corel-plot embeddings: t-SNE keeps neighbourhoods; the figure is written for ml-gcn and refused otherwise."""
from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from corel_annotate.training.cli.plot import app
from corel_annotate.training.plots import neighbour_cooccurrence, tsne_2d


def test_tsne_keeps_separate_clusters_apart():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(3, 50))
    points = np.concatenate([c + rng.normal(0, 0.5, size=(12, 50)) for c in centres])
    cluster = np.repeat(np.arange(3), 12)
    xy = tsne_2d(points)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert (cluster[d.argmin(axis=1)] == cluster).mean() == 1.0


def test_neighbour_cooccurrence_counts_linked_nearest_neighbours():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    linked = np.zeros((4, 4))
    linked[0, 1] = 1.0
    assert neighbour_cooccurrence(vectors, linked) == 0.5
    linked[2, 3] = 1.0
    assert neighbour_cooccurrence(vectors, linked) == 1.0


def test_embeddings_plot_for_ml_gcn(bundles, tmp_path):
    ckpt, _ = bundles["ml-gcn"]
    out = tmp_path / "emb.png"
    result = CliRunner().invoke(app, ["embeddings", str(ckpt), "-o", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.width > img.height > 300
    assert "nearest neighbour co-occurs" in result.output


def test_embeddings_plot_refuses_a_model_without_gcn(bundles, tmp_path):
    ckpt, _ = bundles["cnn"]
    result = CliRunner().invoke(app, ["embeddings", str(ckpt), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "has no GCN" in result.output and not (tmp_path / "x.png").exists()
