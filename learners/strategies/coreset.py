"""`coreset`: greedy k-center (Sener & Savarese 2018) on the head's penultimate features G, Euclidean.

Rule. D[i] = distance from candidate i to its nearest labeled item. B times: pick the candidate with the largest D,
then D[i] <- min(D[i], |G_i - G_pick|). A pick's score is its D at pick time. With no labeled items the first pick
is a random candidate (score +inf: there is no center to measure from yet), and the greedy steps continue from it.
Ties break by a seeded random permutation: among equal D the candidate first in that order wins.

Cost. The initial D is computed in chunks (candidate rows x labeled columns, bounded memory); every pick then
streams G once (one matrix-vector product, O(|U| h)) and folds it into D block by block
(`learners.strategies.greedy`: numpy over the caller's array on CPU, torch on CUDA), instead of recomputing
distances to the whole chosen set.

Arithmetic. Squared distances are |a|^2 + |b|^2 - 2 a.b, clamped at 0, then square-rooted, in float64 when G is
float64 and in float32 otherwise. In float64 the picks equal a direct per-pick recomputation (tested). In float32
the rounding can swap two candidates whose distances are closer than float32 resolves: in the benchmark
(N = 100,000, h = 512, B = 1000) float32 and float64 picks agree up to pick 503, where the two candidates' float64
distances were 31.35615352 and 31.35615359.

Multi-label: the same rule (it reads neither labels nor probabilities).
"""
from __future__ import annotations

import numpy as np

from learners.strategies.base import Selection, Strategy, StrategyInputs
from learners.strategies.greedy import CandidateRows
from learners.strategies.registry import register


@register
class CoresetStrategy(Strategy):
    name = "coreset"
    needs = frozenset({"penultimate"})
    supports_multi_label = True  # reads neither labels nor probabilities: the same rule for multi-label

    def __init__(self, device: str = "cpu", chunk_rows: int | None = None) -> None:
        self.device = device
        self.chunk_rows = chunk_rows

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> Selection:
        features = inputs.penultimate
        if features.ndim != 2:
            raise ValueError(f"penultimate must be an (N, h) array, got shape {features.shape}")
        labeled = np.asarray(inputs.labeled if inputs.labeled is not None else [], dtype=np.int64)
        permutation = rng.permutation(len(inputs.candidates))
        picks = np.empty(budget, dtype=np.int64)
        scores = np.empty(budget, dtype=np.float64)
        with CandidateRows(features, inputs.candidates, self.device, chunk_rows=self.chunk_rows) as rows:
            rank = rows.rank(permutation)
            work = rows.empty()

            def fold(pick: int, s: int, e: int) -> tuple[float, int]:
                """D <- min(D, distance to `pick`) on rows s..e, `pick` taken; the block's best."""
                block = nearest[s:e]
                rows.xp.minimum(block, rows.distances_to_row(pick, s, e, work), out=block)
                if s <= pick < e:
                    nearest[pick] = float("-inf")  # taken (its own distance would round to ~0, not exactly 0)
                return rows.best(block, rank, s)

            if len(labeled):
                nearest = rows.distances_to_set(features, labeled, "min")
                nearest[~rows.is_candidate] = float("-inf")
                best = rows.best_of(rows.run(lambda s, e: rows.best(nearest[s:e], rank, s)), rank)
                first = 0
            else:  # no center yet: start from one random candidate (the first in the seeded order)
                start = int(rows.index[permutation[0]])
                picks[0], scores[0] = start, np.inf
                nearest = rows.full(np.inf)
                nearest[~rows.is_candidate] = float("-inf")
                best = rows.best_of(rows.run(lambda s, e: fold(start, s, e)), rank)
                first = 1
            for step in range(first, budget):
                score, pick = best
                picks[step], scores[step] = pick, score
                if step + 1 < budget:
                    best = rows.best_of(rows.run(lambda s, e, pick=pick: fold(pick, s, e)), rank)
            return Selection(rows.positions(picks), scores, [self.name] * budget)
