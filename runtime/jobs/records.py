"""What every ``corel-infer`` job shares, whichever way it runs: the options, the records (the same
fields from the local, ``--server`` and ``--ray`` jobs) and the output file with its resume state."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

import numpy as np

from ..preprocessing import MAX_PIXELS, display_path
from .exclusive import ExclusiveOutput
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
    previews: bool = False   # read MPF large previews where they cover the model's input (local job only)

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
        # one writer per file: the lock is taken before the file is looked at (ValueError naming its holder)
        self._lock = ExclusiveOutput(output) if output is not None else None
        try:
            if output is not None and output.exists() and output.stat().st_size > 0:
                if resume:
                    self.done = completed_images(output, fmt)
                    append = True
                elif not overwrite:
                    raise ValueError(f"{output}: already exists; --resume continues it, --overwrite replaces it")
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
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
        if self._lock is not None:
            self._lock.release()
