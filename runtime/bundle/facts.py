"""What a bundle lets a caller ask for, read from its manifest alone: shared by the in-process
:class:`~corel_annotate.runtime.annotator.Annotator` and by engines with no local sessions (Ray)."""
from __future__ import annotations

import hashlib
from typing import Optional

from .decoding_config import DecodingConfig
from .manifest import BundleManifest
from .scoring_config import ScoringConfig, check_overrides


class BundleFacts:
    """What ``corel-infer`` checks options against, read from a bundle's manifest: the Annotator's
    and those of engines with no local sessions (``--ray``); set :attr:`manifest` in the subclass."""

    manifest: BundleManifest

    @property
    def bundle_id(self) -> Optional[str]:
        """The sha256 of the manifest's canonical JSON, which names every graph's sha256: the same for
        the same bundle wherever it was copied (recorded with the tags a job writes)."""
        return hashlib.sha256(self.manifest.to_json().encode("utf-8")).hexdigest()

    @property
    def method(self) -> str:
        """The method that trained the bundle, for messages."""
        return self.manifest.method

    @property
    def kind(self) -> str:
        """``scores`` or ``sequence``."""
        return self.manifest.kind

    @property
    def has_attention(self) -> bool:
        """Whether decoding can return attention weights per step (``--attention-maps``)."""
        return self.manifest.sequence is not None and self.manifest.sequence.attention_output is not None

    def decoding_config(self, beam_width: Optional[int] = None) -> DecodingConfig:
        """The manifest's decoding rules with the beam width overridden; validated (ValueError)."""
        if self.manifest.sequence is None:
            raise ValueError(f"{self.method}: a scores bundle has no decoding rules")
        return self.manifest.sequence.decoding.replace(beam_width=beam_width)

    def scoring_config(self, top_k: Optional[int] = None, threshold: Optional[float] = None) -> ScoringConfig:
        """The manifest's label selection with the overrides applied; validated (ValueError)."""
        if self.manifest.scoring is None:
            raise ValueError(f"{self.method}: a sequence bundle has no score thresholds")
        return self.manifest.scoring.config.replace(top_k=top_k, threshold=threshold)

    def check_overrides(self, beam_width: Optional[int] = None, top_k: Optional[int] = None,
                        threshold: Optional[float] = None) -> None:
        """Refuse a job's overrides before any image is read (ValueError): the beam width against
        a sequence bundle's rules, ``top_k`` and ``threshold`` against a score bundle's."""
        if self.kind == "sequence":
            self.decoding_config(beam_width)
        else:
            check_overrides(top_k, threshold)
