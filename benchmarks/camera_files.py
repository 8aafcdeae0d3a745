"""Benchmark photos that look like a camera's files: a camera's pixel count *and* a camera's file size.

Upscaling a small photo and saving it gives a smooth file (0.7 MB for 12 megapixels at quality 92),
while phones and cameras write 2.5-5 MB, because sensor noise and texture do not compress, and JPEG
entropy decoding reads every byte even at 1/8 scale.  These files add sensor-like noise (per-pixel
luminance grain and coarser colour noise) at the strength that reaches a target size in MB, and come
in baseline and progressive encodings, every fourth one stored sideways with an EXIF orientation
(as a camera held upright writes it), so that decode times are those of real files.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

ENCODINGS = ("baseline", "progressive", "mixed")


@dataclass(frozen=True)
class CameraSpec:
    """What the files are: pixels, target MB per file (None: no noise, the smooth upscale), quality,
    encoding (``mixed``: baseline and progressive alternately) and every how many files one is stored
    sideways with EXIF orientation 6 (0: none)."""

    size: tuple[int, int] = (4032, 3024)
    jpeg_mb: float | None = 3.5
    quality: int = 92
    encoding: str = "baseline"
    orientation_every: int = 4
    preview: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding {self.encoding!r}: expected one of {', '.join(ENCODINGS)}")
        if self.jpeg_mb is not None and self.jpeg_mb <= 0:
            raise ValueError(f"jpeg_mb {self.jpeg_mb}: expected a size in MB above 0")
        if min(self.size) < 16:
            raise ValueError(f"size {self.size}: expected at least 16x16 pixels")

    @property
    def folder_name(self) -> str:
        w, h = self.size
        mb = "smooth" if self.jpeg_mb is None else f"{self.jpeg_mb:g}mb"
        preview = f"-preview{self.preview[0]}x{self.preview[1]}" if self.preview else ""
        return f"camera-{w}x{h}-{mb}-q{self.quality}-{self.encoding}-o{self.orientation_every}{preview}"

    def progressive(self, index: int) -> bool:
        return self.encoding == "progressive" or (self.encoding == "mixed" and index % 2 == 1)

    def sideways(self, index: int) -> bool:
        return bool(self.orientation_every) and index % self.orientation_every == self.orientation_every - 1


def sensor_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Unit-strength sensor-like noise, float32 HxWx3: per-pixel grain in luminance plus colour noise
    at half resolution (demosaicing smears a sensor's chroma noise over neighbouring pixels)."""
    h, w = shape
    luma = rng.standard_normal((h, w), dtype=np.float32)
    chroma = rng.standard_normal(((h + 1) // 2, (w + 1) // 2, 3), dtype=np.float32) * np.float32(0.5)
    chroma = np.repeat(np.repeat(chroma, 2, axis=0), 2, axis=1)[:h, :w]
    return luma[:, :, None] + chroma


def encode(pixels: np.ndarray, spec: CameraSpec, index: int) -> bytes:
    img = Image.fromarray(pixels)
    options: dict = {"quality": spec.quality}
    if spec.progressive(index):
        options["progressive"] = True
    if spec.sideways(index):
        # a camera held upright stores the sensor's landscape pixels and orientation 6 (turn 90° clockwise
        # to view): the stored pixels are the upright picture turned 90° anticlockwise
        img = img.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        options["exif"] = exif.tobytes()
    if spec.preview:
        turned = img.width < img.height
        return with_large_preview(img, spec.preview[::-1] if turned else spec.preview, **options)
    buf = io.BytesIO()
    img.save(buf, "JPEG", **options)
    return buf.getvalue()


LARGE_THUMBNAIL_FULL_HD = 0x010002
"""The MPF type a camera gives a Full-HD-class preview stored after the primary picture (CIPA DC-007)."""


def with_large_preview(img: Image.Image, size: tuple[int, int], preview_quality: int = 85, **options) -> bytes:
    """``img`` as a multi-picture JPEG (MPO) whose second picture is a ``size`` preview of it typed as a camera
    types its large preview (Pillow writes the type "undefined"; the entry is retyped in place)."""
    import struct

    buf = io.BytesIO()
    preview = img.resize(size, Image.Resampling.LANCZOS)
    preview.encoderinfo = {"quality": preview_quality}
    img.save(buf, "MPO", save_all=True, append_images=[preview], **options)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as mpo:
        entry = mpo.mpinfo[0xB002][1]
        old = struct.pack("<LLLHH", 0, entry["Size"], entry["DataOffset"], 0, 0)
    if data.count(old) != 1:
        raise ValueError("could not find the preview's MPF entry to retype")
    return data.replace(old, struct.pack("<LLLHH", LARGE_THUMBNAIL_FULL_HD, entry["Size"], entry["DataOffset"], 0, 0))


def with_noise(base: np.ndarray, noise: np.ndarray, strength: float) -> np.ndarray:
    return np.clip(base + noise * np.float32(strength), 0, 255).astype(np.uint8)


def noise_strength(base: np.ndarray, noise: np.ndarray, spec: CameraSpec, tolerance: float = 0.03) -> float:
    """The noise standard deviation (in 8-bit levels) at which ``base`` encodes to ``spec.jpeg_mb``
    (within ``tolerance``), by bisection over 0-64 levels; ValueError if even 64 levels fall short."""
    target = spec.jpeg_mb * 1e6
    size = lambda s: len(encode(with_noise(base, noise, s), spec, 0))
    low, high = 0.0, 64.0
    if size(high) < target:
        raise ValueError(f"--jpeg-mb {spec.jpeg_mb:g}: {spec.size[0]}x{spec.size[1]} at quality {spec.quality} "
                         f"reaches only {size(high) / 1e6:.2f} MB even with heavy noise")
    if size(low) >= target:
        return 0.0
    for _ in range(12):
        mid = (low + high) / 2
        got = size(mid)
        if abs(got - target) <= tolerance * target:
            return mid
        low, high = (mid, high) if got < target else (low, mid)
    return (low + high) / 2


def camera_files(sources: Sequence[Path], spec: CameraSpec, out_dir: Path, seed: int = 0) -> list[Path]:
    """``sources`` upscaled to ``spec.size`` (bicubic) with sensor-like noise, written under
    ``out_dir/spec.folder_name`` (kept and reused: a file that exists is not rewritten).  The noise
    strength is fitted once, on the first photo, and used for all, so file sizes vary as a camera's do."""
    folder = out_dir / spec.folder_name
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / f"{i:04d}_{p.stem}.jpg" for i, p in enumerate(sources)]
    if all(t.is_file() for t in targets):
        return targets
    rng = np.random.default_rng(seed)
    strength = None
    for i, (source, target) in enumerate(zip(sources, targets)):
        with Image.open(source) as img:
            base = np.asarray(img.convert("RGB").resize(spec.size, Image.Resampling.BICUBIC), dtype=np.float32)
        if spec.jpeg_mb is None:
            strength, noise = 0.0, np.zeros_like(base)
        else:
            noise = sensor_noise(base.shape[:2], rng)
            if strength is None:
                strength = noise_strength(base, noise, spec)
        if not target.is_file():
            tmp = target.with_suffix(".part")
            tmp.write_bytes(encode(with_noise(base, noise, strength), spec, i))
            tmp.replace(target)
    (folder / "spec.json").write_text(json.dumps({**asdict(spec), "noise_levels": strength}) + "\n")
    return targets


def describe(paths: Sequence[Path]) -> dict:
    """Mean file size and the mix of encodings and orientations, for a benchmark row."""
    sizes, progressive, oriented = [], 0, 0
    for p in paths:
        sizes.append(p.stat().st_size)
        with Image.open(p) as img:
            progressive += bool(img.info.get("progressive") or img.info.get("progression"))
            oriented += img.getexif().get(0x0112, 1) != 1
    return {"files": len(paths), "mean_mb": round(float(np.mean(sizes)) / 1e6, 3),
            "min_mb": round(min(sizes) / 1e6, 3), "max_mb": round(max(sizes) / 1e6, 3),
            "progressive": progressive, "exif_oriented": oriented}
