"""`direct`: DIRECT (Nuggehalli et al. 2023), active learning under class imbalance and label noise, multi-class.

Multi-label: refused (ValueError "strategy 'direct' has no multi-label rule"). specs/strategies.md gives DIRECT no
multi-label rule and the paper and the reference code are multi-class: the schedule ranks classes by labels counted
one class per item. (The per-class lines would carry over as galaxy's do, margin_k = P[:, k] and y_k from the label
matrix, so a multi-label DIRECT would be a small change; TAILOR refuses `direct` arms in multi-label projects too.)

Per class k the pool (labeled + candidates) is laid on the same margin_k line as `galaxy` (largest margin_k first,
margin_k = P_k - max_j P_j + 1e-8 max_j P_j in float64, `galaxy.line_score`, as LabelBench's `direct.py` writes
it). A threshold t (0..n on a line of n items) calls
the first t items k and the rest not-k. Its labeled agreement is

    agreement(t) = #(labeled k before t) - #(labeled not-k before t) + #(labeled not-k from t) - #(labeled k from t)

(the reference code's `cumsum(w) - reverse_cumsum(w)` with w = +1 / -1 on labeled items). Each pick is one of:

- version-space reduction: the version space is the range of thresholds with the largest agreement, from the
  first to the last such t. Pick a uniformly random candidate inside it. With clean labels this range is exactly
  the uncertainty interval between the labeled-k prefix and the labeled-not-k suffix, and each answer cuts it at
  the sampled item (a randomized bisection); with noisy labels the best-agreement range ignores the few labels
  that contradict it, which is how the paper's shrinking "by labeled agreement" stays robust. If the version
  space holds no candidate (it is a single threshold), the pick is a threshold pick instead.
- threshold: t* = the middle one of the best-agreement thresholds; pick the candidate nearest to t* (distance
  t* - c on the left, c - t* + 1 on the right, skipping labeled items), the left side on a tie. As labels come in,
  the nearest free item alternates left, right, left, ... outward from t*, as the reference code walks.

Schedule (one rule for simulation and the web UI, computed from the pick's index s = inputs.step + t in the round
and the labels known at that moment, so nothing has to be remembered between calls):
- even s: version-space reduction, odd s: threshold, so half the round goes to each (the paper spends about half
  on version-space reduction first; interleaving keeps the split right whatever the round size, which the
  strategy is never told).
- class: visit v = s // 2 goes to ranking[v % C], the classes by number of labels, least-labeled first (ties in a
  seeded class order, `seed`). Both picks of a visit are for one class unless the first one's label changes the
  ranking. The ranking is recomputed from the labels known at each pick, so as counts change mid-round a class
  can come up twice in one cycle of C visits and another wait for the next cycle.

Differences from the reference code (LabelBench `direct.py`): one annotator (B1 = 1), so the version space is
re-read after every label instead of shrunk by a factor per batch; the reference's first-argmax threshold becomes
the middle of the best ones; classes take turns pick by pick instead of in per-class blocks; with two classes the
reference's tie-breaker is 1e-8 P_0 on both lines (class 1's predicted block would then run least confident first),
here 1e-8 max_j P_j for any number of classes, as its C > 2 branch and `galaxy` write it.

Items taken but not labeled (earlier picks of a call without `ask`, queued items) are not on the line. Each pick's
score is its margin_k on the line of the class it was picked for.
"""
from __future__ import annotations

import numpy as np

from learners.strategies.base import Ask, Selection, Strategy, StrategyInputs
from learners.strategies.galaxy import (
    CANDIDATE,
    LABELED,
    ClassLines,
    PoolState,
    class_cycle,
    nearest_candidates,
    sequential_select,
    visible_line,
)
from learners.strategies.registry import register


def agreement(status: np.ndarray, y: np.ndarray) -> np.ndarray:
    """agreement(t) for t = 0..n on a line of n items; `y` holds y_k (0/1) of the labeled items in line order."""
    w = np.zeros(len(status), dtype=np.int64)
    w[status == LABELED] = np.where(y, 1, -1)
    before = np.concatenate([[0], np.cumsum(w)])   # sum of w over items [0, t)
    return 2 * before - before[-1]                 # sum before t - sum from t


def version_space_pick(status: np.ndarray, best: np.ndarray, rng: np.random.Generator) -> int | None:
    """A uniformly random candidate between the first and last best thresholds (None if there is none)."""
    inside = np.flatnonzero(status[best[0]:best[-1]] == CANDIDATE) + best[0]
    return int(rng.choice(inside)) if len(inside) else None


def threshold_pick(status: np.ndarray, best: np.ndarray) -> int:
    """The candidate nearest to the middle best threshold t*, the left side first on a tie."""
    t = int(best[len(best) // 2])
    at, dist = nearest_candidates(status, np.array([t]), np.array([t - 1]))
    return int(at[np.argmin(dist)])


def class_ranking(counts: np.ndarray, cycle: np.ndarray) -> np.ndarray:
    """Classes by number of labels, fewest first; equal counts keep the seeded `cycle` order."""
    return cycle[np.argsort(counts[cycle], kind="stable")]


@register
class DirectStrategy(Strategy):
    name = "direct"
    needs = frozenset({"probs", "labels"})
    sequential = True
    no_multi_label_reason = ("direct reads class-index labels, and specs/strategies.md gives DIRECT no multi-label "
                             "rule (its class schedule counts one class per item)")

    def __init__(self, seed: int = 0, device: str = "cpu") -> None:
        self.seed = seed
        self.device = device  # numpy on the CPU, like galaxy: accepted for a uniform interface

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator, *,
                ask: Ask | None = None, **kwargs) -> Selection:
        on_line = np.concatenate([np.asarray(inputs.labeled, dtype=np.int64), inputs.candidates])
        lines = ClassLines(inputs.probs, on_line, rng)
        cycle = class_cycle(self.seed, inputs.probs.shape[1])

        def choose(t: int, state: PoolState) -> tuple[int, int, str]:
            s = inputs.step + t
            k = int(class_ranking(state.counts, cycle)[(s // 2) % len(cycle)])
            line, status = visible_line(lines.line(k), state)
            scores = agreement(status, state.y_k(line[status == LABELED], k))
            best = np.flatnonzero(scores == scores.max())
            if s % 2 == 0:
                at = version_space_pick(status, best, rng)
                if at is not None:
                    return int(line[at]), k, "version-space"
            return int(line[threshold_pick(status, best)]), k, "threshold"

        return sequential_select(self.name, inputs, budget, ask, choose)
