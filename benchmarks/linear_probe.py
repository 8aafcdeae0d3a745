"""Linear-probe baseline: frozen backbone features + one L2-regularised logistic regression per label.

    python -m corel_annotate.benchmarks.linear_probe --data DIR [--backbone tf_efficientnet_lite0] [--image-size 224]

The yardstick for every method (issue: a method that cannot beat it is not worth shipping).
Features come from the same cached, frozen backbone the methods train on; each label's
classifier minimises the mean log-loss plus ``||w||^2 / (2 C N)`` (scikit-learn's
LogisticRegression objective) with L-BFGS; labels are predicted at score >= 0.5.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer

from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.runtime.evaluation.metrics import AnnotationMetrics, annotation_metrics
from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig

app = typer.Typer(add_completion=False, help=__doc__)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0, iters: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``[D, L]`` and biases ``[L]`` of independent per-label logistic regressions."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64))
    w = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")
    n = x.shape[0]

    def closure():
        opt.zero_grad()
        logits = xt @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, reduction="sum") / n
        loss = loss + (w * w).sum() / (2 * c * n)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def linear_probe(data: Path, backbone: str = "tf_efficientnet_lite0", weights: str = "imagenet",
                 image_size: int = 224, c: float = 1.0, cache_dir: Optional[Path] = None) -> dict:
    """Train on train.json (all of it) and score test.json; returns metrics and timings."""
    from corel_annotate.training.backbones import build_backbone
    from corel_annotate.training.config import ModelConfig
    from corel_annotate.training.features import cached_features, default_cache_dir
    from corel_annotate.training.factory import create_model
    from corel_annotate.training.sequences import multi_hot

    ds = CorelDataset(data)
    train, test = ds.read("train"), ds.read("test")
    net, info = build_backbone(backbone, weights)
    model = create_model(ModelConfig(method="cnn", num_labels=len(ds.vocabulary), backbone=backbone,
                                     feature_dim=info.num_features), net)
    pre = PreprocessConfig(image_size=image_size, mean=info.mean, std=info.std)
    cache = cache_dir or default_cache_dir()
    started = time.perf_counter()
    x_train, _ = cached_features(model, [s.path for s in train.samples], pre, info.weights_id, cache)
    x_test, _ = cached_features(model, [s.path for s in test.samples], pre, info.weights_id, cache)
    features_s = time.perf_counter() - started
    y_train = multi_hot(train.label_ids(ds.vocabulary), len(ds.vocabulary))
    y_test = multi_hot(test.label_ids(ds.vocabulary), len(ds.vocabulary)).astype(np.uint8)
    t0 = time.perf_counter()
    w, b = fit_logistic(np.asarray(x_train), y_train, c)
    fit_s = time.perf_counter() - t0
    scores = 1.0 / (1.0 + np.exp(-(np.asarray(x_test, dtype=np.float64) @ w + b)))
    predictions = (scores >= 0.5).astype(np.uint8)
    metrics: AnnotationMetrics = annotation_metrics(y_test, predictions, scores)
    return {"data": str(data), "backbone": backbone, "image_size": image_size, "C": c,
            "train_images": len(train.samples), "test_images": len(test.samples),
            "feature_seconds": round(features_s, 2), "fit_seconds": round(fit_s, 2), "metrics": metrics.to_dict(),
            "label_sets": [[int(i) for i in np.flatnonzero(row)] for row in predictions]}


@app.command()
def main(data: Path = typer.Option(...), backbone: str = "tf_efficientnet_lite0", weights: str = "imagenet",
         image_size: int = 224, c: float = 1.0, out: Optional[Path] = None) -> None:
    result = linear_probe(data, backbone, weights, image_size, c)
    m = result["metrics"]
    typer.echo(f"linear probe on {data}: per-class F1 {m['per_class/f1']:.4f}, per-image F1 {m['per_image/f1']:.4f}, "
               f"N+ {m['N+']}, mAP {m['mAP']:.4f} (fit {result['fit_seconds']}s)")
    if out:
        out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    app()
