"""The one declaration of a served bundle's inputs and outputs, read by both sides: ``corel-serve``
binds it, and the ``--server`` client (``runtime/jobs/triton_job.py``) reads it with the model's
metadata (``/v2/models/NAME``): from the inputs declared whether it is a sequence bundle
(``beam_width``) or a scores one (``top_k``, ``threshold``), from the outputs whether attention
maps can be asked for.  numpy only: importing it loads no engine and no Triton."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

@dataclass(frozen=True)
class TensorDecl:
    """One input or output of the served model: name, numpy dtype, shape without the batch axis."""

    name: str
    dtype: Any
    shape: tuple[int, ...]
    optional: bool = False


IMAGE = TensorDecl("image", np.bytes_, (1,))
BEAM_WIDTH = TensorDecl("beam_width", np.int32, (1,), optional=True)
TOP_K = TensorDecl("top_k", np.int32, (1,), optional=True)
THRESHOLD = TensorDecl("threshold", np.float32, (1,), optional=True)
LABELS = TensorDecl("labels", np.bytes_, (-1,))
SCORES = TensorDecl("scores", np.float32, (-1,))
ERROR = TensorDecl("error", np.bytes_, (1,))
ATTENTION = TensorDecl("attention", np.float32, (-1, -1))


def model_inputs(is_sequence: bool) -> list[TensorDecl]:
    """Inputs: one encoded photo per batch row, then the options this kind of bundle takes."""
    return [IMAGE, BEAM_WIDTH] if is_sequence else [IMAGE, TOP_K, THRESHOLD]


def model_outputs(has_attention: bool) -> list[TensorDecl]:
    """Outputs per row: labels (padded with empty strings), their scores (padded with 0), a one-line
    error (empty when the photo was annotated) and, when asked for, attention ``[labels, cells]``."""
    return [LABELS, SCORES, ERROR] + ([ATTENTION] if has_attention else [])


def option_value(request, decl: TensorDecl) -> Optional[float]:
    """One optional per-request option as a Python number (None when the request leaves it out)."""
    value = request.data.get(decl.name) if hasattr(request, "data") else request.get(decl.name)
    if value is None:
        return None
    flat = np.asarray(value).reshape(-1)
    return flat[0].item() if flat.size else None
