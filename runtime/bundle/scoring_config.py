"""How a score bundle turns label scores into labels, and the one check of a caller's overrides:
the peer of :class:`~.decoding_config.DecodingConfig` for ``cnn`` and ``ml-gcn`` bundles.

The manifest's ``scoring`` section holds these fields (with the encoder output they read); the
training checkpoint stores the same model, so one frozen value flows from training to every runtime."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

from .typed_json import read_lenient


def check_overrides(top_k: Optional[int], threshold: Optional[float]) -> None:
    """Refuse a per-job override that cannot select labels (a ValueError naming the option): the
    same rule whether the option came from ``corel-infer``, a Triton request or the Python API."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k (--top-k) must be at least 1, got {top_k}")
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold (--threshold) must be in [0, 1], got {threshold}")


@dataclass(frozen=True)
class ScoringConfig:
    """A label is kept when its score reaches its own threshold, best first (score relative to
    threshold), at most ``top_k`` (None: no cap); an image with fewer than ``min_labels`` such
    labels keeps its ``min_labels`` best instead.  Validated on construction (ValueError)."""

    thresholds: tuple[float, ...]
    top_k: Optional[int] = None
    min_labels: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        n = len(self.thresholds)
        if n == 0:
            raise ValueError("scoring.thresholds: empty; one threshold per label")
        if any(not (math.isfinite(t) and 0.0 <= t <= 1.0) for t in self.thresholds):  # rule: scoring-bounds
            raise ValueError("scoring.thresholds: every threshold must be in [0, 1]")
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 1):  # rule: scoring-bounds
            raise ValueError(f"scoring.top_k: {self.top_k}; at least 1, or null for no cap")
        if not 0 <= self.min_labels <= n:  # rule: scoring-bounds, rule: scoring-min-labels
            raise ValueError(f"scoring.min_labels: {self.min_labels}; between 0 and {n}")

    def replace(self, top_k: Optional[int] = None, threshold: Optional[float] = None) -> "ScoringConfig":
        """These rules with a caller's overrides (None keeps the bundle's): ``threshold`` becomes every
        label's threshold, ``top_k`` the cap.  Validated (ValueError naming the option)."""
        check_overrides(top_k, threshold)
        if top_k is None and threshold is None:
            return self
        thresholds = self.thresholds if threshold is None else (float(threshold),) * len(self.thresholds)
        return replace(self, thresholds=thresholds, top_k=self.top_k if top_k is None else top_k)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "thresholds": list(self.thresholds)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScoringConfig":
        """From a checkpoint's JSON: unknown keys are ignored, missing ones take their defaults."""
        return read_lenient(cls, data)
