"""Image preprocessing shared by training and the runtime, in PIL and numpy.

Training calls these same functions, so the tensors a model was trained on and
the tensors the exported runtime feeds it are identical by construction.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

RESIZE_RULES = ("stretch",)
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class PreprocessConfig:
    """How a photo becomes a model input: ``[3, size, size]`` float32, RGB, normalised.

    ``resize = "stretch"`` resizes the whole photo to ``size x size`` without
    cropping, as the reference implementation does.
    """

    image_size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "stretch"
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    layout: str = "NCHW"
    scale: float = field(default=1.0 / 255.0)

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image size {self.image_size} is too small (at least 8)")
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"unknown resize rule {self.resize!r}; known: {', '.join(RESIZE_RULES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values each, std positive")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in known.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def load_image(path: str | Path) -> Image.Image:
    """Open a photo as 8-bit RGB with its EXIF orientation applied.

    Raises ValueError naming the file when it cannot be decoded.
    """
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparent pixels are composited on white."""
    if img.mode == "RGB":
        img.load()
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def preprocess(img: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """One RGB PIL image to a normalised ``[3, S, S]`` float32 array."""
    size = config.image_size
    resized = img.resize((size, size), INTERPOLATIONS[config.interpolation])
    arr = np.asarray(resized, dtype=np.float32) * np.float32(config.scale)
    arr = (arr - np.asarray(config.mean, dtype=np.float32)) / np.asarray(config.std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess_file(path: str | Path, config: PreprocessConfig) -> np.ndarray:
    """Load and preprocess one image file."""
    return preprocess(load_image(path), config)
