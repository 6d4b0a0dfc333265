"""The eval-set metrics' 95% intervals, checked against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from learners.metrics import (
    BOOTSTRAP_RESAMPLES,
    _resampled_rates,
    changes_within_noise,
    classification_intervals,
    classification_metrics,
    multilabel_intervals,
    multilabel_metrics,
    wilson_interval,
)


def test_wilson_interval_matches_the_formula_worked_by_hand() -> None:
    # 8 of 10: p = 0.8, z = 1.959964; centre = (p + z^2/2n) / (1 + z^2/n), half = z/(1 + z^2/n) sqrt(p(1-p)/n + z^2/4n^2)
    z = 1.959963984540054
    centre = (0.8 + z**2 / 20) / (1 + z**2 / 10)
    half = z / (1 + z**2 / 10) * math.sqrt(0.8 * 0.2 / 10 + z**2 / 400)
    assert wilson_interval(8, 10) == pytest.approx([centre - half, centre + half])
    assert wilson_interval(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-4)  # the textbook values
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(0, 0) is None


def test_bootstrap_intervals_are_the_percentiles_of_the_resampled_metric() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 40)
    y_pred = np.where(rng.random(40) < 0.7, y_true, rng.integers(0, 3, 40))
    intervals = classification_intervals(y_true, y_pred, 3, seed=5)
    draws = np.random.default_rng(5)
    values = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        rows = draws.integers(0, 40, 40)
        values.append(classification_metrics(y_true[rows], y_pred[rows], 3)["macro_f1"])
    assert intervals["macro_f1"] == pytest.approx(list(np.percentile(values, [2.5, 97.5])))
    accuracy = classification_metrics(y_true, y_pred, 3)["accuracy"]
    low, high = intervals["accuracy"]
    assert low < accuracy < high and intervals["accuracy"] == wilson_interval(int((y_true == y_pred).sum()), 40)
    low, high = intervals["balanced_accuracy"]
    assert low < classification_metrics(y_true, y_pred, 3)["balanced_accuracy"] < high


def test_multilabel_intervals_cover_the_metrics_and_shrink_with_more_items() -> None:
    rng = np.random.default_rng(2)

    def data(n):
        y = (rng.random((n, 4)) < 0.3).astype(int)
        scores = y * 0.3 + rng.random((n, 4)) * 0.7  # overlapping: no metric is perfect
        return y, scores

    small, large = data(30), data(600)
    for y, scores in (small, large):
        intervals = multilabel_intervals(y, scores)
        assert all(0.0 <= intervals[name][0] <= intervals[name][1] <= 1.0 for name in ("mAP", "micro_f1", "macro_f1"))
    metrics, intervals = multilabel_metrics(*large), multilabel_intervals(*large)
    for name in ("mAP", "micro_f1", "macro_f1"):  # with 600 items the bootstrap's bias is far inside the interval
        assert intervals[name][0] <= metrics[name] <= intervals[name][1]
    width = lambda i: i[1] - i[0]  # noqa: E731
    assert width(multilabel_intervals(*large)["mAP"]) < width(multilabel_intervals(*small)["mAP"])


def test_changes_within_noise_says_when_the_intervals_are_wider_than_the_changes() -> None:
    assert changes_within_noise([0.5, 0.6, 0.55], [[0.2, 0.8], [0.3, 0.9], [0.25, 0.85]]) == pytest.approx((0.6, 0.1))
    assert changes_within_noise([0.2, 0.9], [[0.15, 0.25], [0.85, 0.95]]) is None
    assert changes_within_noise([0.5], [[0.2, 0.8]]) is None


def test_resampled_rates_equal_classification_metrics_row_by_row() -> None:
    """The bootstrap counts every resample at once; each row's balanced accuracy and macro F1 are those of
    classification_metrics on that resample, also with classes missing from the truth or the predictions."""
    rng = np.random.default_rng(3)
    for n, k in ((1, 2), (7, 5), (60, 10), (300, 37)):
        y_true = rng.integers(0, k, (20, n))
        y_pred = np.where(rng.random((20, n)) < 0.6, y_true, rng.integers(0, k, (20, n)))
        balanced, macro_f1 = _resampled_rates(y_true, y_pred, k)
        for row in range(20):
            expected = classification_metrics(y_true[row], y_pred[row], k)
            assert balanced[row] == pytest.approx(expected["balanced_accuracy"], abs=1e-12)
            assert macro_f1[row] == pytest.approx(expected["macro_f1"], abs=1e-12)
