"""Synthetic Corel-like dataset generator.

Writes the Corel-5k layout (``images/*.jpeg``, ``train.json``, ``test.json``,
``vocabulary.txt``) with images a frozen ImageNet CNN can learn from: every label
has its own visual signature (colour, shape, texture) drawn 1-3 times on a
scene-dependent background, and labels co-occur through latent scenes so that
sequence and co-occurrence models have structure to find.  numpy and PIL only.
"""
from __future__ import annotations

import colorsys
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MAX_VOCABULARY = 300
MAX_LABELS_PER_IMAGE = 5
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024
COVERAGE = 3
MIN_OBJECT = 12
JPEG_QUALITY = 90

NATURE_WORDS: tuple[str, ...] = (
    "sky", "water", "tree", "grass", "people", "buildings", "mountain", "snow",
    "clouds", "flowers", "rocks", "sand", "sun", "sea", "boats", "birds",
    "street", "field", "bear", "plane", "cars", "beach", "hills", "leaf",
    "stone", "house", "bridge", "garden", "ice", "forest", "horses", "cat",
    "tiger", "fish", "coral", "ruins", "statue", "valley", "desert", "wall",
)

COLORS: tuple[tuple[int, int, int], ...] = (
    (220, 30, 30), (245, 140, 20), (240, 225, 30), (120, 215, 40), (20, 130, 50),
    (30, 205, 215), (30, 70, 225), (135, 45, 205), (235, 60, 200), (125, 70, 25),
    (250, 250, 250), (15, 15, 15), (128, 128, 128),
)
SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "ring", "cross",
    "hstripes", "dstripes", "dotgrid", "star", "diamond",
)
TEXTURES: tuple[str, ...] = ("solid", "hatched", "speckled")


@dataclass
class SynthConfig:
    """Everything that determines a synthetic dataset, byte for byte."""

    images: int = 600
    labels: int = 12
    scenes: int = 4
    image_size: int = 128
    min_labels: int = 1
    max_labels: int = 4
    test_fraction: float = 0.2
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SynthConfig":
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def labels_per_image_max(self) -> int:
        """``max_labels`` capped at 5 and at the vocabulary size."""
        return min(self.max_labels, MAX_LABELS_PER_IMAGE, self.labels)

    @property
    def test_images(self) -> int:
        return int(round(self.images * self.test_fraction))

    @property
    def train_images(self) -> int:
        return self.images - self.test_images

    def validate(self) -> None:
        """Raise ValueError with a one-line message for a config that cannot be generated."""
        if not 2 <= self.labels <= MAX_VOCABULARY:
            raise ValueError(f"labels must be between 2 and {MAX_VOCABULARY}, got {self.labels}")
        if self.scenes < 1:
            raise ValueError(f"scenes must be at least 1, got {self.scenes}")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}, "
                             f"got {self.image_size}")
        if self.min_labels < 1 or self.max_labels < self.min_labels:
            raise ValueError(f"need 1 <= min_labels <= max_labels, got {self.min_labels} and "
                             f"{self.max_labels}")
        if self.min_labels > self.labels_per_image_max:
            raise ValueError(f"min_labels {self.min_labels} exceeds the per-image cap "
                             f"{self.labels_per_image_max} (at most {MAX_LABELS_PER_IMAGE} and at most labels)")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be strictly between 0 and 1, got {self.test_fraction}")
        if self.train_images < 1 or self.test_images < 1:
            raise ValueError(f"{self.images} images with test_fraction {self.test_fraction} leave an "
                             f"empty split ({self.train_images} train, {self.test_images} test)")


@dataclass(frozen=True)
class Signature:
    """How one label looks: a colour, a shape and a texture."""

    color: tuple[int, int, int]
    shape: str
    texture: str


def label_names(k: int) -> list[str]:
    """Corel-like nature words for the first labels, then ``label-041`` style names."""
    if k < 0:
        raise ValueError(f"vocabulary size must be non-negative, got {k}")
    return [NATURE_WORDS[i] if i < len(NATURE_WORDS) else f"label-{i + 1:03d}" for i in range(k)]


def signatures(k: int) -> list[Signature]:
    """Label ``i`` gets colour ``i % 13``, shape ``i % 10`` and texture ``i % 3``.

    The three counts are pairwise co-prime, so by the Chinese remainder theorem
    the first 390 signatures are all distinct, and neighbouring labels differ in
    colour, shape and texture at once.
    """
    capacity = len(COLORS) * len(SHAPES) * len(TEXTURES)
    if not 0 <= k <= capacity:
        raise ValueError(f"at most {capacity} distinct signatures, asked for {k}")
    return [Signature(COLORS[i % len(COLORS)], SHAPES[i % len(SHAPES)], TEXTURES[i % len(TEXTURES)])
            for i in range(k)]


def home_scenes(k: int, scenes: int) -> list[int]:
    """The scene each label belongs to: labels are dealt round-robin over scenes."""
    return [i % scenes for i in range(k)]


def scene_weights(config: SynthConfig) -> np.ndarray:
    """A ``(scenes, labels)`` matrix of sampling weights: a scene strongly prefers its own labels."""
    home = np.asarray(home_scenes(config.labels, config.scenes))
    weights = np.full((config.scenes, config.labels), 0.02)
    weights[home, np.arange(config.labels)] = 1.0
    return weights / weights.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Record:
    """One planned image: its scene and its label ids (in vocabulary order)."""

    scene: int
    labels: tuple[int, ...]


def _sample_record(rng: np.random.Generator, config: SynthConfig, weights: np.ndarray,
                   forced: int | None = None) -> Record:
    """Pick a scene (the forced label's home scene when given), a count, then distinct labels."""
    scene = int(rng.integers(config.scenes)) if forced is None else int(np.argmax(weights[:, forced]))
    count = int(rng.integers(config.min_labels, config.labels_per_image_max + 1))
    p = weights[scene].copy()
    chosen: list[int] = []
    if forced is not None:
        chosen.append(forced)
        p[forced] = 0.0
        count -= 1
    if count > 0:
        p /= p.sum()
        chosen.extend(int(x) for x in rng.choice(config.labels, size=count, replace=False, p=p))
    return Record(scene, tuple(sorted(chosen)))


def plan(config: SynthConfig) -> tuple[list[tuple[int, Record]], list[tuple[int, Record]]]:
    """Decide every image's number, scene and labels, without drawing anything.

    Each label is forced into ``COVERAGE`` training images (fewer when the
    training split is too small), so every label can be learnt.  Returns the
    train and test lists of ``(image_number, record)``, sorted by number.
    """
    config.validate()
    rng = np.random.default_rng(config.seed)
    weights = scene_weights(config)
    repeats = min(COVERAGE, config.train_images // config.labels)
    forced = [i % config.labels for i in range(repeats * config.labels)]
    train = [_sample_record(rng, config, weights, f) for f in forced]
    train += [_sample_record(rng, config, weights) for _ in range(config.train_images - len(train))]
    test = [_sample_record(rng, config, weights) for _ in range(config.test_images)]
    numbers = [int(n) + 1 for n in rng.permutation(config.images)]
    train_numbered = sorted(zip(numbers[:len(train)], train), key=lambda x: x[0])
    test_numbered = sorted(zip(numbers[len(train):], test), key=lambda x: x[0])
    return train_numbered, test_numbered


def _background(rng: np.random.Generator, scene: int, size: int) -> np.ndarray:
    """A soft vertical gradient in the scene's muted colours, plus mild noise."""
    hue = (scene * 0.618034) % 1.0
    top = np.array(colorsys.hsv_to_rgb(hue, 0.30, 0.80)) * 255
    bottom = np.array(colorsys.hsv_to_rgb((hue + 0.08) % 1.0, 0.40, 0.50)) * 255
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    image = np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()
    image += rng.normal(0.0, 6.0, image.shape)
    return image


def _shape_mask(shape: str, s: int) -> Image.Image:
    """An ``s x s`` grayscale mask of one shape (255 inside)."""
    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)
    m = max(1, s // 16)
    lo, hi, c = m, s - 1 - m, (s - 1) / 2
    if shape == "circle":
        draw.ellipse((lo, lo, hi, hi), fill=255)
    elif shape == "square":
        draw.rectangle((lo + s // 10, lo + s // 10, hi - s // 10, hi - s // 10), fill=255)
    elif shape == "triangle":
        draw.polygon([(c, lo), (hi, hi), (lo, hi)], fill=255)
    elif shape == "ring":
        draw.ellipse((lo, lo, hi, hi), outline=255, width=max(2, s // 5))
    elif shape == "cross":
        w = max(2, s // 6)
        draw.rectangle((lo, c - w, hi, c + w), fill=255)
        draw.rectangle((c - w, lo, c + w, hi), fill=255)
    elif shape == "hstripes":
        h = max(2, s // 8)
        for y in (s // 8, s // 2 - h // 2, s - s // 8 - h):
            draw.rectangle((lo, y, hi, y + h), fill=255)
    elif shape == "dstripes":
        yy, xx = np.mgrid[0:s, 0:s]
        period = max(6, s // 4)
        stripes = ((xx + yy) % period) < period // 2
        mask = Image.fromarray((stripes * 255).astype(np.uint8), "L")
    elif shape == "dotgrid":
        r = max(2, s // 8)
        for gy in (s / 6, s / 2, 5 * s / 6):
            for gx in (s / 6, s / 2, 5 * s / 6):
                draw.ellipse((gx - r, gy - r, gx + r, gy + r), fill=255)
    elif shape == "star":
        angles = np.arange(10) * np.pi / 5 - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, c - m, (c - m) * 0.42)
        draw.polygon([(c + r * np.cos(a), c + r * np.sin(a)) for r, a in zip(radii, angles)], fill=255)
    elif shape == "diamond":
        draw.polygon([(c, lo), (hi, c), (c, hi), (lo, c)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def _fill(signature: Signature, s: int, rng: np.random.Generator) -> Image.Image:
    """An ``s x s`` patch of the label's colour with its texture applied."""
    color = np.array(signature.color, dtype=np.float64)
    patch = np.broadcast_to(color, (s, s, 3)).copy()
    contrast = color * 0.45 if color.mean() > 60 else np.full(3, 170.0)
    if signature.texture == "hatched":
        yy, xx = np.mgrid[0:s, 0:s]
        period = max(4, s // 6)
        lines = (xx % period < max(1, period // 3)) | (yy % period < max(1, period // 3))
        patch[lines] = contrast
    elif signature.texture == "speckled":
        dots = rng.random((s, s)) < 0.3
        patch[dots] = contrast
    return Image.fromarray(patch.astype(np.uint8), "RGB")


def _draw(canvas: Image.Image, signature: Signature, s: int, x: int, y: int,
          rng: np.random.Generator) -> None:
    """Paste one instance of a signature, with a thin outline so it stands out from the background."""
    mask = _shape_mask(signature.shape, s)
    outline = (230, 230, 230) if sum(signature.color) < 120 else (30, 30, 30)
    canvas.paste(Image.new("RGB", (s, s), outline), (x, y), mask.filter(ImageFilter.MaxFilter(3)))
    canvas.paste(_fill(signature, s, rng), (x, y), mask)


def render(record: Record, config: SynthConfig, number: int, table: list[Signature]) -> Image.Image:
    """Draw one image; its own RNG stream (seed, number) makes it independent of the others."""
    rng = np.random.default_rng([config.seed, number])
    size = config.image_size
    canvas = Image.fromarray(np.clip(_background(rng, record.scene, size), 0, 255).astype(np.uint8), "RGB")
    smallest = max(MIN_OBJECT, int(0.15 * size))
    largest = max(smallest, int(0.40 * size))
    most = 3 if len(record.labels) <= 2 else 2
    objects = [label for label in record.labels for _ in range(int(rng.integers(1, most + 1)))]
    for index in rng.permutation(len(objects)):
        s = int(rng.integers(smallest, largest + 1))
        x, y = (int(v) for v in rng.integers(0, size - s + 1, size=2))
        _draw(canvas, table[objects[index]], s, x, y, rng)
    return canvas


def _write_text(path: Path, text: str) -> None:
    """Write atomically, so an interrupted run never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _annotations(items: Iterable[tuple[int, Record]], names: list[str]) -> str:
    samples = [{"image_name": f"{n}.jpeg", "image_labels": [names[i] for i in r.labels]} for n, r in items]
    return json.dumps({"samples": samples}, indent=1) + "\n"


def _summary(out: Path) -> dict:
    """Counts read back from a written dataset."""
    train = json.loads((out / "train.json").read_text(encoding="utf-8"))["samples"]
    test = json.loads((out / "test.json").read_text(encoding="utf-8"))["samples"]
    vocabulary = [line for line in (out / "vocabulary.txt").read_text(encoding="utf-8").splitlines() if line]
    counts = [len(s["image_labels"]) for s in train + test]
    seen = {label for s in train for label in s["image_labels"]}
    return {
        "out_dir": str(out),
        "train_images": len(train),
        "test_images": len(test),
        "vocabulary_size": len(vocabulary),
        "mean_labels_per_image": round(float(np.mean(counts)), 4),
        "labels_missing_from_train": len(set(vocabulary) - seen),
    }


def _progress(items: list, enabled: bool) -> Iterator:
    if not enabled:
        return iter(items)
    from rich.progress import track
    return iter(track(items, description="rendering images"))


def generate(out_dir: str | Path, config: SynthConfig, progress: bool = False) -> dict:
    """Write a synthetic dataset to ``out_dir`` and return a summary of it.

    Idempotent: a directory already holding a dataset made from the same config
    is left untouched; one made otherwise is refused.  ``train.json`` is written
    last, so its presence means the dataset is complete.
    """
    config.validate()
    out = Path(out_dir)
    if (out / "train.json").exists():
        stored = out / "synth_config.json"
        if stored.exists() and stored.read_text(encoding="utf-8").strip() == config.to_json():
            return _summary(out)
        raise ValueError(f"{out} already holds a dataset (train.json) not generated with this config; "
                         "choose an empty directory")
    train, test = plan(config)
    names = label_names(config.labels)
    table = signatures(config.labels)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for number, record in _progress(train + test, progress):
        render(record, config, number, table).save(out / "images" / f"{number}.jpeg", "JPEG",
                                                   quality=JPEG_QUALITY)
    _write_text(out / "vocabulary.txt", "".join(name + "\n" for name in names))
    _write_text(out / "synth_config.json", config.to_json() + "\n")
    _write_text(out / "test.json", _annotations(test, names))
    _write_text(out / "train.json", _annotations(train, names))
    return _summary(out)
