"""Image preprocessing shared by training and the runtime, in PIL and numpy.

Training calls these same functions, so the tensors a model was trained on and
the tensors the exported runtime feeds it are identical by construction.
"""
from __future__ import annotations

import functools
import io
import os
import re
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from .bundle.preprocess_config import PreprocessConfig
from .reasons import one_line

INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
"""The PIL filter of each interpolation name a :class:`PreprocessConfig` may hold."""



MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
"""Images with more pixels than this are refused before decoding (decompression-bomb guard)."""


_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-f]+>")


def display_path(path: str | Path) -> str:
    """A path as printable text, with undecodable bytes of non-UTF-8 names shown as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS, min_size: int | None = None) -> Image.Image:
    """Open a photo as 8-bit RGB with its EXIF orientation applied.

    Training and the runtime both read photos through this function, so orientation and colour
    modes are handled alike.  With ``min_size`` (``PreprocessConfig.decode_size``) only the pixels
    a ``min_size`` square resize needs are decoded (JPEG draft mode, else ``Image.reduce``).
    Anything that is not a decodable image of at most ``max_pixels`` pixels (a missing or special
    file, a truncated or corrupt one, a decompression bomb) raises ValueError with a one-line
    reason naming the file.
    """
    return read_image(path, check_file(path), max_pixels, min_size)


def check_file(path: str | Path) -> str:
    """The printable name of a regular file that exists; ValueError with a one-line reason otherwise
    (missing, a broken link, unreadable, a folder or special file)."""
    name = display_path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{name}: file does not exist (or is a broken link)") from None
    except OSError as exc:
        raise ValueError(f"{name}: cannot access file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{name}: not a regular file")
    return name


HEIF_SUFFIXES = (".heic", ".heif")
"""iPhone photos: read through pillow-heif where it is installed (``pip install 'corel-annotate[heif]'``).
AVIF is Pillow's own."""


@functools.cache
def heif_available() -> bool:
    """Whether pillow-heif is installed; its opener is registered with PIL the first time this is asked."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


RAW_SUFFIXES = (".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf",
                ".pef", ".srw", ".3fr", ".iiq", ".erf", ".kdc", ".mos", ".mrw", ".x3f", ".rwl")
"""Camera RAW files: read through rawpy (LibRaw) where it is installed (``pip install 'corel-annotate[raw]'``),
by their embedded preview (what the camera rendered), else by LibRaw's own development."""

_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
"""LibRaw's ``sizes.flip`` (the camera's orientation) as the turn that puts the preview upright."""


@functools.cache
def raw_available() -> bool:
    """Whether rawpy (LibRaw) is installed."""
    try:
        import rawpy  # noqa: F401
    except ImportError:
        return False
    return True


def _raw_image(source: str | Path | BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """A RAW file's embedded preview (JPEG or bitmap), upright; without one, LibRaw's half-size development."""
    import rawpy

    try:
        with rawpy.imread(str(source) if isinstance(source, Path) else source) as raw:
            if raw.sizes.raw_width * raw.sizes.raw_height > max_pixels:
                raise ValueError(f"{raw.sizes.raw_width}x{raw.sizes.raw_height} is more than {max_pixels:,} pixels "
                                 "(decompression-bomb guard)")
            try:
                thumb = raw.extract_thumb()
            except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                thumb = None
            if thumb is None:
                return Image.fromarray(raw.postprocess(use_camera_wb=True, half_size=True, output_bps=8))
            if thumb.format == rawpy.ThumbFormat.JPEG:
                with Image.open(io.BytesIO(thumb.data)) as preview:
                    # LibRaw's flip says how the camera was held; a preview's own EXIF orientation is not used twice
                    img = Image.fromarray(np.asarray(to_rgb(preview)))
            else:
                img = Image.fromarray(np.asarray(thumb.data, dtype=np.uint8)).convert("RGB")
            flip = _FLIP.get(raw.sizes.flip)
            return img.transpose(flip) if flip is not None else img
    except rawpy.LibRawError as exc:
        raise ValueError(f"cannot read RAW ({type(exc).__name__}: {exc})") from None


def read_image(source: str | Path | BinaryIO, name: str, max_pixels: int = MAX_PIXELS,
               min_size: int | None = None) -> Image.Image:
    """:func:`load_image` on a path or an open binary file (``name`` goes into error messages)."""
    if not heif_available() and name.lower().endswith(HEIF_SUFFIXES):
        raise ValueError(f"{name}: HEIC/HEIF photos need pillow-heif (pip install 'corel-annotate[heif]')")
    raw = name.lower().endswith(RAW_SUFFIXES)
    if raw and not raw_available():
        raise ValueError(f"{name}: camera RAW photos need rawpy (pip install 'corel-annotate[raw]')")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with (_raw_image(source, name, max_pixels) if raw else Image.open(source)) as img:
                if img.width * img.height > max_pixels:
                    raise ValueError(f"{img.width}x{img.height} is more than {max_pixels:,} pixels "
                                     "(decompression-bomb guard)")
                if min_size and img.format in ("JPEG", "MPO"):   # a multi-picture JPEG's first picture is a JPEG
                    img.draft(None, (min_size, min_size))   # a square target: orientation does not matter
                img = ImageOps.exif_transpose(img)
                rgb = to_rgb(img)
                if min_size:
                    factor = min(rgb.width // min_size, rgb.height // min_size)
                    if factor >= 2:
                        rgb = rgb.reduce(factor)
                return rgb
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ValueError(f"{name}: refused, {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{name}: cannot read image ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - PIL's decoders raise many types on corrupt files
        detail = one_line(exc)
        detail = _OBJECT_REPR.sub("", detail)   # PIL names an in-memory file by its repr
        raise ValueError(f"{name}: cannot read image ({detail})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB by the bundle format's pixel rules (docs/bundle-format.md): transparent
    pixels composited on white, grey copied to R, G and B, a palette looked up, CMYK as
    ``(255 - C)(255 - K) / 255`` rounded, and a 16-bit sample ``s`` as ``s >> 8``."""
    if img.mode == "RGB":
        img.load()
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I"):
        # 16-bit samples keep their high byte (docs/bundle-format.md; the rule libpng and Pillow apply to 16-bit RGB),
        # whatever the image's own range: a dark 16-bit photo stays dark; 32-bit integers are clipped to 16 bits
        arr = np.clip(np.asarray(img).astype(np.int64), 0, 65535) >> 8
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        raise ValueError("32-bit floating-point samples are not a photo (docs/bundle-format.md reads 8- and 16-bit "
                         "images); convert it to 8 or 16 bits")
    return img.convert("RGB")


def preprocess(img: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """One RGB PIL image to the encoder's input for one photo, as ``config`` declares it: the resized
    photo's 8-bit values (``input_dtype`` uint8: the graph normalises) or normalised float32, in the
    config's ``layout`` (``config.input_shape``)."""
    size = config.image_size
    resized = img.resize((size, size), INTERPOLATIONS[config.interpolation])
    if config.input_dtype == "uint8":
        arr = np.asarray(resized)
    else:
        arr = np.asarray(resized, dtype=np.float32) * np.float32(config.scale)
        arr = (arr - np.asarray(config.mean, dtype=np.float32)) / np.asarray(config.std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1) if config.layout == "NCHW" else arr)


def preprocess_bytes(data: bytes, name: str, config: PreprocessConfig, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`preprocess_file` for an encoded photo in memory (``name`` goes into error messages)."""
    return preprocess(read_image(io.BytesIO(data), name, max_pixels, config.decode_size), config)


def preprocess_file(path: str | Path, config: PreprocessConfig, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Load (by the config's decode rule) and preprocess one image file."""
    return preprocess(load_image(path, max_pixels, config.decode_size), config)
