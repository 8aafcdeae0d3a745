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


def nearest_neighbour_linked(vectors: np.ndarray, linked: np.ndarray) -> float:
    """The share of rows whose nearest other row (cosine) is linked to it, by brute force."""
    n = len(vectors)
    hits = 0
    for i in range(n):
        cos = [float(vectors[i] @ vectors[j] / (np.linalg.norm(vectors[i]) * np.linalg.norm(vectors[j])))
               if j != i else -np.inf for j in range(n)]
        j = int(np.argmax(cos))
        hits += bool(linked[i, j] or linked[j, i])
    return hits / n


def test_embeddings_plot_for_ml_gcn(bundles, tmp_path):
    """The figure is written, and the shares it reports are those counted here from the checkpoint's own
    label embeddings, classifiers and label graph."""
    import re

    import torch

    from corel_annotate.training.checkpoint import model_from_checkpoint

    ckpt, _ = bundles["ml-gcn"]
    out = tmp_path / "emb.png"
    result = CliRunner().invoke(app, ["embeddings", str(ckpt), "-o", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > img.height > 300
    model, cfg = model_from_checkpoint(ckpt)
    with torch.no_grad():
        before = model.label_inputs.numpy()
        after = model.label_classifiers().numpy()
        graph = model.adjacency.numpy()
    assert before.shape[0] == after.shape[0] == len(cfg.vocabulary) == 10
    linked = (graph - np.diag(np.diag(graph))) > 0      # edges between different labels
    text = " ".join(result.output.split())
    reported = dict(re.findall(r"(before the GCN|after the GCN): (\d+)%", text))
    assert reported == {"before the GCN": str(round(100 * nearest_neighbour_linked(before, linked))),
                        "after the GCN": str(round(100 * nearest_neighbour_linked(after, linked)))}, text


def test_embeddings_plot_refuses_a_model_without_gcn(bundles, tmp_path):
    ckpt, _ = bundles["cnn"]
    result = CliRunner().invoke(app, ["embeddings", str(ckpt), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "has no GCN" in result.output and not (tmp_path / "x.png").exists()
