"""PNG overlays of the attention weights behind each label an attention bundle emits."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..preprocessing import load_image


def _heat(weights: np.ndarray, size: tuple[int, int]) -> Image.Image:
    side = int(round(math.sqrt(weights.size)))
    grid = weights.reshape(side, side) if side * side == weights.size else weights.reshape(1, -1)
    grid = (grid - grid.min()) / (np.ptp(grid) or 1.0)
    small = Image.fromarray((grid * 255).astype(np.uint8), mode="L")
    return small.resize(size, Image.Resampling.BILINEAR)


def write_attention_maps(image_path: Path, labels: list[str], alphas: list[np.ndarray], out_dir: Path,
                         stem: str | None = None) -> list[Path]:
    """One PNG per emitted label: the photo with the step's attention as a red overlay and the label written on it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    photo = load_image(image_path)
    width = min(448, photo.width)
    photo = photo.resize((width, max(1, round(photo.height * width / photo.width))))
    safe_stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem or image_path.stem)
    written = []
    for k, (label, weights) in enumerate(zip(labels, alphas)):
        heat = _heat(np.asarray(weights, dtype=np.float32), photo.size)
        red = Image.new("RGB", photo.size, (255, 0, 0))
        overlay = Image.composite(red, photo, heat.point(lambda v: int(v * 0.6)))
        ImageDraw.Draw(overlay).text((6, 6), label, fill=(255, 255, 255))
        path = out_dir / f"{safe_stem}_{k}_{re.sub(r'[^A-Za-z0-9._-]+', '_', label)}.png"
        overlay.save(path)
        written.append(path)
    return written
