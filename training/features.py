"""Frozen-backbone features, computed once and cached on disk.

The cache key covers the backbone, its weights, the preprocessing, the feature
kind, the augmented view (if any) and the file list (names, sizes, modification
times), so a changed photo or setting never reuses stale features.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from corel_annotate.runtime.photos import prefetch, prefetch_batches
from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig

from .augment import AugmentConfig, augmented_views
from .models.base import AnnotationModel


def default_cache_dir() -> Path:
    root = os.environ.get("COREL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "corel-annotate")
    return Path(root) / "features"


def cache_key(backbone: str, weights_id: str, preprocess: PreprocessConfig, feature_kind: str,
              paths: Sequence[Path], augment: AugmentConfig | None = None, view: int = 0) -> str:
    """Names the cache file; ``view`` 0 is the plain preprocessing, ``view`` k > 0 the k-th augmented view."""
    digest = hashlib.sha256()
    pre = {k: v for k, v in preprocess.to_dict().items() if not (k == "decode" and v == "full")}  # keys of old caches
    spec = {"backbone": backbone, "weights": weights_id, "preprocess": pre, "kind": feature_kind}
    if view:
        if augment is None:
            raise ValueError("augmented views need an augmentation config")
        spec.update(view=view, augment={k: v for k, v in augment.to_dict().items() if k != "views"})
    digest.update(json.dumps(spec, sort_keys=True).encode())
    for p in paths:
        st = p.stat()
        digest.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _batches(paths: Sequence[Path], preprocess: PreprocessConfig, batch_size: int, augment: AugmentConfig | None,
             view: int) -> Iterator[np.ndarray]:
    """Preprocessed batches (plain, or augmented view ``view``), decoded in background threads."""
    if not view:
        for batch in prefetch_batches(list(paths), preprocess, batch_size):
            if batch.failed:
                raise ValueError(batch.failed[0][1])
            yield batch.array
        return
    if augment is None:
        raise ValueError("augmented views need an augmentation config")
    chunks = [range(i, min(i + batch_size, len(paths))) for i in range(0, len(paths), batch_size)]
    yield from prefetch(chunks, lambda c: augmented_views([paths[i] for i in c], c, preprocess, augment, view))


@torch.no_grad()
def compute_features(model: AnnotationModel, paths: Sequence[Path], preprocess: PreprocessConfig,
                     batch_size: int = 32, device: str = "cpu", progress: Callable[[int], None] | None = None,
                     kind: str | None = None, augment: AugmentConfig | None = None, view: int = 0) -> np.ndarray:
    """Run the backbone over ``paths`` (plain or augmented view ``view``) and return float32 features of
    ``kind`` (default: the head's inputs; ``stageN``: the output of the first N stages)."""
    kind = kind or model.feature_kind
    was_training = model.training
    model.eval()
    out = []
    try:
        for array in _batches(paths, preprocess, batch_size, augment, view):
            out.append(model.cache_inputs(torch.from_numpy(array).to(device), kind).float().cpu().numpy())
            if progress:
                progress(array.shape[0])
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.float32)


def _store(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def cached_features(model: AnnotationModel, paths: Sequence[Path], preprocess: PreprocessConfig, weights_id: str,
                    cache_dir: Path, batch_size: int = 32, device: str = "cpu",
                    progress: Callable[[int], None] | None = None, augment: AugmentConfig | None = None,
                    view: int = 0) -> tuple[np.ndarray, bool]:
    """The model's cached inputs (``model.cache_kind``) for ``paths``, computed and stored on a miss.
    Returns (features, hit).  Augmented views (``view`` > 0) are stored as float16, halving the
    memory several views take."""
    kind = model.cache_kind
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{cache_key(model.config.backbone, weights_id, preprocess, kind, paths, augment, view)}.npy"
    if path.is_file():
        try:
            return np.load(path, mmap_mode="r"), True
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    feats = compute_features(model, paths, preprocess, batch_size, device, progress, kind, augment, view)
    if view:
        feats = feats.astype(np.float16)
    _store(path, feats)
    return feats, False
