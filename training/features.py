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
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from runtime.inputs import prefetch_batches
from runtime.preprocessing import PreprocessConfig

from .augment import AugmentConfig, augmented_views
from .models.base import FEATURE_KINDS, AnnotationModel, head_inputs


def default_cache_dir() -> Path:
    root = os.environ.get("COREL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "corel-annotate")
    return Path(root) / "features"


def cache_key(backbone: str, weights_id: str, preprocess: PreprocessConfig, feature_kind: str,
              paths: Sequence[Path], augment: AugmentConfig | None = None, view: int = 0) -> str:
    """Names the cache file; ``view`` 0 is the plain preprocessing, ``view`` k > 0 the k-th augmented view."""
    digest = hashlib.sha256()
    spec = {"backbone": backbone, "weights": weights_id, "preprocess": preprocess.to_dict(), "kind": feature_kind}
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
    assert augment is not None
    chunks = [range(i, min(i + batch_size, len(paths))) for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [pool.submit(augmented_views, [paths[i] for i in c], c, preprocess, augment, view) for c in chunks[:2]]
        for k in range(len(chunks)):
            if k + 2 < len(chunks):
                c = chunks[k + 2]
                pending.append(pool.submit(augmented_views, [paths[i] for i in c], c, preprocess, augment, view))
            yield pending.pop(0).result()


@torch.no_grad()
def compute_feature_kinds(model: AnnotationModel, paths: Sequence[Path], preprocess: PreprocessConfig,
                          kinds: Sequence[str], batch_size: int = 32, device: str = "cpu",
                          progress: Callable[[int], None] | None = None, augment: AugmentConfig | None = None,
                          view: int = 0) -> dict[str, np.ndarray]:
    """One backbone pass over ``paths`` giving every requested kind of cached input (float32): head
    inputs (``pooled``, ``spatial``) share one full pass; ``stageN`` is the output of the first N stages."""
    was_training = model.training
    model.eval()
    out: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    try:
        for array in _batches(paths, preprocess, batch_size, augment, view):
            images = torch.from_numpy(array).to(device)
            fmap = model.backbone.forward_features(images) if any(k in FEATURE_KINDS for k in kinds) else None
            for kind in kinds:
                feats = (head_inputs(fmap, kind, model.config.backbone) if kind in FEATURE_KINDS
                         else model.cache_inputs(images, kind))
                out[kind].append(feats.float().cpu().numpy())
            if progress:
                progress(array.shape[0])
    finally:
        model.train(was_training)
    return {k: np.concatenate(v) if v else np.zeros((0,), dtype=np.float32) for k, v in out.items()}


def compute_features(model: AnnotationModel, paths: Sequence[Path], preprocess: PreprocessConfig,
                     batch_size: int = 32, device: str = "cpu",
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Run the backbone over ``paths`` and return the head's input features as float32."""
    kind = model.feature_kind
    return compute_feature_kinds(model, paths, preprocess, (kind,), batch_size, device, progress)[kind]


def _store(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def cached_features(model: AnnotationModel, paths: Sequence[Path], preprocess: PreprocessConfig, weights_id: str,
                    cache_dir: Path, batch_size: int = 32, device: str = "cpu",
                    progress: Callable[[int], None] | None = None, augment: AugmentConfig | None = None,
                    view: int = 0, also: Sequence[str] = ()) -> tuple[np.ndarray, bool]:
    """The model's cached inputs (``model.cache_kind``) for ``paths``, computed and stored on a miss.
    Returns (features, hit).

    Augmented views (``view`` > 0) are stored as float16, halving the memory several views take.
    ``also`` names further feature kinds to store from the same backbone pass on a miss, so methods
    reading pooled and spatial features share one extraction."""
    kind = model.cache_kind
    cache_dir.mkdir(parents=True, exist_ok=True)

    def file_for(k: str) -> Path:
        return cache_dir / f"{cache_key(model.config.backbone, weights_id, preprocess, k, paths, augment, view)}.npy"

    path = file_for(kind)
    if path.is_file():
        try:
            return np.load(path, mmap_mode="r"), True
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    kinds = [kind] + [k for k in also if k != kind and not file_for(k).is_file()]
    computed = compute_feature_kinds(model, paths, preprocess, kinds, batch_size, device, progress, augment, view)
    for k, array in computed.items():
        _store(file_for(k), array.astype(np.float16) if view else array)
    return (computed[kind].astype(np.float16) if view else computed[kind]), False
