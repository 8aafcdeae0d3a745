"""Tests for runtime.metrics: hand-computed cases, a torch re-implementation of the
reference formulas, brute-force average precision, properties and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from corel_annotate.runtime.evaluation.metrics import (
    EPS,
    AnnotationMetrics,
    annotation_metrics,
    average_precision,
    label_sets_to_matrix,
    mean_average_precision,
)

pytestmark = pytest.mark.runtime  # run by the runtime-only install (make test-runtime), not by the first stage

# Hand example, 3 images x 4 labels.
#   label 0: targets [1,1,1], predictions [1,0,0] -> tp=1, predicted=1, groundtruth=3
#   label 1: targets [0,1,1], predictions [0,0,0] -> never predicted: tp=0, predicted=0, groundtruth=2
#   label 2: targets [1,0,1], predictions [1,0,1] -> tp=2, predicted=2, groundtruth=2
#   label 3: targets [0,0,0], predictions [0,1,0] -> no ground truth: tp=0, predicted=1, groundtruth=0
HAND_TARGETS = np.array(
    [
        [1, 0, 1, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 0],
    ],
    dtype=np.uint8,
)
HAND_PREDICTIONS = np.array(
    [
        [1, 0, 1, 0],
        [0, 0, 0, 1],
        [0, 0, 1, 0],
    ],
    dtype=np.uint8,
)

binary_shapes = st.tuples(st.integers(1, 8), st.integers(1, 6))


@st.composite
def target_prediction_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Two random binary matrices of one shape."""
    shape = draw(binary_shapes)
    elements = st.integers(0, 1)
    t = draw(arrays(np.uint8, shape, elements=elements))
    o = draw(arrays(np.uint8, shape, elements=elements))
    return t, o


def _f1(p: float, r: float) -> float:
    return 2 * (p * r) / (p + r + 1e-7)


def test_hand_example_per_class() -> None:
    m = annotation_metrics(HAND_TARGETS, HAND_PREDICTIONS)
    # precision per label: 1/1, 0 (never predicted), 2/2, 0/1 -> (1 + 0 + 1 + 0)/4 = 1/2
    assert m.per_class_precision == pytest.approx(1 / 2, abs=1e-6)
    assert m.per_class_precision == pytest.approx(
        (1 / (1 + 1e-7) + 0 + 2 / (2 + 1e-7) + 0) / 4, rel=1e-15
    )
    # recall per label: 1/3, 0/2, 2/2, 0 (no ground truth) -> (1/3 + 0 + 1 + 0)/4 = 1/3
    assert m.per_class_recall == pytest.approx(1 / 3, abs=1e-6)
    assert m.per_class_recall == pytest.approx(
        (1 / (3 + 1e-7) + 0 + 2 / (2 + 1e-7) + 0) / 4, rel=1e-15
    )
    # F1 = 2 * (1/2 * 1/3) / (1/2 + 1/3) = (1/3) / (5/6) = 2/5
    assert m.per_class_f1 == pytest.approx(2 / 5, abs=1e-6)
    assert m.per_class_f1 == pytest.approx(
        _f1(m.per_class_precision, m.per_class_recall), rel=1e-15
    )


def test_hand_example_per_image_and_n_plus() -> None:
    m = annotation_metrics(HAND_TARGETS, HAND_PREDICTIONS)
    # tp total = 1+0+2+0 = 3, predicted total = 1+0+2+1 = 4, groundtruth total = 3+2+2+0 = 7
    assert m.per_image_precision == pytest.approx(3 / (4 + 1e-7), rel=1e-15)
    assert m.per_image_precision == pytest.approx(3 / 4, abs=1e-6)
    assert m.per_image_recall == pytest.approx(3 / (7 + 1e-7), rel=1e-15)
    assert m.per_image_recall == pytest.approx(3 / 7, abs=1e-6)
    # F1 = 2 * (3/4 * 3/7) / (3/4 + 3/7) = (9/14) / (33/28) = 6/11
    assert m.per_image_f1 == pytest.approx(6 / 11, abs=1e-6)
    # labels with tp > 0: label 0 and label 2
    assert m.n_plus == 2
    assert isinstance(m.n_plus, int)
    assert m.mean_ap is None


def test_bool_and_float_inputs_match_uint8() -> None:
    ref = annotation_metrics(HAND_TARGETS, HAND_PREDICTIONS)
    assert annotation_metrics(HAND_TARGETS.astype(bool), HAND_PREDICTIONS.astype(bool)) == ref
    assert annotation_metrics(HAND_TARGETS.astype(float), HAND_PREDICTIONS.astype(np.int64)) == ref


def test_all_zero_predictions_give_zero_not_nan() -> None:
    m = annotation_metrics(HAND_TARGETS, np.zeros_like(HAND_TARGETS))
    values = [v for k, v in m.to_dict().items() if k != "mAP"]
    assert values == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0]


def test_to_dict_and_format_table() -> None:
    m = annotation_metrics(HAND_TARGETS, HAND_PREDICTIONS)
    d = m.to_dict()
    assert list(d) == [
        "per_class/precision",
        "per_class/recall",
        "per_class/f1",
        "per_image/precision",
        "per_image/recall",
        "per_image/f1",
        "N+",
        "mAP",
    ]
    assert d["N+"] == 2 and d["mAP"] is None
    assert d["per_image/precision"] == m.per_image_precision
    lines = m.format_table().splitlines()
    assert len(lines) == 8
    assert [line.split()[0] for line in lines] == list(d)
    assert lines[-1].split()[-1] == "n/a"
    assert lines[-2].split()[-1] == "2"
    assert lines[3].split()[-1] == "0.7500"
    assert len({len(line) for line in lines}) == 1
    with_map = AnnotationMetrics(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 7, mean_ap=0.25)
    assert with_map.format_table().splitlines()[-1].split()[-1] == "0.2500"


def _torch_reference(t_np: np.ndarray, o_np: np.ndarray) -> dict[str, float]:
    """The reference formulas, written independently in torch (float64)."""
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(t_np.astype(np.float64))
    o = torch.from_numpy(o_np.astype(np.float64))
    eps = 1e-7
    tp = (t * o).sum(dim=0)
    pcp = (tp / (o.sum(dim=0) + eps)).mean()
    pcr = (tp / (t.sum(dim=0) + eps)).mean()
    pip = (t * o).sum() / (o.sum() + eps)
    pir = (t * o).sum() / (t.sum() + eps)
    return {
        "per_class/precision": pcp.item(),
        "per_class/recall": pcr.item(),
        "per_class/f1": (2 * (pcp * pcr) / (pcp + pcr + eps)).item(),
        "per_image/precision": pip.item(),
        "per_image/recall": pir.item(),
        "per_image/f1": (2 * (pip * pir) / (pip + pir + eps)).item(),
        "N+": int((tp > 0).sum().item()),
    }


@pytest.mark.full
@pytest.mark.parametrize("seed", range(10))
def test_agrees_with_torch_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, l = rng.integers(1, 60), rng.integers(1, 40)
    density_t, density_o = rng.uniform(0.05, 0.6, size=2)
    t = (rng.random((n, l)) < density_t).astype(np.uint8)
    o = (rng.random((n, l)) < density_o).astype(np.uint8)
    expected = _torch_reference(t, o)
    got = annotation_metrics(t, o).to_dict()
    for key, value in expected.items():
        if key == "N+":
            assert got[key] == value
        else:
            assert got[key] == pytest.approx(value, abs=1e-12, rel=0), key


@pytest.mark.full
def test_agrees_with_torch_reference_on_hand_example() -> None:
    expected = _torch_reference(HAND_TARGETS, HAND_PREDICTIONS)
    got = annotation_metrics(HAND_TARGETS, HAND_PREDICTIONS).to_dict()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12, rel=0), key


def _brute_force_ap(t: np.ndarray, s: np.ndarray) -> list[float]:
    """AP per label by explicit rank counting; ties ordered by row index (stable)."""
    n, l = t.shape
    result = []
    for j in range(l):
        positives = [i for i in range(n) if t[i, j]]
        if not positives:
            result.append(math.nan)
            continue

        def ahead_or_same(k: int, i: int) -> bool:
            return s[k, j] > s[i, j] or (s[k, j] == s[i, j] and k <= i)

        precisions = []
        for i in positives:
            rank = sum(1 for k in range(n) if ahead_or_same(k, i))
            hits = sum(1 for k in positives if ahead_or_same(k, i))
            precisions.append(hits / rank)
        result.append(sum(precisions) / len(precisions))
    return result


def test_average_precision_hand_ranking() -> None:
    # Descending scores rank images as 0.9(+), 0.8(-), 0.7(+), 0.6(-), 0.5(+):
    # precision at the positives = 1/1, 2/3, 3/5 -> AP = (1 + 2/3 + 3/5) / 3 = 34/45.
    # Rows are given shuffled so the ranking must be computed from the scores.
    scores = np.array([[0.6], [0.9], [0.5], [0.8], [0.7]])
    targets = np.array([[0], [1], [1], [0], [1]])
    ap = average_precision(targets, scores)
    assert ap.shape == (1,)
    assert ap[0] == pytest.approx(34 / 45, abs=1e-15)
    assert mean_average_precision(targets, scores) == pytest.approx(34 / 45, abs=1e-15)


def test_average_precision_ties_are_stable() -> None:
    # Equal scores keep row order: the negative in row 0 is ranked first -> AP = 1/2;
    # with the positive in row 0 it is ranked first -> AP = 1.
    scores = np.array([[0.5, 0.5], [0.5, 0.5]])
    targets = np.array([[0, 1], [1, 0]])
    np.testing.assert_allclose(average_precision(targets, scores), [0.5, 1.0], rtol=0, atol=1e-15)


def test_average_precision_no_positive_is_nan_and_excluded() -> None:
    # label 0: ranking (+,-) -> AP 1; label 1: no positive -> NaN; label 2: ranking (-,+) -> AP 1/2
    scores = np.array([[0.9, 0.3, 0.8], [0.2, 0.4, 0.1]])
    targets = np.array([[1, 0, 0], [0, 0, 1]])
    ap = average_precision(targets, scores)
    assert ap[0] == 1.0 and math.isnan(ap[1]) and ap[2] == 0.5
    assert mean_average_precision(targets, scores) == pytest.approx(0.75, abs=1e-15)
    m = annotation_metrics(targets, targets, scores=scores)
    assert m.mean_ap == pytest.approx(0.75, abs=1e-15)
    assert math.isnan(mean_average_precision(np.zeros((2, 3)), scores))


def test_perfect_scores_give_map_one() -> None:
    rng = np.random.default_rng(0)
    t = (rng.random((30, 12)) < 0.3).astype(np.uint8)
    t[0] = 1
    scores = t + rng.random(t.shape) * 0.5
    assert mean_average_precision(t, scores) == 1.0
    assert annotation_metrics(t, t, scores=scores).mean_ap == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, l = rng.integers(1, 25), rng.integers(1, 8)
    t = (rng.random((n, l)) < 0.4).astype(np.uint8)
    scores = rng.integers(0, 4, size=(n, l)).astype(float)  # few distinct values -> many ties
    np.testing.assert_allclose(
        average_precision(t, scores), _brute_force_ap(t, scores), rtol=0, atol=1e-12
    )


@settings(max_examples=60, deadline=None)
@given(pair=target_prediction_pairs(), data=st.data())
def test_average_precision_brute_force_property(
    pair: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    t, _ = pair
    scores = data.draw(arrays(np.float64, t.shape, elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])))
    np.testing.assert_allclose(
        average_precision(t, scores), _brute_force_ap(t, scores), rtol=0, atol=1e-12
    )


@settings(max_examples=100, deadline=None)
@given(pair=target_prediction_pairs())
def test_bounds(pair: tuple[np.ndarray, np.ndarray]) -> None:
    t, o = pair
    m = annotation_metrics(t, o)
    for key, value in m.to_dict().items():
        if key in ("N+", "mAP"):
            continue
        assert 0.0 <= value <= 1.0, key
    assert 0 <= m.n_plus <= t.shape[1]


@settings(max_examples=100, deadline=None)
@given(pair=target_prediction_pairs())
def test_n_plus_brute_force(pair: tuple[np.ndarray, np.ndarray]) -> None:
    t, o = pair
    n, l = t.shape
    expected = sum(1 for j in range(l) if any(t[i, j] and o[i, j] for i in range(n)))
    assert annotation_metrics(t, o).n_plus == expected


def _assert_same_metrics(a: AnnotationMetrics, b: AnnotationMetrics) -> None:
    for (key, va), vb in zip(a.to_dict().items(), b.to_dict().values()):
        if va is None:
            assert vb is None, key
        else:
            assert vb == pytest.approx(va, abs=1e-12, rel=0, nan_ok=True), key


@settings(max_examples=100, deadline=None)
@given(pair=target_prediction_pairs(), data=st.data())
def test_permuting_images_leaves_metrics_unchanged(
    pair: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    t, o = pair
    n = t.shape[0]
    perm = np.array(data.draw(st.permutations(range(n))), dtype=np.intp)
    # distinct scores so that the ranking (and thus AP) has no ties to break by row order
    scores = np.random.default_rng(0).permutation(t.size).reshape(t.shape).astype(float)
    before = annotation_metrics(t, o, scores=scores)
    after = annotation_metrics(t[perm], o[perm], scores=scores[perm])
    _assert_same_metrics(before, after)


@settings(max_examples=100, deadline=None)
@given(pair=target_prediction_pairs(), data=st.data())
def test_permuting_labels_leaves_metrics_unchanged(
    pair: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    t, o = pair
    l = t.shape[1]
    perm = np.array(data.draw(st.permutations(range(l))), dtype=np.intp)
    scores = np.random.default_rng(1).random(t.shape)
    before = annotation_metrics(t, o, scores=scores)
    after = annotation_metrics(t[:, perm], o[:, perm], scores=scores[:, perm])
    _assert_same_metrics(before, after)
    ap_before = average_precision(t, scores)
    ap_after = average_precision(t[:, perm], scores[:, perm])
    np.testing.assert_array_equal(ap_before[perm], ap_after)


@settings(max_examples=100, deadline=None)
@given(pair=target_prediction_pairs())
def test_perfect_predictions(pair: tuple[np.ndarray, np.ndarray]) -> None:
    t, _ = pair
    assume(t.sum() > 0)
    m = annotation_metrics(t, t)
    assert m.per_image_precision == pytest.approx(1.0, abs=1e-6)
    assert m.per_image_recall == pytest.approx(1.0, abs=1e-6)
    assert m.per_image_f1 == pytest.approx(1.0, abs=1e-6)
    assert m.n_plus == int((t.sum(axis=0) > 0).sum())


def test_eps_constant() -> None:
    assert EPS == 1e-7


@pytest.mark.parametrize(
    ("targets", "predictions", "match"),
    [
        (np.zeros((2, 3)), np.zeros((3, 2)), "shape"),
        (np.zeros(3), np.zeros(3), "2-D"),
        (np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), "2-D"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "N >= 1"),
        (np.array([[0, 2]]), np.array([[0, 1]]), "0/1"),
        (np.array([[0, 1]]), np.array([[0.5, 1.0]]), "0/1"),
        (np.array([[0, 1]]), np.array([[-1, 1]]), "0/1"),
        (np.array([["a", "b"]]), np.array([[0, 1]]), "dtype"),
    ],
)
def test_annotation_metrics_validation(
    targets: np.ndarray, predictions: np.ndarray, match: str
) -> None:
    with pytest.raises(ValueError, match=match) as excinfo:
        annotation_metrics(targets, predictions)
    assert "\n" not in str(excinfo.value)


def test_scores_validation() -> None:
    t = np.array([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="scores shape"):
        average_precision(t, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        average_precision(t, np.array([[0.1, np.nan], [0.2, 0.3]]))
    with pytest.raises(ValueError, match="scores shape"):
        annotation_metrics(t, t, scores=np.zeros(2))
    with pytest.raises(ValueError, match="0/1"):
        mean_average_precision(np.array([[3, 0], [0, 1]]), np.zeros((2, 2)))


def test_label_sets_to_matrix() -> None:
    m = label_sets_to_matrix([[0, 2], (), {3, 3}, [np.int64(1), 1]], num_labels=4)
    assert m.dtype == np.uint8
    np.testing.assert_array_equal(
        m,
        [
            [1, 0, 1, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 1],
            [0, 1, 0, 0],
        ],
    )
    assert label_sets_to_matrix([], num_labels=3).shape == (0, 3)


@pytest.mark.parametrize(
    ("label_sets", "num_labels", "match"),
    [
        ([[0, 4]], 4, "out of range"),
        ([[1], [-1]], 4, "out of range"),
        ([[1.5]], 4, "not an integer"),
        ([[0]], -1, "num_labels"),
    ],
)
def test_label_sets_to_matrix_errors(label_sets: list, num_labels: int, match: str) -> None:
    with pytest.raises(ValueError, match=match) as excinfo:
        label_sets_to_matrix(label_sets, num_labels)
    assert "\n" not in str(excinfo.value)
