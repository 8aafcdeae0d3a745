"""Tests for GloVe label embeddings (training.glove)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corel_annotate.training.glove import label_embeddings, read_glove

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "corel5k"

TABLE = {
    "sky": [0.1, 0.2, 0.3, 0.4],
    "f": [1.0, -1.0, 0.5, 2.0],
    "16": [3.0, 1.0, -0.5, 0.0],
    "close": [0.25, 0.5, 0.75, 1.0],
    "up": [-0.25, 0.0, 0.25, 0.5],
    "white": [2.0, 2.0, 2.0, 2.0],
    "tailed": [0.0, -4.0, 1.0, 3.0],
    "horse": [0.9, 0.8, 0.7, 0.6],
    "butterfly": [-0.3, 0.3, -0.3, 0.3],
    "water": [0.5, 0.5, -0.5, -0.5],
    "city": [0.0, 0.1, 0.0, -0.1],
    "glass": [0.6, -0.6, 0.2, -0.2],
    "unused": [9.0, 9.0, 9.0, 9.0],
}


def write_glove(path: Path, table: dict, extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [w + " " + " ".join(repr(float(x)) for x in v) for w, v in table.items()]
    path.write_text("\n".join(lines + list(extra_lines)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def glove_file(tmp_path):
    return write_glove(tmp_path / "glove.txt", TABLE)


def vec(word):
    return np.asarray(TABLE[word], dtype=np.float32)


def test_read_glove_all_and_filtered(glove_file):
    table = read_glove(glove_file)
    assert set(table) == set(TABLE)
    for word, values in TABLE.items():
        assert table[word].dtype == np.float32
        np.testing.assert_array_equal(table[word], np.asarray(values, dtype=np.float32))
    some = read_glove(glove_file, {"sky", "horse", "absent"})
    assert set(some) == {"sky", "horse"}


def test_read_glove_first_occurrence_wins_and_blank_lines(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("sky 1 2\n\nsky 3 4\nsea 5 6 \r\n", encoding="utf-8")
    table = read_glove(path)
    np.testing.assert_array_equal(table["sky"], [1.0, 2.0])
    np.testing.assert_array_equal(table["sea"], [5.0, 6.0])


def test_exact_hits(glove_file):
    words = ["sky", "water", "butterfly"]
    result = label_embeddings(glove_file, words)
    assert result.dim == 4
    assert result.vectors.shape == (3, 4)
    assert result.exact == words
    assert result.fallback == {} and result.missing == []
    for row, word in enumerate(words):
        np.testing.assert_array_equal(result.vectors[row], vec(word))


@pytest.mark.parametrize("label,parts", [
    ("f-16", ["f", "16"]),
    ("close-up", ["close", "up"]),
    ("white-tailed", ["white", "tailed"]),
])
def test_hyphenated_labels_use_mean_of_parts(glove_file, label, parts):
    result = label_embeddings(glove_file, ["sky", label])
    expected = (vec(parts[0]) + vec(parts[1])) / 2.0
    np.testing.assert_allclose(result.vectors[1], expected, rtol=1e-6, atol=1e-7)
    assert result.fallback == {label: "+".join(parts)}
    assert result.exact == ["sky"] and result.missing == []


def test_upper_case_falls_back_to_lower(glove_file):
    result = label_embeddings(glove_file, ["Sky"])
    np.testing.assert_array_equal(result.vectors[0], vec("sky"))
    assert result.fallback == {"Sky": "sky"}


@pytest.mark.parametrize("plural,singular", [("horses", "horse"), ("butterflies", "butterfly"), ("cities", "city"), ("glasses", "glass")])
def test_plural_falls_back_to_singular(glove_file, plural, singular):
    result = label_embeddings(glove_file, [plural])
    np.testing.assert_array_equal(result.vectors[0], vec(singular))
    assert result.fallback == {plural: singular}
    assert result.missing == [] and result.exact == []


def test_missing_word_gets_finite_vector(glove_file):
    words = ["sky", "zzyzx", "qwerty-uiop", "horse"]
    result = label_embeddings(glove_file, words, seed=3)
    assert result.missing == ["zzyzx", "qwerty-uiop"]
    assert result.exact == ["sky", "horse"]
    assert result.vectors.shape == (4, 4)
    assert np.all(np.isfinite(result.vectors))
    assert np.any(result.vectors[1] != 0) and np.any(result.vectors[2] != 0)
    assert not np.array_equal(result.vectors[1], result.vectors[2])
    np.testing.assert_array_equal(result.vectors[0], vec("sky"))
    np.testing.assert_array_equal(result.vectors[3], vec("horse"))
    # the random vectors are reproducible from the seed
    again = label_embeddings(glove_file, words, seed=3)
    np.testing.assert_array_equal(again.vectors, result.vectors)
    assert "2 missing (zzyzx, qwerty-uiop)" in result.summary()


def test_partial_hyphen_parts_is_missing(glove_file):
    # only one part has a vector: the mean is not taken from a single part
    result = label_embeddings(glove_file, ["sky-zzyzx"])
    assert result.missing == ["sky-zzyzx"]
    assert not np.array_equal(result.vectors[0], vec("sky"))


def test_no_vector_at_all_raises(glove_file):
    with pytest.raises(ValueError, match="no vector"):
        label_embeddings(glove_file, ["zzyzx", "qwerty"])


def test_dimension_mismatch_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("sky 1 2 3\nother 1 2\nsea 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_glove(path)
    message = str(info.value)
    assert f"{path}:2:" in message
    assert "2 values" in message and "3" in message
    with pytest.raises(ValueError) as info:
        label_embeddings(path, ["sky", "sea"])
    assert f"{path}:3:" in str(info.value)


def test_non_numeric_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("sky 1 2\nsea 1 x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a GloVe line") as info:
        read_glove(path)
    assert f"{path}:2:" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read GloVe file"):
        read_glove(tmp_path / "absent.txt")


def test_real_corel5k_glove():
    glove = SHARED / "glove.corel5k.300d.txt"
    vocab_file = SHARED / "vocabulary.txt"
    if not glove.is_file() or not vocab_file.is_file():
        pytest.skip(f"real Corel-5k GloVe file or vocabulary not present under {SHARED}")
    labels = [line.strip() for line in vocab_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(labels) == 260
    words = labels + ["start", "stop"]
    result = label_embeddings(glove, words)
    assert result.dim == 300
    assert result.vectors.shape == (262, 300)
    assert result.missing == []
    assert len(result.exact) + len(result.fallback) == 262
    assert np.all(np.isfinite(result.vectors))
    # every row is a real vector, none left at zero
    assert np.all(np.abs(result.vectors).sum(axis=1) > 0)
