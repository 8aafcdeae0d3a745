"""The decoder's state during a search, kept apart from the search itself.

Two kinds of decoder inputs: recurrent rows (``h``, ``c``: one row per live hypothesis, replaced
by every step) and per-image constants (attention ``features`` and ``projection``: the same for
every hypothesis of an image, never changed).  The search only reorders rows by parent index;
the constants stay one per image and are indexed by each row's image, and that index is reused
while it does not change (every step of a full beam), so they are not copied per step.
"""
from __future__ import annotations

import numpy as np


class _ConstantFeed:
    """Constants ``[B, ...]`` as rows ``[R, ...]`` for a row-to-image map, the last gather reused."""

    def __init__(self, constants: dict[str, np.ndarray]) -> None:
        self.constants = constants
        self.batch = next(iter(constants.values())).shape[0] if constants else 0
        self._image: np.ndarray | None = None
        self._rows: dict[str, np.ndarray] = {}

    def rows(self, image: np.ndarray) -> dict[str, np.ndarray]:
        if not self.constants:
            return {}
        if image.size == self.batch and np.array_equal(image, np.arange(self.batch)):
            return self.constants
        if self._image is None or not np.array_equal(image, self._image):
            self._image = image.copy()
            self._rows = {name: np.ascontiguousarray(value[image]) for name, value in self.constants.items()}
        return self._rows


class DecoderState:
    """Recurrent rows ``[R, ...]``, the image of each row ``[R]``, and the per-image constants."""

    def __init__(self, rows: dict[str, np.ndarray], image: np.ndarray, feed: _ConstantFeed) -> None:
        self.rows, self.image, self._feed = rows, image, feed

    @classmethod
    def start(cls, rows: dict[str, np.ndarray], constants: dict[str, np.ndarray]) -> "DecoderState":
        """One row per image: the encoder's initial recurrent state and its constants."""
        arrays = list(rows.values()) + list(constants.values())
        if not arrays:
            raise ValueError("a decoder state needs at least one recurrent or constant input")
        batch = arrays[0].shape[0]
        if any(a.shape[0] != batch for a in arrays):
            raise ValueError("every decoder input must have one row per image")
        return cls(dict(rows), np.arange(batch), _ConstantFeed(dict(constants)))

    @property
    def num_rows(self) -> int:
        return int(self.image.size)

    def select(self, index: np.ndarray) -> "DecoderState":
        """Rows ``index`` (parents of the next step's hypotheses, or the rows still live), in that order."""
        return DecoderState({name: value[index] for name, value in self.rows.items()}, self.image[index], self._feed)

    def with_rows(self, rows: dict[str, np.ndarray]) -> "DecoderState":
        """The same rows after a step: new recurrent values, same images."""
        return DecoderState(rows, self.image, self._feed)

    def inputs(self) -> dict[str, np.ndarray]:
        """Everything the step graph reads besides the token: recurrent rows and each row's constants."""
        return {**self.rows, **self._feed.rows(self.image)}
