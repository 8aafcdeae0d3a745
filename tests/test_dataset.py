"""Tests for the Corel-layout reader (runtime.dataset)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from corel_annotate.runtime.dataset import SKIP_REASONS, CorelDataset, read_annotations
from corel_annotate.runtime.bundle.vocabulary import Vocabulary

pytestmark = pytest.mark.runtime  # run by the runtime-only install (make test-runtime), not by the first stage

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "corel5k"

LABELS = ["sky", "water", "tree", "grass"]


def write_jpeg(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path, format="JPEG")


def write_split(root: Path, split: str, samples: list[dict]) -> Path:
    path = root / f"{split}.json"
    path.write_text(json.dumps({"samples": samples}), encoding="utf-8")
    return path


def make_layout(root: Path, train: list[dict], test: list[dict] | None = None,
                labels: list[str] = LABELS, images: tuple[str, ...] = ("a.jpeg", "b.jpeg")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(images):
        write_jpeg(root / "images" / name, (40 * i, 100, 200))
    (root / "vocabulary.txt").write_text("".join(x + "\n" for x in labels), encoding="utf-8")
    write_split(root, "train", train)
    if test is not None:
        write_split(root, "test", test)
    return root


GOOD = [
    {"image_name": "a.jpeg", "image_labels": ["sky", "water"]},
    {"image_name": "b.jpeg", "image_labels": ["tree"]},
]


def test_good_samples_read_back(tmp_path):
    root = make_layout(tmp_path / "data", GOOD, test=[{"image_name": "b.jpeg", "image_labels": ["grass", "sky"]}])
    ds = CorelDataset(root)
    assert ds.vocabulary.labels == tuple(LABELS)
    assert ds.has_split("train") and ds.has_split("test") and not ds.has_split("val")

    train = ds.read("train")
    assert train.name == "train"
    assert [s.image_name for s in train.samples] == ["a.jpeg", "b.jpeg"]
    assert [s.labels for s in train.samples] == [("sky", "water"), ("tree",)]
    assert [s.path for s in train.samples] == [root / "images" / "a.jpeg", root / "images" / "b.jpeg"]
    assert all(s.path.is_file() for s in train.samples)
    with Image.open(train.samples[0].path) as im:
        assert im.size == (8, 6)
    assert train.label_ids(ds.vocabulary) == [[0, 1], [2]]
    report = train.report
    assert (report.total, report.kept, report.num_skipped, report.duplicate_labels) == (2, 2, 0, 0)
    assert report.source == str(root / "train.json")
    assert report.summary() == f"{root / 'train.json'}: 2/2 samples kept"
    assert report.to_dict() == {"source": str(root / "train.json"), "total": 2, "kept": 2,
                                "skipped": {r: 0 for r in SKIP_REASONS}}

    test = ds.read("test")
    assert [(s.image_name, s.labels) for s in test.samples] == [("b.jpeg", ("grass", "sky"))]
    assert test.label_ids(ds.vocabulary) == [[3, 0]]


def test_explicit_vocabulary_overrides_file(tmp_path):
    root = make_layout(tmp_path / "data", GOOD)
    vocab = Vocabulary(("tree", "water", "sky"))
    ds = CorelDataset(root, vocabulary=vocab)
    split = ds.read("train")
    assert split.label_ids(vocab) == [[2, 1], [0]]


def test_duplicate_labels_merged_and_counted(tmp_path):
    samples = [
        {"image_name": "a.jpeg", "image_labels": ["sky", "water", "sky", "sky"]},
        {"image_name": "b.jpeg", "image_labels": ["tree", "grass", "tree"]},
    ]
    root = make_layout(tmp_path / "data", samples)
    split = CorelDataset(root).read("train", strict=True)
    # first occurrence order is kept
    assert [s.labels for s in split.samples] == [("sky", "water"), ("tree", "grass")]
    assert split.report.duplicate_labels == 3
    assert split.report.kept == 2 and split.report.num_skipped == 0
    assert "3 repeated labels merged" in split.report.summary()


BAD_CASES = [
    ("unknown-label", {"image_name": "a.jpeg", "image_labels": ["sky", "volcano"]}, "'volcano'"),
    ("missing-image", {"image_name": "ghost.jpeg", "image_labels": ["sky"]}, "does not exist"),
    ("no-labels", {"image_name": "b.jpeg", "image_labels": []}, "empty label list"),
]


@pytest.mark.parametrize("reason,bad,_detail", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_sample_skipped_and_reported(tmp_path, reason, bad, _detail):
    root = make_layout(tmp_path / "data", GOOD + [bad])
    split = CorelDataset(root).read("train")
    assert [s.image_name for s in split.samples] == ["a.jpeg", "b.jpeg"]
    report = split.report
    assert report.total == 3 and report.kept == 2 and report.num_skipped == 1
    assert report.skipped[reason] == [bad["image_name"]]
    for other in SKIP_REASONS:
        if other != reason:
            assert report.skipped[other] == []
    summary = report.summary()
    assert "\n" not in summary
    assert summary.startswith(f"{root / 'train.json'}: 2/3 samples kept")
    assert f"1 skipped ({reason}: {bad['image_name']})" in summary
    assert report.to_dict()["skipped"][reason] == 1


@pytest.mark.parametrize("reason,bad,detail", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_sample_strict_raises_one_line(tmp_path, reason, bad, detail):
    root = make_layout(tmp_path / "data", GOOD + [bad])
    with pytest.raises(ValueError) as info:
        CorelDataset(root).read("train", strict=True)
    message = str(info.value)
    assert "\n" not in message
    assert str(root / "train.json") in message
    assert repr(bad["image_name"]) in message
    assert detail in message


def test_all_bad_kinds_together_summary(tmp_path):
    bad = [
        {"image_name": "u1.jpeg", "image_labels": ["nope"]},
        {"image_name": "m1.jpeg", "image_labels": ["sky"]},
        {"image_name": "m2.jpeg", "image_labels": ["tree"]},
        {"image_name": "m3.jpeg", "image_labels": ["tree"]},
        {"image_name": "m4.jpeg", "image_labels": ["tree"]},
        {"image_name": "e1.jpeg", "image_labels": []},
    ]
    root = make_layout(tmp_path / "data", GOOD + bad)
    report = CorelDataset(root).read("train").report
    assert report.skipped == {"unknown-label": ["u1.jpeg"], "missing-image": ["m1.jpeg", "m2.jpeg", "m3.jpeg", "m4.jpeg"],
                              "no-labels": ["e1.jpeg"]}
    assert (report.total, report.kept) == (8, 2)
    summary = report.summary()
    assert "u1.jpeg" in summary and "e1.jpeg" in summary
    assert "4 skipped (missing-image: m1.jpeg, m2.jpeg, m3.jpeg, ...)" in summary
    assert "m4.jpeg" not in summary


def test_check_images_false_keeps_missing_image(tmp_path):
    root = make_layout(tmp_path / "data", GOOD + [{"image_name": "ghost.jpeg", "image_labels": ["sky"]}])
    split = CorelDataset(root).read("train", check_images=False, strict=True)
    assert [s.image_name for s in split.samples] == ["a.jpeg", "b.jpeg", "ghost.jpeg"]
    assert split.samples[2].path == root / "images" / "ghost.jpeg"


def test_missing_images_dir_skips_everything(tmp_path):
    root = make_layout(tmp_path / "data", GOOD, images=())
    report = CorelDataset(root).read("train").report
    assert report.kept == 0
    assert report.skipped["missing-image"] == ["a.jpeg", "b.jpeg"]


@pytest.mark.parametrize("text", ["{not json", "", '{"samples": [}'])
def test_invalid_json(tmp_path, text):
    root = make_layout(tmp_path / "data", GOOD)
    (root / "train.json").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON") as info:
        CorelDataset(root).read("train")
    assert str(root / "train.json") in str(info.value)


@pytest.mark.parametrize("data", [{}, {"items": []}, {"samples": {}}, [], {"samples": "x"}],
                         ids=["empty", "other-key", "dict", "list", "string"])
def test_missing_samples_list(tmp_path, data):
    root = make_layout(tmp_path / "data", GOOD)
    (root / "train.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="'samples' list") as info:
        CorelDataset(root).read("train")
    assert str(root / "train.json") in str(info.value)


@pytest.mark.parametrize("item", [
    {"image_labels": ["sky"]},
    {"image_name": 3, "image_labels": ["sky"]},
    {"image_name": "a.jpeg"},
    {"image_name": "a.jpeg", "image_labels": "sky"},
    {"image_name": "a.jpeg", "image_labels": ["sky", 1]},
    "a.jpeg",
], ids=["no-name", "int-name", "no-labels-key", "labels-str", "labels-int", "not-object"])
def test_malformed_sample(tmp_path, item):
    root = make_layout(tmp_path / "data", GOOD + [item])
    with pytest.raises(ValueError) as info:
        CorelDataset(root).read("train")
    message = str(info.value)
    assert str(root / "train.json") in message
    assert "sample 2 " in message
    # the check happens before any sample is read, also when not strict
    with pytest.raises(ValueError):
        read_annotations(root / "train.json")


def test_missing_split_file(tmp_path):
    root = make_layout(tmp_path / "data", GOOD)
    with pytest.raises(ValueError, match="cannot read annotations") as info:
        CorelDataset(root).read("test")
    assert str(root / "test.json") in str(info.value)


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="does not exist") as info:
        CorelDataset(missing)
    assert str(missing) in str(info.value)
    # a file is not a data directory either
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="does not exist"):
        CorelDataset(tmp_path / "file")


@pytest.mark.parametrize("labels,fragment", [
    (["sky", "water", "sky"], "appears twice"),
    (["sky", "start"], "reserved"),
    (["stop", "sky"], "reserved"),
], ids=["duplicate", "start", "stop"])
def test_bad_vocabulary(tmp_path, labels, fragment):
    root = make_layout(tmp_path / "data", GOOD, labels=labels)
    with pytest.raises(ValueError, match=fragment) as info:
        CorelDataset(root)
    assert str(root / "vocabulary.txt") in str(info.value)


def test_missing_vocabulary(tmp_path):
    root = make_layout(tmp_path / "data", GOOD)
    (root / "vocabulary.txt").unlink()
    with pytest.raises(ValueError, match="vocabulary.txt"):
        CorelDataset(root)


def test_vocabulary_blank_lines_ignored(tmp_path):
    root = make_layout(tmp_path / "data", GOOD)
    (root / "vocabulary.txt").write_text("\nsky\n\n  water  \ntree\n\n", encoding="utf-8")
    assert CorelDataset(root).vocabulary.labels == ("sky", "water", "tree")


def test_real_corel5k_annotations():
    if not (SHARED / "train.json").is_file() or not (SHARED / "test.json").is_file() \
            or not (SHARED / "vocabulary.txt").is_file():
        pytest.skip(f"real Corel-5k annotations not present at {SHARED}")
    raw_vocab = [line.strip() for line in (SHARED / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    ds = CorelDataset(SHARED)
    assert len(ds.vocabulary) == 260
    assert list(ds.vocabulary.labels) == raw_vocab
    vocab = set(raw_vocab)
    expected_totals = {"train": 4500, "test": 499}
    for split_name, total in expected_totals.items():
        raw = json.loads((SHARED / f"{split_name}.json").read_text(encoding="utf-8"))["samples"]
        assert len(raw) == total
        empty = [s["image_name"] for s in raw if not s["image_labels"]]
        split = ds.read(split_name, check_images=False)
        report = split.report
        assert report.total == total
        assert report.skipped["no-labels"] == empty
        assert report.skipped["unknown-label"] == []
        assert report.skipped["missing-image"] == []
        assert report.kept == total - len(empty) == len(split.samples)
        kept_raw = [s for s in raw if s["image_labels"]]
        assert [s.image_name for s in split.samples] == [s["image_name"] for s in kept_raw]
        for sample, r in zip(split.samples, kept_raw):
            assert sample.labels == tuple(dict.fromkeys(r["image_labels"]))
            assert set(sample.labels) <= vocab
            assert 1 <= len(sample.labels) <= 5
