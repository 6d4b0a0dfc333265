"""Label-efficiency math on hand-made curves whose answers are worked out in the comments."""
from __future__ import annotations

import math

import numpy as np
import pytest

from learners.efficiency import auc, label_savings, labels_to_reach, mean_and_se, savings_interval, summarize

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


GRID = np.array([10, 20, 40])


def test_savings_interval_over_two_paired_seeds_is_the_range_of_the_three_resample_kinds() -> None:
    # Two seeds drawn with replacement, the same indices for both sides, give three kinds of resample:
    # seed 0 twice (p 1/4), seed 1 twice (p 1/4), one of each (p 1/2). Each kind is drawn far more often than
    # 2.5% of 2000 times, so the 95% interval runs from the smallest to the largest of their three savings.
    random = [(GRID, np.array([0.5, 0.6, 0.8])), (GRID, np.array([0.5, 0.7, 0.9]))]
    strategy = [(GRID, np.array([0.6, 0.9, 0.95])), (GRID, np.array([0.7, 0.9, 1.0]))]
    # seed 0 twice: random's final 0.8 at 40 labels; the strategy reaches 0.8 at 10 + (0.2 / 0.3) * 10 = 16.67
    only_first = 1 - (10 + 20 / 3) / 40  # 0.5833
    # seed 1 twice: random's final 0.9 at 40; the strategy is at 0.9 at 20 labels
    only_second = 1 - 20 / 40  # 0.5
    # one of each: random (0.5, 0.65, 0.85), final 0.85 at 40; strategy (0.65, 0.9, 0.975) reaches 0.85 at
    # 10 + (0.2 / 0.25) * 10 = 18
    mixed = 1 - 18 / 40  # 0.55
    low, high = savings_interval(strategy, random, paired=True, resamples=2000, seed=0)
    assert low == pytest.approx(min(only_first, only_second, mixed))  # 0.5
    assert high == pytest.approx(max(only_first, only_second, mixed))  # 0.5833
    assert savings_interval(strategy, random, paired=True, resamples=2000, seed=0) == (low, high)  # seeded

    # Drawn independently, random's seed 1 twice with the strategy's seed 0 twice also occurs: the strategy
    # reaches 0.9 at 20 labels, 0.5; and random's seed 0 twice with the strategy's seed 1 twice: 0.8 at
    # 10 + (0.1 / 0.2) * 10 = 15 labels, 1 - 15 / 40 = 0.625, the new top of the range.
    low, high = savings_interval(strategy, random, paired=False, resamples=2000, seed=0)
    assert high == pytest.approx(1 - 15 / 40)


def test_savings_interval_counts_a_resample_that_never_reaches_random_as_minus_infinity() -> None:
    random = [(GRID, np.array([0.5, 0.6, 0.8])), (GRID, np.array([0.5, 0.6, 0.8]))]
    # seed 1's strategy curve stops at 0.7: seed 1 twice never reaches 0.8 (-inf); seed 0 twice reaches it at
    # 16.67 labels (0.5833); one of each, (0.6, 0.8, 0.825), reaches it at 20 labels (0.5)
    strategy = [(GRID, np.array([0.6, 0.9, 0.95])), (GRID, np.array([0.6, 0.7, 0.7]))]
    low, high = savings_interval(strategy, random)
    assert low == float("-inf")
    assert high == pytest.approx(1 - (10 + 20 / 3) / 40)
    # a single seed has no spread to resample
    low, high = savings_interval(strategy[:1], random[:1])
    assert np.isnan(low) and np.isnan(high)


def test_summarize_gives_final_standard_errors_and_savings_intervals() -> None:
    curves = {
        "random": [(0.5, 0.6, 0.8), (0.5, 0.7, 0.9)],
        "margin": [(0.6, 0.9, 0.95), (0.7, 0.9, 1.0)],
        "entropy": [(0.5, 0.6, 0.8), (0.6, 0.9, 0.95)],
    }
    points = [{"strategy": name, "seed": seed, "labels": int(x), "accuracy": v, "eval_n": 500}
              for name, runs in curves.items() for seed, values in enumerate(runs) for x, v in zip(GRID, values)]
    summary = summarize({"points": points}, "accuracy")
    assert summary["eval_n"] == [500]
    rows = {row["strategy"]: row for row in summary["table"]}
    # final values over the two seeds: random (0.8, 0.9): mean 0.85, sd 0.0707, se 0.05
    assert rows["random"]["final"] == pytest.approx(0.85)
    assert rows["random"]["final_se"] == pytest.approx(0.05)
    assert rows["margin"]["final_se"] == pytest.approx(0.025)  # (0.95, 1.0)
    # margin: the paired interval of the first test, leaving out 0
    assert rows["margin"]["savings_interval"] == pytest.approx([0.5, 1 - (10 + 20 / 3) / 40])
    assert rows["margin"]["savings_significant"]
    # random against itself: every paired resample saves exactly 0
    assert rows["random"]["savings_interval"] == [0.0, 0.0]
    assert not rows["random"]["savings_significant"]
    # entropy: seed 0 is random's seed 0 (saves 0 against it), seed 1 is margin's seed 0, whose curve reaches
    # random seed 1's final 0.9 at 20 labels (saves 0.5); one of each, (0.55, 0.75, 0.875) against random's
    # (0.5, 0.65, 0.85), reaches 0.85 at 20 + (0.1 / 0.125) * 20 = 36 labels (saves 0.1). The interval [0, 0.5]
    # holds 0: not significant
    assert rows["entropy"]["savings_interval"] == pytest.approx([0.0, 0.5])
    assert not rows["entropy"]["savings_significant"]


def test_bad_curves_are_refused() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        auc(np.array([10, 10, 20]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="same non-zero length"):
        labels_to_reach(np.array([10, 20]), np.array([0.1]), 0.1)
    with pytest.raises(ValueError, match="at least one curve"):
        mean_and_se([])


def test_a_strategy_that_never_reaches_randoms_final_is_said_to_be_worse_not_significant() -> None:
    from app.simulation import saving_words

    never = {"strategy": "coreset", "label_savings_vs_random": None, "savings_interval": [-math.inf, -math.inf],
             "savings_significant": True}
    assert saving_words(never) == ("never reaches", "", "worse than random: never reaches its final value")
    some = {"strategy": "margin", "label_savings_vs_random": 0.2, "savings_interval": [-math.inf, 0.3],
            "savings_significant": False}
    assert saving_words(some) == ("+20.0%", "[-inf, +30.0%]", "not significant")
