"""Training-time image augmentation: random resized crops and horizontal flips.

With a frozen backbone the augmented views are computed once and cached like the
plain features (``training/features.py``): view ``v`` of image ``i`` is drawn from a
generator seeded by ``(seed, v, i)``, so the same view is the same crop on every run
and the cache stays valid.  Each training epoch then picks one view per image.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig

from corel_annotate.runtime.preprocessing import INTERPOLATIONS, load_image


CROP_ASPECTS = ("square", "photo")


@dataclass(frozen=True)
class AugmentConfig:
    """How augmented views are drawn (torchvision's RandomResizedCrop rules plus a flip)."""

    views: int = 0
    min_scale: float = 0.35
    max_scale: float = 1.0
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip: bool = True
    seed: int = 0
    aspect: str = "square"
    """``square``: crop aspect ratios in ``ratio`` (torchvision's rule); ``photo``: ``ratio`` times the
    photo's own aspect, so a crop of a 3:2 landscape stays 3:2-ish and keeps its sky and water."""

    def __post_init__(self) -> None:
        if self.views < 0:
            raise ValueError("augmented views must be 0 (off) or more")
        if not 0.0 < self.min_scale <= self.max_scale <= 1.0:
            raise ValueError("crop scales need 0 < min_scale <= max_scale <= 1")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError("crop aspect ratios need 0 < low <= high")
        if self.aspect not in CROP_ASPECTS:
            raise ValueError(f"crop aspect {self.aspect!r}: choose {' or '.join(CROP_ASPECTS)}")

    def to_dict(self) -> dict:
        """The fields (``aspect`` only when not the original ``square``, so older feature caches stay valid)."""
        fields = asdict(self)
        if self.aspect == "square":
            del fields["aspect"]
        return fields


def crop_box(width: int, height: int, cfg: AugmentConfig, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random ``(left, top, right, bottom)`` covering ``min_scale..max_scale`` of the area.

    Ten tries at a random area and log-uniform aspect ratio (relative to the photo's with
    ``aspect="photo"``); if none fits, the whole image."""
    area = width * height
    base = width / height if cfg.aspect == "photo" else 1.0
    log_lo, log_hi = math.log(cfg.ratio[0] * base), math.log(cfg.ratio[1] * base)
    for _ in range(10):
        target = area * rng.uniform(cfg.min_scale, cfg.max_scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    return 0, 0, width, height


def augment_image(img: Image.Image, preprocess: PreprocessConfig, cfg: AugmentConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """One augmented view of an RGB image as a normalised ``[3, S, S]`` float32 array."""
    size = preprocess.image_size
    box = crop_box(img.width, img.height, cfg, rng)
    view = img.resize((size, size), INTERPOLATIONS[preprocess.interpolation], box=box)
    if cfg.flip and rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(view, dtype=np.float32) * np.float32(preprocess.scale)
    arr = (arr - np.asarray(preprocess.mean, dtype=np.float32)) / np.asarray(preprocess.std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def view_rng(cfg: AugmentConfig, view: int, index: int) -> np.random.Generator:
    """The generator behind view ``view`` of image ``index``: fixed, so cached views stay valid."""
    return np.random.default_rng([cfg.seed, view, index])


def augmented_views(paths: Sequence[Path], indices: Sequence[int], preprocess: PreprocessConfig,
                    cfg: AugmentConfig, view: int) -> np.ndarray:
    """View ``view`` of each listed image (``indices`` are the images' positions in the split)."""
    return np.stack([augment_image(load_image(p, min_size=preprocess.decode_size), preprocess, cfg, view_rng(cfg, view, i))
                     for p, i in zip(paths, indices)])
