"""Tests for the synthetic Corel-like dataset generator."""
from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from corel_annotate.training.cli.synth import app
from corel_annotate.training.synth import (
    COLORS,
    SynthConfig,
    generate,
    home_scenes,
    label_names,
    render,
    plan,
    signatures,
)

SMALL = SynthConfig(images=40, labels=8, scenes=4, image_size=64, max_labels=4,
                    test_fraction=0.25, seed=7)


def samples(out: Path, split: str) -> list[dict]:
    return json.loads((out / f"{split}.json").read_text(encoding="utf-8"))["samples"]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "small"
    return out, generate(out, SMALL)


def test_layout_is_readable_with_plain_json_and_pil(small: tuple[Path, dict]) -> None:
    out, summary = small
    vocabulary = (out / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    assert vocabulary == label_names(SMALL.labels)
    train, test = samples(out, "train"), samples(out, "test")
    assert (len(train), len(test)) == (30, 10)
    assert summary["train_images"] == 30 and summary["test_images"] == 10
    names = [s["image_name"] for s in train + test]
    assert len(set(names)) == SMALL.images
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(names)
    for sample in train + test:
        labels = sample["image_labels"]
        assert SMALL.min_labels <= len(labels) <= SMALL.max_labels
        assert len(set(labels)) == len(labels)
        assert set(labels) <= set(vocabulary)
        with Image.open(out / "images" / sample["image_name"]) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size == (SMALL.image_size, SMALL.image_size)
    mean = np.mean([len(s["image_labels"]) for s in train + test])
    assert summary["mean_labels_per_image"] == pytest.approx(mean, abs=1e-3)
    assert json.loads((out / "synth_config.json").read_text()) == json.loads(SMALL.to_json())


def test_every_label_is_in_train_at_least_three_times(small: tuple[Path, dict]) -> None:
    out, summary = small
    counts = Counter(label for s in samples(out, "train") for label in s["image_labels"])
    assert set(counts) == set(label_names(SMALL.labels))
    assert min(counts.values()) >= 3
    assert summary["labels_missing_from_train"] == 0


def test_same_seed_same_bytes_other_seed_other_labels(small: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = small
    again = tmp_path / "again"
    generate(again, SMALL)
    for name in ("train.json", "test.json", "vocabulary.txt", "synth_config.json"):
        assert (out / name).read_bytes() == (again / name).read_bytes()
    for name in ("1.jpeg", "2.jpeg", "40.jpeg"):
        assert (out / "images" / name).read_bytes() == (again / "images" / name).read_bytes()
    other = tmp_path / "other"
    generate(other, SynthConfig(**{**json.loads(SMALL.to_json()), "seed": 8}))
    assert samples(other, "train") != samples(out, "train")


def test_existing_output_is_idempotent_or_refused(small: tuple[Path, dict]) -> None:
    out, summary = small
    train = out / "train.json"
    before = train.stat().st_mtime_ns
    assert generate(out, SMALL) == summary
    assert train.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="already holds a dataset"):
        generate(out, SynthConfig(**{**json.loads(SMALL.to_json()), "seed": 99}))


@pytest.mark.parametrize("changes", [
    {"labels": 1}, {"labels": 301}, {"scenes": 0}, {"image_size": 8},
    {"min_labels": 0}, {"min_labels": 3, "max_labels": 2}, {"min_labels": 3, "labels": 2},
    {"test_fraction": 0.0}, {"test_fraction": 1.0}, {"images": 1},
])
def test_invalid_configs_are_refused(changes: dict, tmp_path: Path) -> None:
    config = SynthConfig(**{**json.loads(SMALL.to_json()), **changes})
    with pytest.raises(ValueError) as info:
        generate(tmp_path / "out", config)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_labels_cooccur_through_their_home_scene(tmp_path: Path) -> None:
    config = SynthConfig(images=300, labels=12, scenes=4, image_size=32, seed=1)
    out = tmp_path / "cooc"
    generate(out, config)
    index = {name: i for i, name in enumerate(label_names(config.labels))}
    together = np.zeros((config.labels, config.labels))
    for sample in samples(out, "train") + samples(out, "test"):
        ids = [index[label] for label in sample["image_labels"]]
        for a, b in combinations(ids, 2):
            together[a, b] += 1
            together[b, a] += 1
    home = home_scenes(config.labels, config.scenes)
    same = [together[a, b] for a, b in combinations(range(config.labels), 2) if home[a] == home[b]]
    cross = [together[a, b] for a, b in combinations(range(config.labels), 2) if home[a] != home[b]]
    assert np.mean(same) > 5 * np.mean(cross)
    assert min(same) > max(cross)


def test_signatures_are_distinct_and_names_are_clean() -> None:
    table = signatures(260)
    assert len(set(table)) == 260
    for a, b in combinations(table[:10], 2):
        assert a.color != b.color and a.shape != b.shape
    names = label_names(260)
    assert len(set(names)) == 260
    assert names[:3] == ["sky", "water", "tree"] and names[40] == "label-041"
    assert all(n == n.lower() and not any(c.isspace() for c in n) for n in names)
    assert not {"start", "stop"} & set(names)


def test_each_label_paints_its_own_colour() -> None:
    config = SynthConfig(images=60, labels=10, scenes=2, image_size=64, min_labels=1, max_labels=1, seed=2)
    train, _ = plan(config)
    table = signatures(config.labels)
    palette = np.array(COLORS[:config.labels], dtype=np.float64)
    for number, record in train:
        (label,) = record.labels
        pixels = np.asarray(render(record, config, number, table), dtype=np.float64).reshape(-1, 3)
        near = np.linalg.norm(pixels[:, None, :] - palette[None, :, :], axis=2) < 40
        share = near.mean(axis=0)
        assert share[label] > 0.005, f"label {label} colour missing from image {number}"
        assert share.argmax() == label, f"image {number} of label {label} is mostly colour {share.argmax()}"


def test_cli_writes_dataset_and_rejects_bad_labels(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, [str(out), "--images", "20", "--labels", "5", "--seed", "3",
                                 "--image-size", "48", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / "train.json").exists() and (out / "vocabulary.txt").exists()
    assert len(list((out / "images").glob("*.jpeg"))) == 20
    assert json.loads(result.stdout.strip().splitlines()[-1])["vocabulary_size"] == 5
    bad = runner.invoke(app, [str(tmp_path / "bad"), "--images", "20", "--labels", "1"])
    assert bad.exit_code != 0
    message = bad.stderr.strip()
    assert len(message.splitlines()) == 1 and "labels" in message
    assert not (tmp_path / "bad").exists()
