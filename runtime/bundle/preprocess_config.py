"""How a photo becomes a model input, as the manifest and the checkpoint declare it: plain data, no
imaging library (``runtime/preprocessing.py`` carries it out)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .typed_json import read_lenient

RESIZE_RULES = ("stretch",)
DECODE_RULES = ("full", "draft")
INTERPOLATIONS = ("bilinear", "bicubic")
LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB",)
INPUT_DTYPES = ("float32", "uint8")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a photo becomes a model input: RGB, resized to ``size x size``, then as ``input_dtype`` says.

    ``input_dtype = "float32"`` (every bundle before format 4, and every checkpoint): the runtime
    normalises, ``(value * scale - mean) / std`` per channel in float32, and feeds ``layout``
    (``NCHW``: ``[3, size, size]``).  ``input_dtype = "uint8"``: the runtime feeds the resized
    photo's 8-bit values unchanged, ``layout`` ``NHWC`` (``[size, size, 3]``, as decoders give
    pixels), and the encoder graph itself casts, scales, normalises and transposes with the same
    ``scale``, ``mean`` and ``std`` (``corel-export``'s default since format 4: one array copy instead
    of four numpy passes per photo).

    ``resize = "stretch"`` resizes the whole photo to ``size x size`` without
    cropping, as the reference implementation does.

    ``decode = "draft"`` decodes only the pixels the resize needs: a JPEG at the largest DCT scale
    (1/2, 1/4 or 1/8) that keeps both sides at or above ``image_size`` (libjpeg's downscaling while
    decoding), other formats reduced by the largest whole factor that does the same; a 4032x3024
    camera JPEG decodes about 9x faster.  ``full`` decodes every pixel: the rule of checkpoints
    and bundles made before ``decode`` existed, which keep their exact behaviour.
    """

    image_size: int = 224
    """The side of the square the photo is resized to, in pixels (at least 8)."""
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """The mean subtracted from each channel after ``scale``, in R, G, B order."""
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """The standard deviation each channel is then divided by, in R, G, B order; each above 0."""
    resize: str = "stretch"
    """``stretch``: the whole photo to ``image_size x image_size``, without cropping (the aspect ratio
    is not kept)."""
    interpolation: str = "bilinear"
    """The resize filter: ``bilinear`` or ``bicubic``, antialiased when downscaling (Pillow's
    resampling)."""
    channel_order: str = "RGB"
    """``RGB``: channel 0 is red, then green, then blue (the only order)."""
    layout: str = "NCHW"
    """The axes of the encoder's input: ``NCHW`` (``[batch, 3, size, size]``) or ``NHWC`` (``[batch,
    size, size, 3]``)."""
    scale: float = field(default=1.0 / 255.0)
    """What each 8-bit value is multiplied by before ``mean`` is subtracted (1/255: values in [0, 1])."""
    decode: str = "full"
    """``full``: every pixel of the photo is decoded; ``draft``: a JPEG is decoded at a reduced DCT
    scale, then any photo box-reduced, keeping both sides at least ``image_size``."""
    input_dtype: str = "float32"
    """``float32``: the runtime normalises and feeds float32; ``uint8``: the runtime feeds the resized
    8-bit values and the encoder graph normalises (format 4)."""

    def __post_init__(self) -> None:  # rule: preprocess
        if self.image_size < 8:
            raise ValueError(f"image size {self.image_size} is too small (at least 8)")
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"unknown resize rule {self.resize!r}; known: {', '.join(RESIZE_RULES)}")
        if self.decode not in DECODE_RULES:
            raise ValueError(f"unknown decode rule {self.decode!r}; known: {', '.join(DECODE_RULES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"unknown channel order {self.channel_order!r}; known: {', '.join(CHANNEL_ORDERS)} "
                             "(mean and std are given in that order)")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; known: {', '.join(LAYOUTS)}")
        if self.input_dtype not in INPUT_DTYPES:
            raise ValueError(f"unknown input dtype {self.input_dtype!r}; known: {', '.join(INPUT_DTYPES)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values each, std positive")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One photo's encoder input shape in ``layout`` order (without the batch axis)."""
        size = self.image_size
        return (3, size, size) if self.layout == "NCHW" else (size, size, 3)

    @property
    def decode_size(self) -> int | None:
        """The smallest side :func:`load_image` must keep (None: decode every pixel)."""
        return self.image_size if self.decode == "draft" else None

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        """From a checkpoint's JSON: unknown keys are ignored, missing ones take their defaults."""
        return read_lenient(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
