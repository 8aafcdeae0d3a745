"""Frozen-backbone features, computed once and cached on disk.

The cache key covers the backbone, its weights, the preprocessing, the feature
kind and the file list (names, sizes, modification times), so a changed photo
or setting never reuses stale features.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from runtime.inputs import prefetch_batches
from runtime.preprocessing import PreprocessConfig

from .models.base import AnnotationModel


def default_cache_dir() -> Path:
    root = os.environ.get("COREL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "corel-annotate")
    return Path(root) / "features"


def cache_key(backbone: str, weights_id: str, preprocess: PreprocessConfig, feature_kind: str,
              paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"backbone": backbone, "weights": weights_id, "preprocess": preprocess.to_dict(),
                              "kind": feature_kind}, sort_keys=True).encode())
    for p in paths:
        st = p.stat()
        digest.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


@torch.no_grad()
def compute_features(model: AnnotationModel, paths: Sequence[Path], preprocess: PreprocessConfig,
                     batch_size: int = 32, device: str = "cpu",
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Run the backbone over ``paths`` and return the head's input features as float32."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for batch in prefetch_batches(list(paths), preprocess, batch_size):
            if batch.failed:
                raise ValueError(batch.failed[0][1])
            feats = model.features(torch.from_numpy(batch.array).to(device))
            out.append(feats.float().cpu().numpy())
            if progress:
                progress(len(batch.paths))
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.float32)


def cached_features(model: AnnotationModel, paths: Sequence[Path], preprocess: PreprocessConfig, weights_id: str,
                    cache_dir: Path, batch_size: int = 32, device: str = "cpu",
                    progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, bool]:
    """Features for ``paths`` from the cache, computing and storing them on a miss. Returns (features, hit)."""
    key = cache_key(model.config.backbone, weights_id, preprocess, model.feature_kind, paths)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.npy"
    if path.is_file():
        try:
            return np.load(path, mmap_mode="r"), True
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    feats = compute_features(model, paths, preprocess, batch_size, device, progress)
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".npy", dir=cache_dir)
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, feats)
    os.replace(tmp, path)
    return feats, False
