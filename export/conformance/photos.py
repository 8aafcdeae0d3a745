"""The kit's photos, each written with the 8-bit RGB picture a conforming runtime must see in it
(``docs/bundle-format.md``, "Pixels"), computed here from the pixels we wrote by the spec's
formulas, not by reading the file back through the runtime."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageOps

EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PixelPhoto:
    """A photo file and the upright RGB picture (``None``: the runtime must refuse it) at the probe's
    size, with what it exercises and how far (in 8-bit levels) a runtime may stray."""

    name: str
    rule: str
    levels: float
    expected: Optional[np.ndarray]
    may_refuse: bool = False
    """A format a runtime need not read (TIFF): refusing it passes, a wrong picture does not."""


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Transparency composited on white: ``(c a + 255 (255 - a)) / 255``, rounded."""
    a = alpha.astype(np.float64)[..., None]
    return np.floor((rgb.astype(np.float64) * a + 255.0 * (255.0 - a)) / 255.0 + 0.5).astype(np.uint8)


def grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


def quadrants(size: int, colours: np.ndarray) -> np.ndarray:
    """A size x size picture of four flat quadrants (top left, top right, bottom left, bottom right)."""
    h = size // 2
    out = np.zeros((size, size, 3), np.uint8)
    out[:h, :h], out[:h, h:], out[h:, :h], out[h:, h:] = colours
    return out


# what the display does for each EXIF orientation, and its inverse (how a camera stores an upright scene)
_SHOW = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1, :],
         5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
         8: lambda a: np.rot90(a, 1)}
_STORE = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1, :],
          5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, 1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
          8: lambda a: np.rot90(a, -1)}


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return exif


def write_pixel_photos(folder: Path, size: int, seed: int = 0) -> list[PixelPhoto]:
    """Every pixel case of the spec as a photo in ``folder``, at the probe's ``size`` where the case
    needs no resize (so the expectation is exact), larger where resizing is the case."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    photos: list[PixelPhoto] = []

    def add(name: str, rule: str, levels: float, expected: Optional[np.ndarray], save: Callable[[Path], None]) -> None:
        save(folder / name)
        photos.append(PixelPhoto(name, rule, levels, expected, name.endswith(".tif") and expected is not None))

    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    add("rgb.png", "pixels-rgb", 0.5, rgb, Image.fromarray(rgb).save)

    alpha = rng.integers(0, 256, (size, size), dtype=np.uint8)
    alpha[0, :3] = (0, 255, 128)
    add("alpha.png", "pixels-alpha", 1, on_white(rgb, alpha), Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save)
    values = rng.integers(0, 256, (size, size), dtype=np.uint8)
    add("grey-alpha.png", "pixels-alpha", 1, grey(on_white(values[..., None], alpha)[..., 0]),
        Image.fromarray(np.dstack([values, alpha]), "LA").save)

    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    index = rng.integers(0, 16, (size, size), dtype=np.uint8)

    def paletted(path: Path, transparency: Optional[bytes] = None) -> None:
        img = Image.fromarray(index, "P")
        img.putpalette(palette.tobytes())
        img.save(path, **({"transparency": transparency} if transparency is not None else {}))

    add("palette.png", "pixels-palette", 0.5, palette[index], paletted)
    trns = np.full(16, 255, np.uint8)
    trns[:4] = (0, 64, 128, 200)
    add("palette-transparent.png", "pixels-palette", 1, on_white(palette[index], trns[index]),
        lambda p: paletted(p, trns.tobytes()))

    add("grey.png", "pixels-grey", 0.5, grey(values), Image.fromarray(values, "L").save)
    bits = rng.integers(0, 2, (size, size)).astype(bool)
    add("bilevel.png", "pixels-grey", 0.5, grey(np.where(bits, 255, 0).astype(np.uint8)),
        Image.fromarray(bits).save)

    wide = rng.integers(0, 65536, (size, size)).astype(np.uint16)
    wide[0, :4] = (0, 255, 32768, 65535)
    add("grey16.png", "pixels-16-bit", 0.5, grey((wide >> 8).astype(np.uint8)),
        lambda p: Image.frombytes("I;16", (size, size), wide.astype("<u2").tobytes()).save(p))
    dark = rng.integers(0, 256, (size, size)).astype(np.uint16)
    add("grey16-dark.png", "pixels-16-bit", 0.5, grey((dark >> 8).astype(np.uint8)),
        lambda p: Image.frombytes("I;16", (size, size), dark.astype("<u2").tobytes()).save(p))
    add("float.tif", "pixels-float-refused", 0, None,
        lambda p: Image.fromarray(rng.random((size, size)).astype(np.float32), "F").save(p))

    cmyk = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    ink = np.floor((255.0 - cmyk[..., :3]) * (255.0 - cmyk[..., 3:]) / 255.0 + 0.5).astype(np.uint8)
    add("cmyk.tif", "pixels-cmyk", 1, ink, lambda p: Image.fromarray(cmyk, "CMYK").save(p))
    # the same inks in a JPEG (Adobe-inverted, as cameras and Photoshop write them): within 1 level per ink
    add("cmyk.jpg", "pixels-cmyk", 3, ink, lambda p: Image.fromarray(cmyk, "CMYK").save(p, quality=100, subsampling=0))

    upright = quadrants(size, np.array([[230, 30, 30], [30, 200, 40], [40, 60, 220], [240, 230, 40]], np.uint8))
    for o in range(1, 9):
        stored = np.ascontiguousarray(_STORE[o](upright))
        assert np.array_equal(_SHOW[o](stored), upright)
        add(f"orientation-{o}.jpg", "pixels-exif-orientation", 4, upright,
            lambda p, s=stored, o=o: Image.fromarray(s).save(p, quality=100, subsampling=0, exif=_exif(o)))
    add("progressive.jpg", "pixels-progressive-jpeg", 4, upright,
        lambda p: Image.fromarray(upright).save(p, quality=100, subsampling=0, progressive=True))

    # stretched and downscaled 6x by 4x: an antialiased bilinear, in 8 bits (Pillow's), not point sampling
    stripes = np.zeros((4 * size, 6 * size, 3), np.uint8)
    stripes[:, ::2] = (255, 255, 255)
    stripes[::3, :, 0] = 0
    shrunk = np.asarray(Image.fromarray(stripes).resize((size, size), Image.Resampling.BILINEAR))
    add("resize.png", "pixels-antialiased-bilinear", 1, shrunk, Image.fromarray(stripes).save)
    return photos


def camera_photo(folder: Path, size: int, seed: int = 1, width: int = 4032, height: int = 3024) -> PixelPhoto:
    """A camera-size JPEG (textured, held upright by EXIF orientation 6) and the picture the draft rule
    gives: DCT scale 1/s (the largest of 8, 4, 2, 1 with s <= min(W // size, H // size)), the EXIF
    turn, a box reduction by min(w // size, h // size) when that is 2 or more, then the bilinear resize."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    small = rng.integers(0, 256, (height // 96, width // 96, 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    noisy = np.clip(np.asarray(picture, np.int16) + rng.integers(-12, 13, (height, width, 3)), 0, 255).astype(np.uint8)
    path = folder / "camera.jpg"
    Image.fromarray(noisy).save(path, quality=92, exif=_exif(6))
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        scale = next(s for s in (8, 4, 2, 1) if s <= min(img.width // size, img.height // size))
        img.draft("RGB", (size, size))
        assert img.size == (-(-width // scale), -(-height // scale)), img.size
        upright = ImageOps.exif_transpose(img).convert("RGB")
    factor = min(upright.width // size, upright.height // size)
    if factor >= 2:
        upright = upright.reduce(factor)
    expected = np.asarray(upright.resize((size, size), Image.Resampling.BILINEAR))
    return PixelPhoto("camera.jpg", "pixels-draft-decode", 4, expected)


def write_flat_photos(folder: Path, size: int, count: int, seed: int = 2) -> list[tuple[str, np.ndarray]]:
    """Flat-colour PNGs: the sequence and score bundles read each photo's channel means, exactly."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        colour = rng.integers(0, 256, 3, dtype=np.uint8)
        name = f"flat-{i}.png"
        Image.new("RGB", (size, size), tuple(int(c) for c in colour)).save(folder / name)
        out.append((name, colour))
    return out
