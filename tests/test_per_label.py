"""The per-label view (F1 by training frequency, never-predicted labels) and the long-tail subset."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from corel_annotate.benchmarks.cli import app
from corel_annotate.benchmarks.per_label import label_scores, per_label_view


def test_label_scores_by_hand():
    targets = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 0]])
    predictions = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    s = label_scores(targets, predictions)
    # label 0: tp 1, predicted 1, positives 2; label 1: tp 1, predicted 2, positives 1; label 2: never predicted
    assert s["precision"].tolist() == [1.0, 0.5, 0.0]
    assert s["recall"].tolist() == [0.5, 1.0, 0.0]
    assert s["f1"].tolist() == pytest.approx([2 / 3, 2 / 3, 0.0])


def test_buckets_and_never_predicted():
    vocab = ["rare", "few", "common", "absent"]
    train_counts = [3, 12, 500, 2]  # buckets 1-5, 6-20, 101+, 1-5 ("absent" has no test photo)
    targets = np.array([[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0]])
    predictions = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 1, 0]])
    view = per_label_view(train_counts, targets, predictions, vocab)
    by = {b["bucket"]: b for b in view["buckets"]}
    assert by["1-5"]["labels"] == 2 and by["1-5"]["labels_in_test"] == 1
    assert by["1-5"]["f1"] == 0.0 and by["1-5"]["never_predicted"] == 1
    assert by["6-20"]["f1"] == pytest.approx(2 / 3) and by["6-20"]["never_predicted"] == 0
    assert by["21-100"]["labels"] == 0 and by["21-100"]["f1"] is None
    assert by["101+"]["f1"] == 1.0 and by["101+"]["test_positives"] == 3
    assert view["never_predicted"] == [{"label": "rare", "train": 3, "test": 1}]
    assert view["labels_in_test"] == 3 and view["labels_predicted"] == 3


def test_per_label_view_rejects_mismatched_counts():
    with pytest.raises(ValueError, match="do not match"):
        per_label_view([1, 2], np.zeros((2, 3)), np.zeros((2, 3)), ["a", "b", "c"])


def test_subset_keeps_the_drawn_photos_labels(synth_data, tmp_path):
    out = tmp_path / "sub"
    result = CliRunner().invoke(app, ["subset", str(synth_data), str(out), "--train", "12", "--seed", "3"])
    assert result.exit_code == 0, result.output
    train = json.loads((out / "train.json").read_text())["samples"]
    vocab = (out / "vocabulary.txt").read_text().split()
    source_train = {s["image_name"]: s["image_labels"]
                    for s in json.loads((synth_data / "train.json").read_text())["samples"]}
    assert len(train) == 12 and all(source_train[s["image_name"]] == s["image_labels"] for s in train)
    assert set(vocab) == {label for s in train for label in s["image_labels"]}
    source_vocab = (synth_data / "vocabulary.txt").read_text().split()
    assert vocab == [v for v in source_vocab if v in vocab]  # the source's order
    for s in json.loads((out / "test.json").read_text())["samples"]:
        assert s["image_labels"] and set(s["image_labels"]) <= set(vocab)
        assert (out / "images" / s["image_name"]).is_file()
    again = CliRunner().invoke(app, ["subset", str(synth_data), str(out), "--train", "12"])
    assert again.exit_code == 2 and "not empty" in again.output


def test_subset_refuses_more_photos_than_the_split_has(synth_data, tmp_path):
    result = CliRunner().invoke(app, ["subset", str(synth_data), str(tmp_path / "s"), "--train", "100000"])
    assert result.exit_code == 2 and "usable photos" in result.output
