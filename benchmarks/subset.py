"""A small long-tailed data set cut from a large one: N random training photos and the labels they carry.

    corel-bench subset ../shared/corel5k bench-out/corel5k-300 --train 300

The subset is a complete Corel-layout directory: ``images`` links to the source's photos, ``train.json``
holds the drawn photos, ``vocabulary.txt`` the labels they carry (in the source's order), and
``test.json`` the source's test photos with their labels restricted to that vocabulary (photos left
with none are dropped).  It is how the defaults are checked on small data with a long tail.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from corel_annotate.runtime.dataset import CorelDataset


@dataclass
class SubsetInfo:
    """What :func:`make_subset` wrote, stored as ``subset.json`` beside the splits."""

    source: str
    seed: int
    train_images: int
    test_images: int
    labels: int
    labels_with_1_to_5_train_photos: int


def _write_split(path: Path, samples: list[dict]) -> None:
    path.write_text(json.dumps({"samples": samples}, indent=0))


def make_subset(source: Path, out: Path, train_images: int, seed: int = 0) -> SubsetInfo:
    """Draw ``train_images`` training photos of ``source`` (uniformly, seeded) into a new directory ``out``."""
    ds = CorelDataset(source)
    train = ds.read("train")
    if not 0 < train_images <= len(train.samples):
        raise ValueError(f"--train {train_images}: {source}/train.json has {len(train.samples)} usable photos")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty")
    drawn = random.Random(seed).sample(train.samples, train_images)
    counts: dict[str, int] = {}
    for s in drawn:
        for label in s.labels:
            counts[label] = counts.get(label, 0) + 1
    vocab = [label for label in ds.vocabulary.labels if label in counts]
    keep = set(vocab)
    test = []
    for s in ds.read("test").samples:
        labels = [label for label in s.labels if label in keep]
        if labels:
            test.append({"image_name": s.image_name, "image_labels": labels})
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").symlink_to((source / "images").resolve(), target_is_directory=True)
    _write_split(out / "train.json", [{"image_name": s.image_name, "image_labels": list(s.labels)} for s in drawn])
    _write_split(out / "test.json", test)
    (out / "vocabulary.txt").write_text("\n".join(vocab) + "\n")
    info = SubsetInfo(str(source), seed, train_images, len(test), len(vocab),
                      sum(1 for v in counts.values() if v <= 5))
    (out / "subset.json").write_text(json.dumps(asdict(info), indent=1))
    return info
