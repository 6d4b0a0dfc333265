"""When to stop: a forecast of accuracy a few hundred labels ahead, and whether the predictions have stabilised.

Forecast. The eval curve (pool labels n_i after each round, accuracy y_i measured on m_i evaluation items) is fit by
an inverse power law acc(n) = a - b * n^(-c) (Figueroa et al. 2012, "Predicting sample size required for
classification performance"), by weighted least squares with the weights 1 / var_i of each point's binomial
standard error, var_i = p(1 - p) / m_i. For a fixed c the law is linear in (a, b), so the fit solves (a, b) in
closed form on a grid of c and keeps the best (variable projection: no starting values, no failed convergence).
Constraints: b >= 0 (accuracy does not fall with more labels) and a <= 1 (an asymptote above 100% is not
accuracy).

Uncertainty: a parametric bootstrap. Each resample draws new accuracies around the fitted curve, each point with
its binomial standard deviation scaled by the fit's reduced chi-square (the residuals' own scatter: every round is
measured on the same evaluation items, so successive points differ by less than independent samples of m items
would, and with training noise sometimes by more), refits, and reads the forecast; to it is added the noise of
the one measurement that will be made then. The interval is thus a prediction interval for the accuracy the
Dashboard will show at that label count on this evaluation set; the evaluation set's own sampling error (the
Wilson interval of each point) comes on top for the accuracy on new data. With few rounds the scatter is barely
known: each resample draws its scale from a scaled inverse chi-square with N - 3 degrees of freedom.

Stabilising predictions (Bloodgood & Vijay-Shanker 2009, "A method for stopping active learning based on
stabilizing predictions and the need for user-adjustable stopping"): once successive heads agree on nearly all of
a fixed set of unlabeled items, more labels are unlikely to change the model much. Here the set is the pool and
the measure the share of its items whose prediction changed between consecutive rounds' heads. The paper stops
when Cohen's kappa between successive models, averaged over the last three comparisons, exceeds 0.99; here the
share must stay under 1% for the last two (a plainer number for a person, about as strict).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from learners.errors import LearnerError

MIN_POINTS = 4  # three parameters and at least one degree of freedom for the residuals
C_GRID = np.geomspace(0.05, 3.0, 240)  # the exponents tried (a step of 1.7% each)
AHEAD = (100, 500, 1000)
LEVEL = 0.90
TOO_WIDE = 0.15  # an interval wider than 15 accuracy points cannot tell a plan apart from another
RESAMPLES = 1000
STABLE_SHARE = 0.01  # predictions changed for under 1% of the pool ...
STABLE_ROUNDS = 2  # ... between each of the last two pairs of consecutive rounds


@dataclass(frozen=True)
class PowerLaw:
    """acc(n) = a - b * n^(-c)."""

    a: float
    b: float
    c: float

    def __call__(self, n: np.ndarray | float) -> np.ndarray:
        return self.a - self.b * np.asarray(n, dtype=np.float64) ** -self.c


@dataclass(frozen=True)
class Forecast:
    """The forecast accuracy `ahead` labels after the curve's last point (at `labels` pool labels) and its
    interval at the CurveForecast's level."""

    ahead: int
    labels: int
    value: float
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    @property
    def too_wide(self) -> bool:
        return self.width > TOO_WIDE


@dataclass(frozen=True)
class CurveForecast:
    law: PowerLaw
    forecasts: list[Forecast]
    level: float
    points: int
    scatter: float  # reduced chi-square of the fit: the residuals' variance in units of the binomial variance


def _check(labels, accuracy, eval_n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.asarray(labels, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    m = np.broadcast_to(np.asarray(eval_n, dtype=np.float64), n.shape).copy()
    if n.ndim != 1 or n.shape != y.shape:
        raise LearnerError(f"a curve needs labels and accuracies of the same length, got {n.shape} and {y.shape}")
    if len(n) < MIN_POINTS:
        raise LearnerError(f"{len(n)} trained round(s) with an accuracy: the forecast needs at least {MIN_POINTS} "
                           f"(a curve with three parameters is fit to them)")
    if np.any(np.diff(n) <= 0) or np.any(n <= 0):
        raise LearnerError(f"a curve's label counts must be positive and increasing, got {n.astype(int).tolist()}")
    if np.any((y < 0) | (y > 1)) or np.any(m <= 0):
        raise LearnerError("accuracies must lie in [0, 1], each measured on at least one evaluation item")
    return n, y, m


def _variance(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The binomial variance of an accuracy measured on m items, with p pulled off 0 and 1 as (k + 1) / (m + 2)
    does, so a perfect score still has a standard error."""
    p = (np.clip(p, 0.0, 1.0) * m + 1) / (m + 2)
    return p * (1 - p) / m


def _fit_many(n: np.ndarray, ys: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, c, weighted sum of squared residuals) of the best law for each row of ys (curves on the same label
    counts n, weights w), the best of the exponents C_GRID, each with its (a, b) solved in closed form."""
    x = n[None, :] ** -C_GRID[:, None]  # (C, N)
    sw, sx, sxx = w.sum(), x @ w, (x * x) @ w  # scalar, (C,), (C,)
    sy, syy = ys @ w, (ys * ys) @ w  # (B,)
    sxy = (ys * w) @ x.T  # (B, C)
    slope = (sw * sxy - sx * sy[:, None]) / (sw * sxx - sx * sx)
    b = -slope
    a = (sy[:, None] - slope * sx) / sw
    flat = b < 0  # the best line falls: the constrained optimum is a constant
    a = np.where(flat, (sy / sw)[:, None], a)
    b = np.where(flat, 0.0, b)
    over = a > 1  # the asymptote is held at 100%: b by least squares of 1 - y on x
    b = np.where(over, np.maximum(0.0, (sx - sxy) / sxx), b)
    a = np.where(over, 1.0, a)
    sse = syy[:, None] - 2 * a * sy[:, None] + 2 * b * sxy + a * a * sw - 2 * a * b * sx + b * b * sxx
    best = np.argmin(sse, axis=1)
    rows = np.arange(len(ys))
    return a[rows, best], b[rows, best], C_GRID[best], np.maximum(sse[rows, best], 0.0)


def fit_power_law(labels: Sequence[float], accuracy: Sequence[float], eval_n: Sequence[int] | int) -> PowerLaw:
    """The inverse power law that fits the curve best by binomially weighted least squares; a LearnerError with
    fewer than MIN_POINTS points."""
    n, y, m = _check(labels, accuracy, eval_n)
    a, b, c, _ = _fit_many(n, y[None, :], 1 / _variance(y, m))
    return PowerLaw(float(a[0]), float(b[0]), float(c[0]))


def forecast(labels: Sequence[float], accuracy: Sequence[float], eval_n: Sequence[int] | int,
             ahead: Sequence[int] = AHEAD, level: float = LEVEL, resamples: int = RESAMPLES,
             seed: int = 0) -> CurveForecast:
    """The forecast accuracy `ahead` labels after the curve's last point, each with a `level` prediction interval
    (the parametric bootstrap of the module docstring, `resamples` draws, seeded). The measurement at each
    forecast is assumed to be made on as many evaluation items as the last point's."""
    n, y, m = _check(labels, accuracy, eval_n)
    w = 1 / _variance(y, m)
    a, b, c, sse = _fit_many(n, y[None, :], w)
    law = PowerLaw(float(a[0]), float(b[0]), float(c[0]))
    fitted = law(n)
    dof = len(n) - 3
    scatter = float(sse[0]) / dof
    rng = np.random.default_rng(seed)
    # One noise scale per resample, drawn from its own uncertainty (scaled inverse chi-square): with few rounds
    # the scatter itself is barely known, and the intervals widen as a t distribution's would.
    scales = scatter * dof / rng.chisquare(dof, resamples)[:, None]
    sd = np.maximum(np.sqrt(scales * _variance(fitted, m)), 1 / m)  # never below one evaluation item
    # the resamples keep the weights of the observed curve (a fixed design), so each is fit as the curve was
    ys = np.clip(fitted + sd * rng.standard_normal((resamples, len(n))), 0.0, 1.0)
    ba, bb, bc, _ = _fit_many(n, ys, w)
    targets = n[-1] + np.asarray(ahead, dtype=np.float64)
    curves = ba[:, None] - bb[:, None] * targets[None, :] ** -bc[:, None]  # (resamples, targets)
    new_sd = np.maximum(np.sqrt(scales * _variance(curves, m[-1])), 1 / m[-1])
    draws = np.clip(curves + new_sd * rng.standard_normal(curves.shape), 0.0, 1.0)
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail], axis=0)
    centre = np.clip(law(targets), 0.0, 1.0)
    return CurveForecast(
        law=law,
        forecasts=[Forecast(ahead=int(h), labels=int(t), value=float(v), low=float(lo), high=float(hi))
                   for h, t, v, lo, hi in zip(ahead, targets, centre, low, high)],
        level=level, points=len(n), scatter=scatter,
    )


def changed_share(before: np.ndarray, after: np.ndarray, multi_label: bool = False) -> float:
    """The share of items whose prediction differs between two heads' scores (n, K) on the same items in the same
    order: the top class, or (multi-label) any tag's decision at 0.5."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape or before.ndim != 2 or len(before) == 0:
        raise LearnerError(f"two heads' scores on the same items are needed, got shapes {before.shape} and "
                           f"{after.shape}")
    if multi_label:
        changed = ((before >= 0.5) != (after >= 0.5)).any(axis=1)
    else:
        changed = before.argmax(axis=1) != after.argmax(axis=1)
    return float(changed.mean())


def predictions_stable(shares: Sequence[float], threshold: float = STABLE_SHARE, rounds: int = STABLE_ROUNDS) -> bool:
    """Whether the last `rounds` changed shares (oldest first) are each below `threshold`."""
    return len(shares) >= rounds and all(s < threshold for s in shares[-rounds:])
