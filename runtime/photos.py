"""The one path from a photo (a file, or a file's name and its encoded bytes) to a model input or a
one-line reason; which files to annotate; and their decoding in background threads while the model runs."""
from __future__ import annotations

import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar, Union

import numpy as np

from .bundle.preprocess_config import PreprocessConfig

from .preprocessing import MAX_PIXELS, RAW_SUFFIXES, check_file, display_path, preprocess_bytes, preprocess_file
from .reasons import one_line

T = TypeVar("T")
R = TypeVar("R")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".avif",
                  ".heic", ".heif", *RAW_SUFFIXES}
SIDECAR_SUFFIXES = {".xmp", ".txt", ".json", ".jsonl", ".csv", ".lock"}
"""Files beside photos that are not photos (sidecars, captions, our own outputs): not counted as skipped."""
LIST_SUFFIXES = {".txt", ".lst", ".list"}


def collect_paths(inputs: Sequence[str | Path], skipped: Counter | None = None) -> list[Path]:
    """Files given directly, image files under folders (recursive, sorted, links to folders not
    followed so loops cannot recur), the paths listed one per line in ``.txt``/``.lst`` files, and
    the images of a Corel-layout split file (``DIR/test.json`` -> ``DIR/images/...``).  Files in
    folders with a suffix we do not read are counted by suffix in ``skipped`` (sidecars are not)."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = []
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs.sort()
                found.extend(Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES)
                if skipped is not None:
                    skipped.update(Path(f).suffix.lower() or "(none)" for f in files
                                   if Path(f).suffix.lower() not in IMAGE_SUFFIXES | SIDECAR_SUFFIXES
                                   and not f.startswith("."))
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


Photo = Union[Path, str, tuple[Union[Path, str], bytes]]
"""A photo file, or a file's name and its encoded bytes (read elsewhere: a URI, a request)."""

_UNNAMED = re.compile(r"cannot identify image file\)$")   # PIL names a file only when it opened it itself


def photo_tensor(photo: Photo, config: PreprocessConfig, max_pixels: int = MAX_PIXELS,
                 previews: bool = False) -> np.ndarray | str:
    """One photo's encoder input (``preprocessing.preprocess``), or the one-line reason the photo cannot be one (missing,
    not a regular file, corrupt, truncated, too many pixels).  Bytes are named as the file would be."""
    try:
        if isinstance(photo, tuple):
            name, data = photo
            return preprocess_bytes(data, display_path(name), config, max_pixels, previews)
        return preprocess_file(photo, config, max_pixels, previews)
    except (ValueError, OSError, MemoryError) as exc:
        reason = one_line(exc)
        if isinstance(photo, tuple):
            reason = _UNNAMED.sub(f"cannot identify image file {display_path(photo[0])!r})", reason)
        return reason


def read_photo(path: Path) -> bytes | str:
    """A photo file's encoded bytes (to send elsewhere), or the one-line reason they cannot be read."""
    try:
        check_file(path)
        return path.read_bytes()
    except ValueError as exc:
        return one_line(exc)
    except OSError as exc:
        return f"{display_path(path)}: cannot read file ({exc.strerror or exc})"


def load_batch(photos: Sequence[Photo], config: PreprocessConfig, max_pixels: int = MAX_PIXELS,
               pool: ThreadPoolExecutor | None = None, previews: bool = False) -> Batch:
    """:func:`photo_tensor` of each photo (in ``pool``'s threads when given), stacked; the photos that
    failed with their reasons."""
    tensor = lambda p: photo_tensor(p, config, max_pixels, previews)  # noqa: E731
    return batch_of(photos, list((pool.map if pool else map)(tensor, photos)))


def batch_of(photos: Sequence[Photo], results: Sequence[np.ndarray | str]) -> Batch:
    """The photos' :func:`photo_tensor` results as a :class:`Batch`: the tensors stacked, the reasons apart."""
    names = [Path(p[0] if isinstance(p, tuple) else p) for p in photos]
    ok = [(n, r) for n, r in zip(names, results) if not isinstance(r, str)]
    return Batch([n for n, _ in ok], np.stack([a for _, a in ok]) if ok else None,
                 [(n, r) for n, r in zip(names, results) if isinstance(r, str)])


def prefetch(chunks: Sequence[T], load: Callable[[T], R], workers: int = 2, ahead: int = 2) -> Iterator[R]:
    """``load(chunk)`` for each chunk, in order, while the next ``ahead`` chunks load in ``workers`` threads.
    One chunk loads in the calling thread: a pool would only add its start-up to a one-photo call."""
    if len(chunks) == 1:
        yield load(chunks[0])
        return
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = [pool.submit(load, c) for c in chunks[:ahead]]
        for i in range(len(chunks)):
            if i + ahead < len(chunks):
                pending.append(pool.submit(load, chunks[i + ahead]))
            yield pending.pop(0).result()


def decode_workers() -> int:
    """Photo-decoding threads for this machine: one per core, at most 8.  Measured on 2 cores with
    12-megapixel camera files of 3.3 MB (``corel-bench archive``, OpenVINO bf16): 1 thread 31 photos/s,
    2 threads 53 (97% of the core-time bound), 3 threads 53; decoding releases the GIL, so the threads
    overlap the engine's."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def prefetch_batches(paths: Sequence[Path], config: PreprocessConfig, batch_size: int,
                     workers: int | None = None, ahead: int | None = None,
                     max_pixels: int = MAX_PIXELS, previews: bool = False) -> Iterator[Batch]:
    """Yield batches in order while the next ``ahead`` batches decode in ``workers`` threads (default:
    :func:`decode_workers`, as many batches ahead), photo by photo."""
    workers = workers or decode_workers()
    ahead = ahead or workers
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    if len(paths) <= 1:    # one photo decodes in the calling thread: a pool would only add its start-up
        yield from (load_batch(c, config, max_pixels, previews=previews) for c in chunks)
        return
    # one task per photo, not per batch: every thread works on the batch the engine needs next (the
    # first batch is ready after 1/workers of its decode time), and a batch's slow photo holds no thread idle
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        submit = lambda chunk: [pool.submit(photo_tensor, p, config, max_pixels, previews) for p in chunk]  # noqa: E731
        pending = [submit(c) for c in chunks[:ahead]]
        for i, chunk in enumerate(chunks):
            if i + ahead < len(chunks):
                pending.append(submit(chunks[i + ahead]))
            yield batch_of(chunk, [f.result() for f in pending.pop(0)])
