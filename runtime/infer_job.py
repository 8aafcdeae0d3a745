"""One ``corel-infer`` job, whichever engine runs it: the options, the output file and its resume
state, and the record stream of the in-process engine.  ``--server`` (``triton_client``) and
``--ray`` (``ray_job``) produce the same records and go through the same :class:`RecordOutput`."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Optional

import numpy as np

from .decoding_config import DecodingConfig
from .manifest import BundleManifest
from .preprocessing import MAX_PIXELS, display_path
from .writers import ResultWriter, completed_images


@dataclass(frozen=True)
class InferOptions:
    """Per-job options every engine honours (None keeps the bundle's own rule)."""

    beam_width: Optional[int] = None
    top_k: Optional[int] = None
    threshold: Optional[float] = None
    keep_alphas: bool = False
    batch_size: int = 8
    max_pixels: int = MAX_PIXELS

    def decoding_kwargs(self, is_sequence: bool) -> dict:
        """The keyword arguments of ``Annotator.annotate_batch`` for a bundle of this kind."""
        if is_sequence:
            return {"beam_width": self.beam_width}
        return {"top_k": self.top_k, "threshold": self.threshold}


@dataclass
class Produced:
    """One image's record, with its attention weights when they were asked for."""

    path: Path
    record: dict
    alphas: Optional[list[np.ndarray]] = None

    @property
    def failed(self) -> bool:
        return self.record.get("status") != "ok"


def ok_record(path: Path | str, labels: list[str], scores: list[float]) -> dict:
    """The record of an annotated image (the same fields in every engine)."""
    return {"image": display_path(path), "status": "ok", "labels": list(labels),
            "scores": [round(float(s), 6) for s in scores]}


def error_record(path: Path | str, reason: str) -> dict:
    """The record of an image that could not be annotated, with a one-line reason."""
    return {"image": display_path(path), "status": "error", "error": reason}


def local_records(annotator, files: list[Path], options: InferOptions) -> Iterator[Produced]:
    """Records from the in-process engine, in input order, next batches decoding in background threads."""
    from .inputs import prefetch_batches

    kwargs = options.decoding_kwargs(annotator.manifest.is_sequence)
    for batch in prefetch_batches(files, annotator.preprocess_config, options.batch_size,
                                  max_pixels=options.max_pixels):
        for path, reason in batch.failed:
            yield Produced(path, error_record(path, reason))
        if batch.array is not None:
            results = annotator.annotate_batch(batch.array, keep_alphas=options.keep_alphas, **kwargs)
            for path, result in zip(batch.paths, results):
                yield Produced(path, ok_record(path, result.labels, result.scores),
                               result.alphas if options.keep_alphas else None)


class BundleFacts:
    """What ``corel-infer`` checks options against, read from a bundle's manifest: the Annotator's
    and those of engines with no local sessions (``--ray``); set :attr:`manifest` in the subclass."""

    manifest: BundleManifest

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


class RecordOutput:
    """The ``-o`` file (or standard output) of a job: refuses to clobber, reads what ``--resume``
    keeps, and writes each record once (a record for an image already written is dropped, so an
    engine that retries work cannot duplicate it)."""

    def __init__(self, output: Optional[Path], fmt: str, resume: bool, overwrite: bool) -> None:
        self.output, self.fmt = output, fmt
        self.done: set[str] = set()
        append = False
        if resume and output is None:
            raise ValueError("--resume needs --output FILE")
        if output is not None and output.exists() and output.stat().st_size > 0:
            if resume:
                self.done = completed_images(output, fmt)
                append = True
            elif not overwrite:
                raise ValueError(f"{output}: already exists; --resume continues it, --overwrite replaces it")
        self.resumed = len(self.done)
        self._stream: IO[str] = open(output, "a" if append else "w", encoding="utf-8") if output else sys.stdout
        self._writer = ResultWriter(self._stream, fmt, header=not append)
        self.written = 0
        self.failures = 0

    def todo(self, files: list[Path]) -> list[Path]:
        """The files without a record yet, each once, in input order."""
        seen = set(self.done)
        out = []
        for f in files:
            key = display_path(f)
            if key not in seen:
                seen.add(key)
                out.append(f)
        return out

    def write(self, record: dict) -> bool:
        """Write one record unless its image already has one; returns whether it was written."""
        if record["image"] in self.done:
            return False
        self.done.add(record["image"])
        self._writer.write(record)
        self.written += 1
        self.failures += record.get("status") != "ok"
        return True

    def close(self) -> None:
        self._writer.close()
        if self.output is not None:
            self._stream.close()
