"""What one request from someone else may ask of a server: the beam width, the photos and their
bytes.  One place for the limits ``corel-serve``, the Ray job and the web page apply; the Python API
(:class:`~corel_annotate.runtime.annotator.Annotator`) applies none.

A beam search keeps ``beam width`` live hypotheses per photo, and the step graph reads every one of
them as a row: its recurrent state and, for attention decoders, a copy of the photo's constants
(features and their projection, about 250 KB per row for a 49 x 1280 feature map).  The cost of one
hypothesis is computed from the manifest's declared shapes (:func:`hypothesis_bytes`), and the
default cap on the width keeps one photo's search within ``decode_memory``.  A batch of photos is
then decoded in chunks small enough that no decoder call exceeds that bound either.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from .manifest import BundleManifest

MIB = 1024 * 1024
DECODE_MEMORY = 256 * MIB
"""Default bound on the memory one decoder search may use (per chunk of photos)."""
BEAM_CEILING = 64
"""The default cap never exceeds this width: the reference methods decode with 1-5, and wider
beams cost time in proportion while changing almost nothing."""
MAX_IMAGE_BYTES = 32 * MIB
"""Encoded photos larger than this are refused per photo (a camera JPEG is 3-12 MB)."""
MAX_PHOTOS = 64
"""Photos one request may carry."""
MAX_REQUEST_BYTES = 256 * MIB
"""Encoded bytes one request may carry, all its photos together."""
ITEM_BYTES = {"float32": 4, "float16": 2, "int64": 8, "uint8": 1}
SEARCH_COPIES = 2
"""The step graph's rows exist about twice at a step: the inputs gathered for the call and the
outputs it returns, plus the graph's own intermediates of the same size (attention scores)."""


def _size(n: int) -> str:
    """``32 MB`` for whole mebibytes, else the bytes (``300,000 bytes``)."""
    return f"{n // MIB} MB" if n % MIB == 0 else f"{n:,} bytes"


def _row_bytes(shape: Sequence[int | str], dtype: str) -> int:
    """Bytes of one row (every axis after the batch); a dynamic axis after the batch counts as 1."""
    return math.prod(d if isinstance(d, int) else 1 for d in shape[1:]) * ITEM_BYTES[dtype]


def hypothesis_bytes(manifest: BundleManifest, keep_alphas: bool = True) -> int:
    """The memory one live hypothesis costs during a beam search, from the manifest's shapes:
    the decoder step's input and output rows (times :data:`SEARCH_COPIES`) and the search's own
    per-hypothesis arrays (float64 log-probabilities, totals and their sort order over ``V + 1``
    tokens, the emitted labels, and the attention maps when they are kept).  0 for scores bundles."""
    seq = manifest.sequence
    if seq is None:
        return 0
    step = manifest.graphs["decoder_step"]
    graph = sum(_row_bytes(t.shape, t.dtype) for t in step.inputs if t.name != seq.token_input)
    graph += sum(_row_bytes(t.shape, t.dtype) for t in step.outputs)
    width, steps = len(manifest.vocabulary) + 1, seq.decoding.max_len + 1
    search = 6 * 8 * width + width + 3 * 8 * steps
    if keep_alphas and seq.attention_output:
        positions = _row_bytes(step.output(seq.attention_output).shape, "float32")
        search += 2 * steps * positions
    return SEARCH_COPIES * graph + search


@dataclass(frozen=True)
class RequestLimits:
    """The caps a server applies to each request, validated on construction (ValueError).

    * ``max_beam_width``: the widest beam a request may ask for;
    * ``decode_memory``: the bound one decoder search stays within (a batch is decoded in chunks);
    * ``hypothesis_bytes``: one live hypothesis's cost, from the manifest (0 for scores bundles);
    * ``max_image_bytes``, ``max_request_bytes``, ``max_photos``: one photo's bytes, one request's
      bytes, and the photos one request may carry."""

    max_beam_width: int
    decode_memory: int = DECODE_MEMORY
    hypothesis_bytes: int = 0
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_photos: int = MAX_PHOTOS
    own_beam_width: int = 1
    """The manifest's own width: what a request that names none is searched at."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value < (0 if name == "hypothesis_bytes" else 1):
                raise ValueError(f"{name.replace('_', '-')} {value}: at least 1")
        if self.max_image_bytes > self.max_request_bytes:
            raise ValueError(f"max-image-bytes {self.max_image_bytes:,} is more than max-request-bytes "
                             f"{self.max_request_bytes:,}: one photo could never be sent")

    @classmethod
    def for_manifest(cls, manifest: BundleManifest, max_beam_width: Optional[int] = None,
                     decode_memory: int = DECODE_MEMORY, max_image_bytes: int = MAX_IMAGE_BYTES,
                     max_request_bytes: int = MAX_REQUEST_BYTES, max_photos: int = MAX_PHOTOS) -> "RequestLimits":
        """Limits for one bundle.  ``max_beam_width`` None: the widest beam whose single-photo search
        fits ``decode_memory`` (at most :data:`BEAM_CEILING`, at least the manifest's own width)."""
        per = hypothesis_bytes(manifest)
        if max_beam_width is None:
            own = manifest.sequence.decoding.beam_width if manifest.sequence else 1
            fits = decode_memory // per if per else BEAM_CEILING
            max_beam_width = max(own, min(BEAM_CEILING, fits))
        own = manifest.sequence.decoding.beam_width if manifest.sequence else 1
        return cls(max_beam_width, decode_memory, per, max_image_bytes, max_request_bytes, max_photos, own)

    @property
    def bound_bytes(self) -> int:
        """The most one decoder search can hold: ``decode_memory`` (chunks of photos stay within it), or
        one photo at ``max_beam_width`` where a cap set by hand exceeds it."""
        return max(self.decode_memory, self.max_beam_width * self.hypothesis_bytes) if self.hypothesis_bytes else 0

    def check_beam(self, beam_width: Optional[int]) -> None:
        """Refuse a width above the cap (ValueError, one line saying the cap and why)."""
        if beam_width is not None and beam_width > self.max_beam_width:
            raise ValueError(f"beam width {beam_width} is more than this server's cap of {self.max_beam_width} "
                             f"({self.hypothesis_bytes / MIB:.2f} MB per hypothesis)")

    def check_request(self, sizes: Sequence[int]) -> str:
        """Why a request of photos of these byte sizes is refused as a whole, or "" when it is not."""
        if len(sizes) > self.max_photos:
            return f"the request carries {len(sizes)} photos; this server takes at most {self.max_photos} per request"
        total = sum(sizes)
        if total > self.max_request_bytes:
            return (f"the request carries {total:,} bytes of photos; this server takes at most "
                    f"{self.max_request_bytes:,} per request")
        return ""

    def check_image(self, size: int) -> str:
        """Why one encoded photo of ``size`` bytes is refused, or "" when it is not."""
        if size > self.max_image_bytes:
            return f"{size:,} bytes is more than the server's limit of {self.max_image_bytes:,}"
        return ""

    def chunk_photos(self, beam_width: Optional[int] = None) -> int:
        """Photos per decoder search at this width (None: the manifest's own) so that a chunk stays
        within ``decode_memory``."""
        if not self.hypothesis_bytes:
            return self.max_photos
        width = beam_width or self.own_beam_width
        return max(1, self.decode_memory // (max(1, width) * self.hypothesis_bytes))

    def describe(self) -> str:
        """The start-up line: the caps and the memory bound they keep."""
        text = f"at most {self.max_photos} photos and {_size(self.max_request_bytes)} per request, " \
               f"{_size(self.max_image_bytes)} per photo"
        if not self.hypothesis_bytes:
            return text
        one = self.max_beam_width * self.hypothesis_bytes
        return (f"beam width at most {self.max_beam_width} ({self.hypothesis_bytes / MIB:.2f} MB per hypothesis from "
                f"the manifest's shapes: {one / MIB:.0f} MB for one photo at the cap; a search holds at most "
                f"{self.bound_bytes / MIB:.0f} MB); " + text)
