"""Reader for the Corel-5k directory layout.

``DIR/images/``, ``DIR/train.json`` and ``DIR/test.json`` (``{"samples": [{"image_name",
"image_labels"}]}``) and ``DIR/vocabulary.txt``.  Bad samples (a label outside the
vocabulary, a missing image, an empty label list) are either refused with a
one-line error (``strict=True``) or skipped, counted and reported; never dropped
silently.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .bundle.vocabulary import Vocabulary

SKIP_REASONS = ("unknown-label", "missing-image", "no-labels")


@dataclass(frozen=True)
class Sample:
    """One annotated photo."""

    image_name: str
    labels: tuple[str, ...]
    path: Path


@dataclass
class SplitReport:
    """What reading a split kept and what it skipped, by reason."""

    source: str
    total: int = 0
    skipped: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in SKIP_REASONS})
    duplicate_labels: int = 0

    @property
    def kept(self) -> int:
        return self.total - sum(len(v) for v in self.skipped.values())

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self) -> str:
        """One line: what was kept, and each skip reason with a few examples."""
        line = f"{self.source}: {self.kept}/{self.total} samples kept"
        parts = []
        for reason, items in self.skipped.items():
            if items:
                shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
                parts.append(f"{len(items)} skipped ({reason}: {shown})")
        if self.duplicate_labels:
            parts.append(f"{self.duplicate_labels} repeated labels merged")
        return line + ("; " + "; ".join(parts) if parts else "")

    def to_dict(self) -> dict:
        return {"source": self.source, "total": self.total, "kept": self.kept,
                "skipped": {k: len(v) for k, v in self.skipped.items()}}


@dataclass
class CorelSplit:
    """The kept samples of one split and the report of what was skipped."""

    name: str
    samples: list[Sample]
    report: SplitReport

    def label_ids(self, vocabulary: Vocabulary) -> list[list[int]]:
        return [vocabulary.encode(s.labels) for s in self.samples]


def read_annotations(path: Path) -> list[dict]:
    """The raw ``samples`` list of an annotation file, with a clear error when malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read annotations ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    samples = data.get("samples") if isinstance(data, dict) else None
    if not isinstance(samples, list):
        raise ValueError(f"{path}: expected an object with a 'samples' list")
    for i, item in enumerate(samples):
        if (not isinstance(item, dict) or not isinstance(item.get("image_name"), str)
                or not isinstance(item.get("image_labels"), list)
                or not all(isinstance(x, str) for x in item["image_labels"])):
            raise ValueError(f"{path}: sample {i} needs 'image_name' (string) and 'image_labels' (list of strings)")
    return samples


class CorelDataset:
    """A Corel-layout directory: its vocabulary and its splits."""

    def __init__(self, root: str | Path, vocabulary: Vocabulary | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: data directory does not exist")
        self.vocabulary = vocabulary or Vocabulary.from_file(self.root / "vocabulary.txt")
        self.image_dir = self.root / "images"

    def has_split(self, split: str) -> bool:
        return (self.root / f"{split}.json").is_file()

    def read(self, split: str, check_images: bool = True, strict: bool = False) -> CorelSplit:
        """Read ``DIR/{split}.json``; skip (or, when strict, refuse) bad samples."""
        path = self.root / f"{split}.json"
        report = SplitReport(source=str(path))
        samples: list[Sample] = []
        existing = _list_images(self.image_dir) if check_images else None
        for item in read_annotations(path):
            report.total += 1
            name = item["image_name"]
            labels = item["image_labels"]
            problem = None
            if not labels:
                problem = ("no-labels", "has an empty label list")
            else:
                unknown = [label for label in labels if label not in self.vocabulary]
                if unknown:
                    problem = ("unknown-label", f"label {unknown[0]!r} is not in the vocabulary")
                elif existing is not None and name not in existing and not (self.image_dir / name).is_file():
                    problem = ("missing-image", f"image {self.image_dir / name} does not exist")
            if problem is not None:
                if strict:
                    raise ValueError(f"{path}: sample {name!r} {problem[1]}")
                report.skipped[problem[0]].append(name)
                continue
            unique = tuple(dict.fromkeys(labels))
            report.duplicate_labels += len(labels) - len(unique)
            samples.append(Sample(name, unique, self.image_dir / name))
        return CorelSplit(split, samples, report)


def _list_images(image_dir: Path) -> set[str]:
    """Names of the files directly in ``image_dir`` (one directory listing, not one stat per sample)."""
    if not image_dir.is_dir():
        return set()
    return {p.name for p in image_dir.iterdir()}


def label_frequencies(samples: list[Sample]) -> Counter:
    """How many samples carry each label."""
    return Counter(label for s in samples for label in s.labels)
