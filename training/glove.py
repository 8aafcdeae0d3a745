"""GloVe label embeddings from a standard GloVe text file (``word v1 .. vN`` per line)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass
class GloveResult:
    """One vector per requested word, and how each was found."""

    vectors: np.ndarray
    dim: int
    exact: list[str] = field(default_factory=list)
    fallback: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.exact)} exact"]
        if self.fallback:
            parts.append(f"{len(self.fallback)} by fallback (" + ", ".join(f"{k}<-{v}" for k, v in list(self.fallback.items())[:5])
                         + (", ..." if len(self.fallback) > 5 else "") + ")")
        parts.append(f"{len(self.missing)} missing" + (" (" + ", ".join(self.missing[:10]) + ")" if self.missing else ""))
        return f"GloVe {self.dim}-d: " + ", ".join(parts)


def read_glove(path: str | Path, wanted: set[str] | None = None) -> dict[str, np.ndarray]:
    """Vectors from a GloVe text file, keeping only ``wanted`` words (all when None)."""
    path = Path(path)
    vectors: dict[str, np.ndarray] = {}
    dim = None
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.rstrip("\n").rstrip().split(" ")
                if len(parts) < 2:
                    continue
                word = parts[0]
                if wanted is not None and word not in wanted:
                    continue
                try:
                    vec = np.asarray(parts[1:], dtype=np.float32)
                except ValueError as exc:
                    raise ValueError(f"{path}:{lineno}: not a GloVe line ({exc})") from exc
                if dim is None:
                    dim = vec.size
                elif vec.size != dim:
                    raise ValueError(f"{path}:{lineno}: vector has {vec.size} values, earlier ones {dim}")
                vectors.setdefault(word, vec)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read GloVe file ({exc.strerror or exc})") from exc
    return vectors


def _candidates(word: str) -> list[list[str]]:
    """Fallback lookups in order: lower case, hyphen/underscore parts (averaged), a singular form."""
    lower = word.lower()
    out = [[lower]]
    parts = [p for p in lower.replace("_", "-").split("-") if p]
    if len(parts) > 1:
        out.append(parts)
    if lower.endswith("ies") and len(lower) >= 5:
        out.append([lower[:-3] + "y"])
    if lower.endswith("s") and not lower.endswith("ss") and len(lower) >= 4:
        out.append([lower[:-1]])
    if lower.endswith(("ses", "xes", "zes", "ches", "shes")) and len(lower) >= 5:
        out.append([lower[:-2]])
    return out


def label_embeddings(path: str | Path, words: Sequence[str], seed: int = 0) -> GloveResult:
    """One vector per word.  A word missing exactly falls back to its lower-case form, the mean of its
    hyphenated parts (``f-16`` -> ``f``, ``16``) or its singular; a word with no vector at all gets a
    small random vector and is listed in ``missing``."""
    wanted = set(words)
    for word in words:
        for group in _candidates(word):
            wanted.update(group)
    table = read_glove(path, wanted)
    if not table:
        raise ValueError(f"{path}: no vector for any of the {len(words)} labels")
    dim = next(iter(table.values())).size
    rng = np.random.default_rng(seed)
    result = GloveResult(np.zeros((len(words), dim), dtype=np.float32), dim)
    scale = float(np.std(np.stack(list(table.values())))) or 0.1
    for row, word in enumerate(words):
        if word in table:
            result.vectors[row] = table[word]
            result.exact.append(word)
            continue
        for group in _candidates(word):
            if all(p in table for p in group):
                result.vectors[row] = np.mean([table[p] for p in group], axis=0)
                result.fallback[word] = "+".join(group)
                break
        else:
            result.vectors[row] = rng.normal(0.0, scale, dim).astype(np.float32)
            result.missing.append(word)
    return result
