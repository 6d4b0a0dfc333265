"""Label-efficiency summaries of learning curves (specs/training.md, "Label efficiency"), numpy only.

A curve is (labels, values): the number of pool labels spent after each round (strictly increasing) and the
metric measured then. Curves over several seeds are summarised by `mean_and_se`; a single curve by `auc`,
`labels_to_reach` and, against random sampling, `label_savings`; the savings of several seeds' curves get a
bootstrap interval over seeds from `savings_interval`. No running-max smoothing anywhere.

A simulation result (app.simulation: {"points": [{"strategy", "seed", "labels", <metrics>...}, ...]}) is
summarised per strategy by `summarize`, and each seed's final point read by `final_points`.
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


def savings_interval(
    strategy_curves: Sequence[Curve], random_curves: Sequence[Curve], paired: bool = True,
    resamples: int = 2000, level: float = 0.95, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval over seeds of `label_savings` between the two mean curves (`mean_and_se`).

    Each resample draws as many seeds as there are, with replacement, averages the drawn curves and recomputes
    the saving. `paired`: the i-th strategy curve and the i-th random curve come from the same seed (the same
    random seed round), so both are drawn with the same seed indices; otherwise each side is drawn on its own.
    A resample whose strategy curve never reaches random's final value needs more labels than it spent: its
    saving counts as -inf, so a lower end of -inf reads "may not reach random at all". A resample where random
    reaches its final value with zero labels has no saving and is left out. The interval's ends are values
    that occurred (numpy's inverted-CDF quantile: no interpolation towards -inf). (nan, nan) when a side has a
    single curve: one seed has no spread to resample."""
    if not strategy_curves or not random_curves:
        raise ValueError("savings_interval needs at least one curve on each side")
    if len(strategy_curves) < 2 or len(random_curves) < 2:
        return float("nan"), float("nan")
    if paired and len(strategy_curves) != len(random_curves):
        raise ValueError(f"paired curves need one random curve per strategy curve, got {len(strategy_curves)} "
                         f"and {len(random_curves)}")
    rng = np.random.default_rng(seed)
    strategy_draws = rng.integers(0, len(strategy_curves), (resamples, len(strategy_curves)))
    random_draws = strategy_draws if paired else rng.integers(0, len(random_curves), (resamples, len(random_curves)))
    values = np.array([
        _saving(s, r)
        for s, r in zip(_resampled_means(strategy_curves, strategy_draws), _resampled_means(random_curves, random_draws))
    ])
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail], method="inverted_cdf")
    return float(low), float(high)


def _resampled_means(curves: Sequence[Curve], draws: np.ndarray) -> list[Curve]:
    """The mean curve (as `mean_and_se` averages) of each row of drawn curve indices."""
    grid = np.asarray(curves[0][0], dtype=np.float64)
    if all(np.array_equal(np.asarray(labels, dtype=np.float64), grid) for labels, _ in curves):
        values = np.array([np.asarray(v, dtype=np.float64) for _, v in curves])
        return [(grid, mean) for mean in values[draws].mean(axis=1)]  # one grid: the plain average, vectorised
    return [mean_and_se([curves[i] for i in draw])[:2] for draw in draws]


def _saving(strategy_curve: Curve, random_curve: Curve) -> float:
    """label_savings, with -inf where the strategy never reaches random's final value and nan where random needs
    no labels to reach it."""
    random_labels, random_values = random_curve
    random_needs = labels_to_reach(random_labels, random_values, float(random_values[-1]))
    if not random_needs:
        return float("nan")
    saving = label_savings(strategy_curve, random_curve)
    return float("-inf") if saving is None else saving


def final_points(result: dict, strategy: str) -> list[dict]:
    """Each seed's last point (the most labels) of one strategy's runs, in seed order."""
    by_seed: dict[int, dict] = {}
    for p in result["points"]:
        if p["strategy"] == strategy and (p["seed"] not in by_seed or p["labels"] > by_seed[p["seed"]]["labels"]):
            by_seed[p["seed"]] = p
    return [by_seed[seed] for seed in sorted(by_seed)]


def summarize(result: dict, metric: str = "accuracy", resamples: int = 2000, level: float = 0.95,
              seed: int = 0) -> dict:
    """Per strategy: the mean curve with its standard error over seeds, the final value with its standard error,
    the normalised area under the mean curve, the labels needed to reach random's final value, and the label
    savings against random (None where not reached) with its bootstrap interval over seeds (`savings_interval`:
    paired when both ran the same seeds) and whether that interval leaves out 0. `eval_n`: the evaluation-set
    sizes the points were measured on."""
    points = result["points"]
    seeds: dict[str, list[int]] = {}
    by_strategy: dict[str, list[Curve]] = {}
    for strategy in dict.fromkeys(p["strategy"] for p in points):
        seeds[strategy] = sorted({p["seed"] for p in points if p["strategy"] == strategy})
        for seed_ in seeds[strategy]:
            pts = sorted((p for p in points if p["strategy"] == strategy and p["seed"] == seed_), key=lambda p: p["labels"])
            by_strategy.setdefault(strategy, []).append(
                (np.array([p["labels"] for p in pts], float), np.array([p[metric] for p in pts], float))
            )
    curves = {name: mean_and_se(runs) for name, runs in by_strategy.items()}
    reference = curves.get("random")
    table = []
    for name, (labels, mean, se) in curves.items():
        row = {"strategy": name, "seeds": len(by_strategy[name]), "final": float(mean[-1]), "final_se": float(se[-1]),
               "auc": auc(labels, mean)}
        if reference is not None:
            target = float(reference[1][-1])
            row["labels_to_reach_random_final"] = labels_to_reach(labels, mean, target)
            row["label_savings_vs_random"] = label_savings((labels, mean), (reference[0], reference[1]))
            low, high = savings_interval(by_strategy[name], by_strategy["random"], seeds[name] == seeds["random"],
                                         resamples, level, seed)
            row["savings_interval"] = [low, high]
            row["savings_significant"] = bool(low > 0 or high < 0)
        table.append(row)
    return {
        "metric": metric,
        "level": level,
        "resamples": resamples,
        "eval_n": sorted({p["eval_n"] for p in points if p.get("eval_n") is not None}),
        "curves": {name: {"labels": l.tolist(), "mean": m.tolist(), "se": e.tolist()} for name, (l, m, e) in curves.items()},
        "table": table,
    }
