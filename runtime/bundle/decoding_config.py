"""The one decoding configuration: how a recurrent model's label sequence is searched.

Torch-free and validated on construction (a clear ``ValueError``).  Training stores it in the
checkpoint, the exporter writes it into the manifest, the runtime and the PyTorch reference
decoders read it, and the benchmarks override fields of it with :meth:`DecodingConfig.replace`,
in the manner of onnxruntime-genai's search options.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from .typed_json import read_lenient

LengthPenaltyFormula = Literal["n^alpha", "gnmt"]
LENGTH_PENALTY_FORMULAS: tuple[str, ...] = ("n^alpha", "gnmt")


@dataclass(frozen=True)
class DecodingConfig:
    """Search rules shared by every decoder of a sequence bundle.

    * ``beam_width``: 1 is greedy; K > 1 keeps K live hypotheses per image at every step (a
      hypothesis that emits ``stop`` joins the image's finished list, the beam does not shrink) and
      stops early once no live hypothesis can beat the best finished one.
    * ``max_len``: at most this many labels; after ``max_len`` labels only ``stop`` may follow.
    * ``min_labels``: ``stop`` is masked until this many labels were emitted (1: no photo comes
      back empty; 0 allows an empty annotation).
    * ``forbid_repeat``: a hypothesis never emits a label twice.
    * ``length_penalty``: alpha; a finished hypothesis ranks by ``logprob / n ** alpha``
      (``n^alpha``, as Hugging Face ``generate`` and onnxruntime-genai) or ``logprob / ((5 + n) / 6)
      ** alpha`` (``gnmt``), ``n`` counting the emitted tokens including ``stop``; 0 ranks by the
      plain summed log-probability.
    """

    beam_width: int = 1
    """1: greedy search; K > 1: beam search with K live hypotheses per photo."""
    max_len: int = 5
    """At most this many labels: after ``max_len`` labels only stop may follow."""
    min_labels: int = 1
    """Stop is masked until this many labels were emitted (0 allows an empty annotation); at most
    ``max_len``."""
    forbid_repeat: bool = True
    """A hypothesis never emits a label twice: the labels it emitted are masked."""
    length_penalty: float = 0.0
    """alpha: a finished hypothesis ranks by its summed log-probability divided by ``normaliser(n)``,
    ``n`` counting its tokens including stop; 0 ranks by the plain sum."""
    length_penalty_formula: LengthPenaltyFormula = "n^alpha"
    """The normaliser: ``n^alpha`` is ``n ** alpha``; ``gnmt`` is ``((5 + n) / 6) ** alpha``."""

    def __post_init__(self) -> None:
        for name in ("beam_width", "max_len", "min_labels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.beam_width < 1:  # rule: decoding-bounds
            raise ValueError(f"beam width must be at least 1, got {self.beam_width}")
        if self.max_len < 1:  # rule: decoding-bounds
            raise ValueError(f"maximum length must be at least 1 label, got {self.max_len}")
        if not 0 <= self.min_labels <= self.max_len:  # rule: decoding-bounds, rule: decoding-min-labels
            raise ValueError(f"min_labels must be between 0 and max_len ({self.max_len}), got {self.min_labels}")
        if not isinstance(self.forbid_repeat, bool):
            raise ValueError(f"forbid_repeat must be true or false, got {self.forbid_repeat!r}")
        if isinstance(self.length_penalty, bool) or not isinstance(self.length_penalty, (int, float)) \
                or not math.isfinite(self.length_penalty):
            raise ValueError(f"length penalty must be a finite number, got {self.length_penalty!r}")
        object.__setattr__(self, "length_penalty", float(self.length_penalty))
        if self.length_penalty_formula not in LENGTH_PENALTY_FORMULAS:
            raise ValueError(f"unknown length-penalty formula {self.length_penalty_formula!r}; "
                             f"known: {', '.join(LENGTH_PENALTY_FORMULAS)}")

    def normaliser(self, num_tokens: int) -> float:
        """What a finished hypothesis's log-probability is divided by; ``num_tokens`` includes ``stop``."""
        if not self.length_penalty:
            return 1.0
        base = num_tokens if self.length_penalty_formula == "n^alpha" else (5.0 + num_tokens) / 6.0
        return float(base) ** self.length_penalty

    def check_labels(self, num_labels: int) -> None:
        """Refuse rules this vocabulary cannot satisfy (``min_labels`` distinct labels without repeats)."""
        if self.forbid_repeat and self.min_labels > num_labels:  # rule: decoding-min-labels
            raise ValueError(f"min_labels {self.min_labels} needs at least that many labels without repeats; "
                             f"the vocabulary has {num_labels}")

    def replace(self, **overrides: Any) -> "DecodingConfig":
        """A copy with the given fields changed (``None`` keeps the current value); validated."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def greedy(self) -> "DecodingConfig":
        return self.replace(beam_width=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DecodingConfig":
        """From a checkpoint's JSON: unknown keys are ignored, missing ones take their defaults."""
        return read_lenient(cls, data)
