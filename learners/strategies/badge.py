"""`badge`: k-means++ seeding (Ash et al. 2020) on gradient embeddings, multi-class and multi-label.

Rule. Item i's gradient embedding is g_i = q_i outer G_i, with q_i = onehot(argmax P_i) - P_i and G_i the head's
penultimate features (multi-label, P independent sigmoids: q_i = 1[P_i > 0.5] - P_i, the gradient of the binary
cross-entropy at the predicted label set; specs/strategies.md). It is never materialised (N x C*h): since
<g_i, g_j> = (q_i.q_j)(G_i.G_j),

    |g_i - g_j|^2 = |q_i|^2 |G_i|^2 + |q_j|^2 |G_j|^2 - 2 (q_i.q_j)(G_i.G_j).

The first pick is the candidate with the largest |g|^2 = |q|^2 |G|^2 (ties by a seeded random permutation); its
score is that |g|^2. Each next pick is drawn with probability proportional to D^2, D = distance to the nearest
pick so far (picked items have D^2 = 0), by inverse CDF: u = rng.random(), the first candidate (in candidate
order) whose running sum of D^2 exceeds u * sum(D^2); its score is its D^2 at pick time. When every remaining D^2
is 0, a remaining candidate is drawn uniformly (rng.integers). Labeled items play no part (k-means++ runs on the
candidates only).

Cost. Each pick streams G once and q (N x C) once: two matrix-vector products, O(|U| (h + C)), block by block
(`learners.strategies.greedy`: numpy over the caller's array on CPU, torch on CUDA); the running sum is float64.
Distances are computed in float64 when G or P is float64, else in float32 (squared distances clamped at 0).
"""
from __future__ import annotations

import numpy as np

from learners.strategies.base import Selection, Strategy, StrategyInputs
from learners.strategies.greedy import CandidateRows, compute_dtype, copy_rows
from learners.strategies.registry import register


@register
class BadgeStrategy(Strategy):
    name = "badge"
    needs = frozenset({"probs", "penultimate"})
    supports_multi_label = True

    def __init__(self, device: str = "cpu", chunk_rows: int | None = None) -> None:
        self.device = device
        self.chunk_rows = chunk_rows

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> Selection:
        probs, features, candidates = inputs.probs, inputs.penultimate, inputs.candidates
        if probs.ndim != 2 or features.ndim != 2 or len(probs) != len(features):
            raise ValueError(f"need probs (N, C) and penultimate (N, h) with the same N, "
                             f"got {probs.shape} and {features.shape}")
        dtype = compute_dtype(probs, features)
        with CandidateRows(features, candidates, self.device, dtype, self.chunk_rows) as rows:
            xp = rows.xp
            # q over the same rows as G (non-candidate rows of the span too: they are masked below)
            p = copy_rows(probs, rows.positions(np.arange(len(rows.matrix))), dtype)
            if inputs.multi_label:
                q = (p > 0.5).astype(dtype) - p  # 1[P > 0.5] - P
            else:
                q = -p
                q[np.arange(len(q)), p.argmax(axis=1)] += 1  # onehot(argmax P) - P
            del p
            q = rows.to_device(q)
            q_sq = rows.empty()
            rows.run(lambda s, e: rows.squared_norms(q, s, e, q_sq))
            norm_sq = q_sq * rows.sq  # |g_i|^2 of the gradient embedding
            chosen = np.zeros(len(rows.matrix), dtype=bool)  # by row
            picks = np.empty(budget, dtype=np.int64)
            scores = np.empty(budget, dtype=np.float64)
            permutation = rng.permutation(len(candidates))
            rank = rows.rank(permutation)
            masked = norm_sq.copy() if rows.cpu else norm_sq.clone()
            masked[~rows.is_candidate] = float("-inf")
            score, pick = rows.best_of(rows.run(lambda s, e: rows.best(masked[s:e], rank, s)), rank)
            picks[0], scores[0] = pick, score
            nearest_sq = rows.full(np.inf)
            nearest_sq[~rows.is_candidate] = 0
            cross, g_dots = rows.empty(), rows.empty()

            def fold(pick: int, s: int, e: int) -> None:
                """D^2 <- min(D^2, |g - g_pick|^2) on rows s..e, `pick` at 0."""
                d2 = rows.dots(q, q[pick], s, e, cross)
                d2 *= rows.dots(rows.matrix, rows.matrix[pick], s, e, g_dots)
                d2 *= 2
                d2 = xp.subtract(norm_sq[s:e] + norm_sq[pick], d2, out=d2)
                rows.clamp0(d2)
                xp.minimum(nearest_sq[s:e], d2, out=nearest_sq[s:e])
                if s <= pick < e:
                    nearest_sq[pick] = 0  # earlier picks stay at 0: min(0, d^2 >= 0) = 0

            # The running sum goes in candidate order: over rows when that is row order (a non-candidate row
            # weighs 0 and changes no partial sum), else over the weights gathered in candidate order.
            row_of_candidate = None if rows.in_order else rows.to_device(rows.index)
            for step in range(1, budget):
                chosen[pick] = True
                rows.run(lambda s, e, pick=pick: fold(pick, s, e))
                weights = nearest_sq if row_of_candidate is None else nearest_sq[row_of_candidate]
                k = self._draw(rows, weights, rng)
                if k is None:  # every remaining distance is 0: a uniformly random remaining candidate
                    remaining = rows.index[~chosen[rows.index]]
                    pick = int(remaining[rng.integers(len(remaining))])
                else:
                    pick = k if row_of_candidate is None else int(rows.index[k])
                picks[step], scores[step] = pick, float(nearest_sq[pick])
            return Selection(rows.positions(picks), scores, [self.name] * budget)

    @staticmethod
    def _draw(rows: CandidateRows, weights, rng: np.random.Generator) -> int | None:
        """Index into `weights` drawn with probability proportional to them (inverse CDF on the float64 running
        sum, one rng.random()); None when they sum to 0 (no draw made)."""
        xp = rows.xp
        if rows.cpu:
            cumulative = np.cumsum(weights, dtype=np.float64)
        else:
            cumulative = xp.cumsum(weights, 0, dtype=xp.float64)
        total = float(cumulative[-1])
        if not total > 0:
            return None
        target = rng.random() * total
        if rows.cpu:
            k = int(np.searchsorted(cumulative, target, side="right"))
        else:
            k = int(xp.searchsorted(cumulative, xp.tensor([target], dtype=xp.float64, device=rows.device), right=True))
        if k >= len(cumulative):  # u * total rounded up to the total: take the last item with weight
            k = int(np.flatnonzero(weights).max()) if rows.cpu else int(xp.nonzero(weights).max())
        return k
