"""Label-efficiency summaries of learning curves (specs/training.md, "Label efficiency"), numpy only.

A curve is (labels, values): the number of pool labels spent after each round (strictly increasing) and the
metric measured then. Curves over several seeds are summarised by `mean_and_se`; a single curve by `auc`,
`labels_to_reach` and, against random sampling, `label_savings`. No running-max smoothing anywhere.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Curve = tuple[np.ndarray, np.ndarray]


def _check_curve(labels: np.ndarray, values: np.ndarray) -> Curve:
    labels = np.asarray(labels, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != values.shape or len(labels) == 0:
        raise ValueError(f"a curve needs 1-D labels and values of the same non-zero length, got shapes "
                         f"{labels.shape} and {values.shape}")
    if np.any(np.diff(labels) <= 0):
        raise ValueError(f"a curve's label counts must be strictly increasing, got {labels.tolist()}")
    if not (np.all(np.isfinite(labels)) and np.all(np.isfinite(values))):
        raise ValueError("a curve's labels and values must be finite")
    return labels, values


def mean_and_se(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, mean, standard error) over curves from several seeds.

    When every curve has the same label grid the points are averaged as they are. Otherwise each curve is
    linearly interpolated onto the union of all label counts, only within its own range (never extrapolated),
    and each point averages the curves that cover it. The standard error is the sample standard deviation
    (ddof 1) over sqrt(n) of the n curves covering the point, and 0 where only one curve covers it.
    """
    if len(curves) == 0:
        raise ValueError("mean_and_se needs at least one curve")
    checked = [_check_curve(labels, values) for labels, values in curves]
    grid = checked[0][0]
    if not all(np.array_equal(labels, grid) for labels, _ in checked):
        grid = np.unique(np.concatenate([labels for labels, _ in checked]))
    stacked = np.full((len(checked), len(grid)), np.nan)
    for row, (labels, values) in zip(stacked, checked):
        inside = (grid >= labels[0]) & (grid <= labels[-1])
        row[inside] = np.interp(grid[inside], labels, values)
    count = np.sum(~np.isnan(stacked), axis=0)
    mean = np.nanmean(stacked, axis=0)
    deviations = np.where(np.isnan(stacked), 0.0, stacked - mean)
    se = np.zeros(len(grid))
    several = count > 1
    se[several] = np.sqrt((deviations[:, several] ** 2).sum(axis=0) / (count[several] - 1) / count[several])
    return grid, mean, se


def auc(labels: np.ndarray, values: np.ndarray) -> float:
    """Area under the curve (trapezoid rule) divided by the label range: the curve's average height between its
    first and last point, in the metric's units. A single point gives its value."""
    labels, values = _check_curve(labels, values)
    if len(labels) == 1:
        return float(values[0])
    area = np.sum((values[1:] + values[:-1]) / 2 * np.diff(labels))
    return float(area / (labels[-1] - labels[0]))


def labels_to_reach(labels: np.ndarray, values: np.ndarray, target: float) -> float | None:
    """Labels needed to first reach `target`: linear interpolation between the last round below it and the
    first round at or above it; the first label count if the curve starts there; None if it never does."""
    labels, values = _check_curve(labels, values)
    reached = np.flatnonzero(values >= target)
    if len(reached) == 0:
        return None
    i = reached[0]
    if i == 0:
        return float(labels[0])
    fraction = (target - values[i - 1]) / (values[i] - values[i - 1])
    return float(labels[i - 1] + fraction * (labels[i] - labels[i - 1]))


def label_savings(strategy_curve: Curve, random_curve: Curve) -> float | None:
    """1 - labels the strategy needs / labels random needs, both to reach random's final value.

    0.25 means a quarter fewer labels than random; negative means more. None when the strategy never reaches
    random's final value, or when random reaches it with zero labels (nothing to save)."""
    random_labels, random_values = _check_curve(*random_curve)
    target = float(random_values[-1])
    random_needs = labels_to_reach(random_labels, random_values, target)
    strategy_needs = labels_to_reach(*strategy_curve, target)
    if strategy_needs is None or not random_needs:
        return None
    return 1.0 - strategy_needs / random_needs
