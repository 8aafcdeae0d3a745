"""Figures: PNG plots of datasets and results (matplotlib, drawn off screen with the Agg canvas)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from corel_annotate.runtime.dataset import CorelDataset, read_annotations
from corel_annotate.runtime.preprocessing import load_image

_GAN_NAME = re.compile(r"^(?P<stem>.+)_gan_(?P<k>\d+)\.jpeg$")


def augmentation_sheet(data_dir: Path, augmented_dir: Path, out_png: Path, rows: int = 6) -> Path:
    """A contact sheet: per row one source training image (titled with its labels) and its generated images.

    ``augmented_dir`` is the output of ``training.wgan.augment_dataset``; the first
    ``rows`` source images (in ``train_aug.json`` order) are shown.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    data_dir, augmented_dir, out_png = Path(data_dir), Path(augmented_dir), Path(out_png)
    sources = {Path(s.image_name).stem: s for s in CorelDataset(data_dir).read("train").samples}
    groups: dict[str, list[tuple[int, str]]] = {}
    for item in read_annotations(augmented_dir / "train_aug.json"):
        match = _GAN_NAME.match(item["image_name"])
        if match and match["stem"] in sources:
            groups.setdefault(match["stem"], []).append((int(match["k"]), item["image_name"]))
    stems = list(groups)[:rows]
    if not stems:
        raise ValueError(f"{augmented_dir / 'train_aug.json'}: no generated image matches a training image of {data_dir}")
    cols = 1 + max(len(groups[s]) for s in stems)
    fig = Figure(figsize=(2.4 * cols, 2.0 * len(stems) + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(stems), cols, squeeze=False)
    for r, stem in enumerate(stems):
        source = sources[stem]
        panels = [(load_image(source.path), f"{source.image_name}\n{', '.join(source.labels)}")]
        panels += [(load_image(augmented_dir / "images" / name), f"generated {k}") for k, name in sorted(groups[stem])]
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c < len(panels):
                picture, title = panels[c]
                ax.imshow(picture)
                ax.set_title(title, fontsize=7)
    fig.suptitle("ML-WGAN augmentation: original, then generated images with the same labels", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


def tsne_2d(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[N, D]`` to ``[N, 2]`` with scikit-learn's t-SNE (perplexity scaled down for small N)."""
    from sklearn.manifold import TSNE

    n = points.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(points, dtype=np.float64))


def neighbour_cooccurrence(vectors: np.ndarray, adjacency: np.ndarray) -> float:
    """Share of labels whose nearest neighbour (cosine) is a label they co-occur with in training."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    linked = (adjacency + adjacency.T) > 0
    return float(np.mean([linked[i, j] for i, j in enumerate(nearest)]))


def embeddings_figure(checkpoint: Path, out_png: Path, seed: int = 0) -> dict:
    """t-SNE of an ml-gcn checkpoint's label embeddings before the GCN (its inputs: GloVe or learned)
    and after it (the per-label classifiers it produces), labels written on the points.

    Returns, for each panel, the share of labels whose nearest neighbour co-occurs with them."""
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .checkpoint import model_from_checkpoint

    model, cfg = model_from_checkpoint(checkpoint)
    if not hasattr(model, "label_classifiers"):
        raise ValueError(f"{checkpoint}: a {cfg.model.method} checkpoint has no GCN; "
                         "the embeddings plot needs an ml-gcn checkpoint")
    with torch.no_grad():
        before = model.label_inputs.detach().cpu().numpy()
        after = model.label_classifiers().cpu().numpy()
        adjacency = model.adjacency.detach().cpu().numpy() - np.eye(before.shape[0], dtype=np.float32)
    labels = list(cfg.vocabulary)
    panels = [("before the GCN: " + ("GloVe" if cfg.model.glove else "learned") + " label embeddings", before),
              ("after the GCN: label classifiers", after)]
    fig = Figure(figsize=(13, 6.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    stats = {}
    for ax, (title, vectors) in zip(axes, panels):
        xy = tsne_2d(vectors, seed)
        share = neighbour_cooccurrence(vectors, adjacency)
        stats[title.split(":")[0]] = share
        ax.scatter(xy[:, 0], xy[:, 1], s=12, c="tab:blue")
        for (x, y), name in zip(xy, labels):
            ax.annotate(name, (x, y), fontsize=7 if len(labels) > 40 else 10, xytext=(2, 2),
                        textcoords="offset points")
        ax.set_title(f"{title}\nnearest neighbour co-occurs in training: {100 * share:.0f}% of labels", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"ml-gcn label embeddings (t-SNE), {checkpoint.name}")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return stats
