"""Which files to annotate, and their decoding in background threads while the model runs."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from .bundle.preprocess_config import PreprocessConfig

from .preprocessing import MAX_PIXELS, preprocess_file

T = TypeVar("T")
R = TypeVar("R")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}


def collect_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given directly, image files under folders (recursive, sorted, links to folders not
    followed so loops cannot recur), the paths listed one per line in ``.txt``/``.lst`` files, and
    the images of a Corel-layout split file (``DIR/test.json`` -> ``DIR/images/...``)."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = []
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs.sort()
                found.extend(Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES)
            out.extend(sorted(found))
        elif path.suffix.lower() == ".json" and path.is_file():
            from .dataset import read_annotations

            out.extend(path.parent / "images" / item["image_name"] for item in read_annotations(path))
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            base = path.parent
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    listed = Path(line)
                    out.append(listed if listed.is_absolute() else base / listed)
        else:
            out.append(path)
    return out


@dataclass
class Batch:
    """Preprocessed images that loaded, and one-line reasons for those that did not."""

    paths: list[Path]
    array: np.ndarray | None
    failed: list[tuple[Path, str]]


def _load(paths: Sequence[Path], config: PreprocessConfig, max_pixels: int = MAX_PIXELS) -> Batch:
    ok, arrays, failed = [], [], []
    for p in paths:
        try:
            arrays.append(preprocess_file(p, config, max_pixels))
            ok.append(p)
        except (ValueError, OSError, MemoryError) as exc:
            failed.append((p, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    return Batch(ok, np.stack(arrays) if arrays else None, failed)


def prefetch(chunks: Sequence[T], load: Callable[[T], R], workers: int = 2, ahead: int = 2) -> Iterator[R]:
    """``load(chunk)`` for each chunk, in order, while the next ``ahead`` chunks load in ``workers`` threads."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = [pool.submit(load, c) for c in chunks[:ahead]]
        for i in range(len(chunks)):
            if i + ahead < len(chunks):
                pending.append(pool.submit(load, chunks[i + ahead]))
            yield pending.pop(0).result()


def decode_workers() -> int:
    """Photo-decoding threads for this machine: one per core, at most 8.  Measured on 2 cores with
    4032x3024 JPEGs (corel-infer's pipeline, OpenVINO bf16): 1 thread 82 images/s, 2 threads 108,
    3 or 4 threads no better; decoding releases the GIL, so the threads overlap the engine's."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def prefetch_batches(paths: Sequence[Path], config: PreprocessConfig, batch_size: int,
                     workers: int | None = None, ahead: int | None = None,
                     max_pixels: int = MAX_PIXELS) -> Iterator[Batch]:
    """Yield batches in order while the next ``ahead`` batches decode in ``workers`` threads (default:
    :func:`decode_workers`, as many batches ahead)."""
    workers = workers or decode_workers()
    ahead = ahead or workers
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    yield from prefetch(chunks, lambda c: _load(c, config, max_pixels), workers, ahead)
