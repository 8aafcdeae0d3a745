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


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS, min_size: int | None = None,
               preview_size: int | None = None) -> Image.Image:
    """Open a photo as 8-bit RGB with its EXIF orientation applied.

    Training and the runtime both read photos through this function, so orientation and colour
    modes are handled alike.  With ``min_size`` (``PreprocessConfig.decode_size``) only the pixels
    a ``min_size`` square resize needs are decoded (JPEG draft mode, else ``Image.reduce``).
    Anything that is not a decodable image of at most ``max_pixels`` pixels (a missing or special
    file, a truncated or corrupt one, a decompression bomb) raises ValueError with a one-line
    reason naming the file.  With ``preview_size`` (opt-in, ``corel-infer --previews``) a multi-picture
    JPEG is read by its camera-made large preview when one has both sides of at least that many pixels.
    """
    return read_image(path, check_file(path), max_pixels, min_size, preview_size)


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
               min_size: int | None = None, preview_size: int | None = None) -> Image.Image:
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
                if preview_size and img.format == "MPO":
                    preview = mpf_preview(img, _bytes_of(source), preview_size)
                    if preview is not None:
                        return _upright_preview(read_image(io.BytesIO(preview), name, max_pixels, min_size), img,
                                                preview)
                scaled = None if raw else _turbo_decode(img, source, min_size)
                if scaled is not None:
                    rgb = to_rgb(_upright(scaled, img))
                else:
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


@functools.cache
def turbo_available() -> bool:
    """Whether simplejpeg (libjpeg-turbo in one call, without the interpreter's lock) is installed."""
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        return False
    return True


def draft_scale(size: tuple[int, int], min_size: int | None) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) of the bundle's ``draft`` rule for a JPEG of ``size``: the
    largest that keeps both sides at least ``min_size`` (Pillow's ``draft`` choice); 1 without ``min_size``."""
    if not min_size:
        return 1
    fits = min(size[0] // min_size, size[1] // min_size)
    return next((s for s in (8, 4, 2) if fits >= s), 1)


def _turbo_decode(img: Image.Image, source: str | Path | BinaryIO, min_size: int | None) -> Image.Image | None:
    """A JPEG's pixels at the draft rule's scale, decoded by simplejpeg in one call (no 64 KB feeding loop,
    the lock released throughout), or None where Pillow decodes instead: not a single-picture YCbCr or
    grey JPEG, simplejpeg not installed, or data it refuses (Pillow then gives the reason).  Both run
    libjpeg-turbo's accurate integer IDCT with fancy upsampling, so the pixels are Pillow's draft
    pixels exactly (tests/test_jpeg_decode.py checks that on every JPEG kind)."""
    if img.format != "JPEG" or img.mode not in ("RGB", "L") or not turbo_available():
        return None
    import simplejpeg

    s = draft_scale(img.size, min_size)
    w, h = (img.width + s - 1) // s, (img.height + s - 1) // s
    try:
        data = _bytes_of(source)
        pixels = simplejpeg.decode_jpeg(data, "RGB" if img.mode == "RGB" else "GRAY", min_width=w, min_height=h)
    except (ValueError, OSError):
        return None
    if pixels.shape[:2] != (h, w):
        return None
    return Image.fromarray(pixels if img.mode == "RGB" else pixels[:, :, 0])


def _bytes_of(source: str | Path | BinaryIO) -> bytes:
    """The whole encoded file, from a path or an open binary file."""
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    source.seek(0)
    return source.read()


LARGE_PREVIEWS = ("Large Thumbnail (VGA Equivalent)", "Large Thumbnail (Full HD Equivalent)")
"""The MPF image types a camera writes for the large previews beside a JPEG's primary picture (CIPA DC-007)."""


def mpf_preview(img: Image.Image, data: bytes, preview_size: int) -> bytes | None:
    """The smallest large preview (a JPEG) in a multi-picture file's MPF index whose sides are both at
    least ``preview_size`` and whose shape is the primary picture's (within 1%); None when there is none.
    A preview is what the camera rendered from the same exposure, at a fraction of the bytes to decode."""
    entries = (getattr(img, "mpinfo", None) or {}).get(0xB002) or []
    base = _mpf_base(data)
    if base is None:
        return None
    best: tuple[int, bytes] | None = None
    for entry in entries[1:]:
        if entry.get("Attribute", {}).get("MPType") not in LARGE_PREVIEWS:
            continue
        start = entry["DataOffset"] + base
        chunk = data[start:start + entry["Size"]]
        try:
            with Image.open(io.BytesIO(chunk)) as preview:
                w, h = preview.size
                if preview.format not in ("JPEG", "MPO"):
                    continue
        except Exception:  # noqa: BLE001 - a damaged preview is skipped; the primary picture is decoded instead
            continue
        same_shape = abs(w / h - img.width / img.height) <= 0.01 * img.width / img.height
        if min(w, h) >= preview_size and same_shape and (best is None or w * h < best[0]):
            best = (w * h, chunk)
    return best[1] if best else None


def _mpf_base(data: bytes) -> int | None:
    """Where the MPF header starts (its entries' offsets count from there): just after the ``MPF\\0`` of
    the first APP2 segment that carries one."""
    at = data.find(b"MPF\x00")
    while at >= 4:
        if data[at - 4:at - 2] == b"\xff\xe2":
            return at + 4
        at = data.find(b"MPF\x00", at + 1)
    return None


def _upright_preview(pixels: Image.Image, primary: Image.Image, preview: bytes) -> Image.Image:
    """A decoded preview turned by the primary picture's EXIF orientation when the preview carries none
    of its own (cameras write the orientation once, for the file)."""
    with Image.open(io.BytesIO(preview)) as header:
        if header.getexif().get(0x0112, 1) != 1:
            return pixels
    return _upright(pixels, primary)


_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}
"""EXIF orientation to the turn that puts the picture upright, as ``ImageOps.exif_transpose`` turns it."""


def _upright(pixels: Image.Image, header: Image.Image) -> Image.Image:
    """``pixels`` turned by the orientation in ``header``'s EXIF (or XMP), read from the header alone."""
    method = _ORIENTATION.get(header.getexif().get(0x0112, 1))
    return pixels.transpose(method) if method is not None else pixels


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


def preprocess_bytes(data: bytes, name: str, config: PreprocessConfig, max_pixels: int = MAX_PIXELS,
                     previews: bool = False) -> np.ndarray:
    """:func:`preprocess_file` for an encoded photo in memory (``name`` goes into error messages)."""
    return preprocess(read_image(io.BytesIO(data), name, max_pixels, config.decode_size,
                                 config.image_size if previews else None), config)


def preprocess_file(path: str | Path, config: PreprocessConfig, max_pixels: int = MAX_PIXELS,
                    previews: bool = False) -> np.ndarray:
    """Load (by the config's decode rule) and preprocess one image file; ``previews``: read a multi-picture
    JPEG by its camera-made large preview where one covers the model's input (opt-in: not the bundle's rule)."""
    return preprocess(load_image(path, max_pixels, config.decode_size, config.image_size if previews else None),
                      config)
