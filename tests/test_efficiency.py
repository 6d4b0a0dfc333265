"""Label-efficiency math on hand-made curves whose answers are worked out in the comments."""
from __future__ import annotations

import numpy as np
import pytest

from learners.efficiency import auc, label_savings, labels_to_reach, mean_and_se

LABELS = np.array([10, 20, 40])
VALUES = np.array([0.5, 0.7, 0.8])


def test_auc_is_the_average_height() -> None:
    # trapezoids: (0.5 + 0.7) / 2 * 10 = 6 and (0.7 + 0.8) / 2 * 20 = 15; 21 / (40 - 10) = 0.7
    assert auc(LABELS, VALUES) == pytest.approx(0.7)
    assert auc(np.array([5, 15]), np.array([0.3, 0.3])) == pytest.approx(0.3)  # flat curve: its value
    assert auc(np.array([7]), np.array([0.42])) == pytest.approx(0.42)  # one point: its value


def test_labels_to_reach_interpolates_between_rounds() -> None:
    # 0.75 lies halfway between 0.7 (20 labels) and 0.8 (40 labels): 20 + 0.5 * 20 = 30
    assert labels_to_reach(LABELS, VALUES, 0.75) == pytest.approx(30.0)
    assert labels_to_reach(LABELS, VALUES, 0.7) == pytest.approx(20.0)  # exactly on a round
    assert labels_to_reach(LABELS, VALUES, 0.3) == 10.0  # reached at the first round
    assert labels_to_reach(LABELS, VALUES, 0.81) is None  # never reached
    # the first crossing counts even if the curve dips again later: 0.6 is first reached at 10 + 0.5 * 10 = 15
    assert labels_to_reach(np.array([10, 20, 30]), np.array([0.5, 0.7, 0.55]), 0.6) == pytest.approx(15.0)


def test_label_savings_against_random() -> None:
    random = (np.array([10, 20, 40]), np.array([0.5, 0.6, 0.8]))  # final 0.8, reached at 40 labels
    # strategy: 0.8 lies 2/3 of the way from 0.6 (10 labels) to 0.9 (20 labels): 10 + 20/3 = 16.67 labels;
    # savings 1 - 16.67 / 40 = 0.5833
    strategy = (np.array([10, 20, 40]), np.array([0.6, 0.9, 0.95]))
    assert label_savings(strategy, random) == pytest.approx(1 - (10 + 20 / 3) / 40)
    assert label_savings(random, random) == pytest.approx(0.0)
    # a strategy that reaches 0.8 only at 60 labels "saves" 1 - 60 / 40 = -0.5
    slower = (np.array([10, 20, 60]), np.array([0.4, 0.5, 0.8]))
    assert label_savings(slower, random) == pytest.approx(-0.5)
    never = (np.array([10, 20, 40]), np.array([0.5, 0.6, 0.7]))
    assert label_savings(never, random) is None


def test_mean_and_se_on_a_shared_grid() -> None:
    curves = [(np.array([10, 20]), np.array([0.5, 0.7])), (np.array([10, 20]), np.array([0.7, 0.9]))]
    labels, mean, se = mean_and_se(curves)
    np.testing.assert_array_equal(labels, [10, 20])
    np.testing.assert_allclose(mean, [0.6, 0.8])
    # sample sd of (0.5, 0.7) = 0.1414; / sqrt(2) = 0.1
    np.testing.assert_allclose(se, [0.1, 0.1])


def test_mean_and_se_interpolates_onto_the_union_grid_without_extrapolating() -> None:
    first = (np.array([10, 30]), np.array([0.4, 0.8]))  # at 20 labels: 0.6 by interpolation
    second = (np.array([10, 20]), np.array([0.6, 0.6]))  # stops at 20: does not count at 30
    labels, mean, se = mean_and_se([first, second])
    np.testing.assert_array_equal(labels, [10, 20, 30])
    np.testing.assert_allclose(mean, [0.5, 0.6, 0.8])
    # at 10: (0.4, 0.6) -> se 0.1; at 20: (0.6, 0.6) -> 0; at 30: one curve -> 0
    np.testing.assert_allclose(se, [0.1, 0.0, 0.0], atol=1e-12)


def test_bad_curves_are_refused() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        auc(np.array([10, 10, 20]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="same non-zero length"):
        labels_to_reach(np.array([10, 20]), np.array([0.1]), 0.1)
    with pytest.raises(ValueError, match="at least one curve"):
        mean_and_se([])
