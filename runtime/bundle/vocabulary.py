"""The label vocabulary and the token ids the recurrent decoders use.

Token layout follows the reference implementation: label ids ``0..V-1``, then
``stop = V`` and ``start = V + 1``.  Decoders emit ``V + 1`` classes (labels and
stop) and read ``V + 2`` tokens (labels, stop and start).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

START = "start"
STOP = "stop"


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of labels with the special recurrent-decoder tokens after them."""

    labels: tuple[str, ...]

    def __post_init__(self) -> None:  # rule: vocabulary
        if not self.labels:
            raise ValueError("vocabulary is empty")
        seen: set[str] = set()
        for label in self.labels:
            if not label or label != label.strip() or any(ch.isspace() for ch in label):
                raise ValueError(f"vocabulary label {label!r} is empty or contains white space")
            if label in seen:
                raise ValueError(f"vocabulary label {label!r} appears twice")
            if label in (START, STOP):
                raise ValueError(f"vocabulary label {label!r} is reserved for the decoder")
            seen.add(label)
        object.__setattr__(self, "_index", {label: i for i, label in enumerate(self.labels)})

    @classmethod
    def from_file(cls, path: str | Path) -> "Vocabulary":
        """Read one label per line; blank lines are ignored."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read vocabulary ({exc.strerror or exc})") from exc
        labels = tuple(line.strip() for line in lines if line.strip())
        try:
            return cls(labels)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def write(self, path: str | Path) -> None:
        Path(path).write_text("".join(label + "\n" for label in self.labels), encoding="utf-8")

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self._index  # type: ignore[attr-defined]

    def index(self, label: str) -> int:
        """The id of ``label``; KeyError if it is not in the vocabulary."""
        return self._index[label]  # type: ignore[attr-defined]

    def encode(self, labels: Iterable[str]) -> list[int]:
        return [self.index(label) for label in labels]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.labels[i] for i in ids]

    @property
    def stop_id(self) -> int:
        return len(self.labels)

    @property
    def start_id(self) -> int:
        return len(self.labels) + 1

    @property
    def num_outputs(self) -> int:
        """Decoder output classes: the labels plus stop."""
        return len(self.labels) + 1

    @property
    def num_tokens(self) -> int:
        """Decoder input tokens: the labels plus stop and start."""
        return len(self.labels) + 2

    def tokens(self) -> list[str]:
        """Every token name in id order, for embedding tables (labels, stop, start)."""
        return list(self.labels) + [STOP, START]
