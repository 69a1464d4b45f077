import numpy as np
import pytest

from localq.loop.metrics import average_precision, precision_at_k, precision_recall_at


def test_average_precision_hand_computed():
    # Ranking: pos, neg, pos, neg, pos -> AP = (1/1 + 2/3 + 3/5) / 3
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    relevant = [1, 0, 1, 0, 1]
    assert average_precision(scores, relevant) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_average_precision_order_of_input_does_not_matter():
    scores = np.array([0.5, 0.9, 0.6, 0.7, 0.8])
    relevant = np.array([1, 1, 0, 1, 0])
    assert average_precision(scores, relevant) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ties_count_as_one_threshold():
    # Two items tied at the top, one relevant: precision at that threshold is 1/2.
    assert average_precision([1.0, 1.0, 0.0], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_perfect_and_empty_rankings():
    assert average_precision([3, 2, 1], [1, 1, 0]) == 1.0
    assert average_precision([3, 2, 1], [0, 0, 0]) == 0.0


@pytest.mark.slow
def test_matches_sklearn_on_random_data():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 8, size=60).astype(float)  # many ties on purpose
        relevant = rng.random(60) < 0.3
        if relevant.any():
            assert average_precision(scores, relevant) == pytest.approx(sk.average_precision_score(relevant, scores))


def test_precision_recall_at_threshold():
    scores = [0.9, 0.2, -0.1, 0.4, -0.5]
    relevant = [1, 0, 1, 1, 0]
    # predicted positive: 0.9, 0.2, 0.4 -> tp 2 of 3 predicted, 2 of 3 relevant
    assert precision_recall_at(scores, relevant, 0.0) == pytest.approx((2 / 3, 2 / 3))
    assert precision_recall_at(scores, relevant, 5.0) == (0.0, 0.0)


def test_precision_at_k():
    scores = [0.9, 0.8, 0.7, 0.6]
    relevant = [1, 0, 1, 1]
    assert precision_at_k(scores, relevant, 1) == 1.0
    assert precision_at_k(scores, relevant, 2) == 0.5
    assert precision_at_k(scores, relevant, 10) == 0.75


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        average_precision([1, 2], [1])
