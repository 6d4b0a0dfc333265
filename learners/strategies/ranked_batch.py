"""`ranked_batch`: modAL's `uncertainty_batch_sampling` (Cardoso et al. 2017), with bounded memory.

Rule, as modAL 0.4.2.1 computes it (modAL/batch.py) on the head's input features F (Euclidean):
uncertainty u_i = 1 - max_c P[i, c]; similarity s_i = 1 / (1 + d_i), d_i = distance from candidate i to the
nearest item of the reference set (the labeled items, plus every item picked so far). Greedy, B steps; at step t
(t picks made so far)

    score_i = alpha_t (1 - s_i) + (1 - alpha_t) u_i,    alpha_t = (|U| - t) / (|U| + |L|),

which is modAL's alpha = n_unlabeled / (n_unlabeled + n_labeled) with both counts updated after each pick. The
argmax among the not-yet-picked candidates is picked; its score is that score. Ties break by a seeded random
permutation (modAL takes the first in candidate order).

Cold start (no labeled items; modAL's `select_cold_start_instance`): the first pick is the candidate with the
smallest mean distance to the candidates; its score is its uncertainty. modAL keeps that item in its unlabeled
count, so there |L| counts as 1 and t counts only the greedy picks after it (reproduced here), and modAL does not
mask it, so it could pick it a second time (not reproduced: it is taken). modAL's mean is over all |U|^2 distances;
here it is over `cold_start_sample` candidates drawn with `rng` when |U| is larger (exactly modAL's rule below).

modAL treats X_training = None as the cold start but fails (UnboundLocalError) on an X_training with 0 rows;
here both mean no labeled item.

Memory. modAL recomputes distances to the whole reference set at every step. Here the running nearest distance
d is kept per candidate: computed once against the labeled items in chunks, then updated with each pick by one
matrix-vector product, O(|U| width) per pick, fused with the step's scores block by block
(`learners.strategies.greedy`: numpy over the caller's array on CPU, torch on CUDA). Distances are float64 when F
is float64, else float32 (as |a|^2 + |b|^2 - 2 a.b, like coreset); scores are float64. Picks equal modAL's in
tests (float64) and in the benchmark (float32 features, N = 10,000).

Multi-label (`StrategyInputs.multi_label`): modAL's 1 - max_c P is meaningless for independent sigmoids, so the
uncertainty term is the workbench's multi-label uncertainty (confidence's rule, specs/strategies.md) on modAL's
[0, 1] scale: u_i = 1 - 2 mean_k |P[i, k] - 0.5| (1 when every class is at 0.5, 0 when every class is certain).
Distances, alpha and the greedy are unchanged (they read neither labels nor probabilities).
"""
from __future__ import annotations

import numpy as np

from learners.strategies.base import Selection, Strategy, StrategyInputs
from learners.strategies.greedy import CandidateRows, copy_rows
from learners.strategies.params import Param
from learners.strategies.registry import register


@register
class RankedBatchStrategy(Strategy):
    name = "ranked_batch"
    needs = frozenset({"probs", "features"})
    supports_multi_label = True
    params = (Param("cold_start_sample", int, 1000, "with nothing labeled, the batch starts from the best of this "
                                                    "many random candidates", minimum=1),)

    def __init__(self, device: str = "cpu", chunk_rows: int | None = None, cold_start_sample: int = 1000) -> None:
        self.device = device
        self.chunk_rows = chunk_rows
        self.cold_start_sample = cold_start_sample

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> Selection:
        probs, features = inputs.probs, inputs.features
        if probs.ndim != 2 or features.ndim != 2 or len(probs) != len(features):
            raise ValueError(f"need probs (N, C) and features (N, d) with the same N, "
                             f"got {probs.shape} and {features.shape}")
        labeled = np.asarray(inputs.labeled if inputs.labeled is not None else [], dtype=np.int64)
        n = len(inputs.candidates)
        permutation = rng.permutation(n)
        with CandidateRows(features, inputs.candidates, self.device, chunk_rows=self.chunk_rows) as rows:
            xp = rows.xp
            rank = rows.rank(permutation)
            row_probs = copy_rows(probs, rows.positions(np.arange(len(rows.matrix))), np.dtype(np.float64))
            if inputs.multi_label:
                uncertainty = 1.0 - 2.0 * np.abs(row_probs - 0.5).mean(axis=1)
            else:
                uncertainty = 1.0 - row_probs.max(axis=1)
            del row_probs
            uncertainty = rows.to_device(uncertainty)
            taken = rows.to_device(~rows.to_numpy(rows.is_candidate))  # non-candidates are never picked
            score = rows.empty(dtype=np.float64)
            work = rows.empty()

            def step(pick: int | None, alpha: float, s: int, e: int) -> tuple[float, int]:
                """Fold `pick` (if any) into d on rows s..e, then score them; the block's best."""
                if pick is not None:
                    xp.minimum(nearest[s:e], rows.distances_to_row(pick, s, e, work), out=nearest[s:e])
                block = score[s:e]
                block[:] = nearest[s:e]
                block += 1
                if rows.cpu:  # similarity 1 / (1 + d), then 1 - similarity
                    np.divide(1.0, block, out=block)
                    np.subtract(1.0, block, out=block)
                else:
                    block.reciprocal_().neg_().add_(1.0)
                block *= alpha
                block += (1 - alpha) * uncertainty[s:e]
                block[taken[s:e]] = float("-inf")
                return rows.best(block, rank, s)

            picks = np.empty(budget, dtype=np.int64)
            scores = np.empty(budget, dtype=np.float64)
            if len(labeled):
                nearest = rows.distances_to_set(features, labeled, "min")
                n_reference, first, pick = len(labeled), 0, None
            else:
                pick = self._most_central(rows, features, rank, permutation, rng)
                picks[0], scores[0] = pick, float(uncertainty[pick])
                taken[pick] = True
                nearest = rows.full(np.inf)
                n_reference, first = 1, 1
            for t, index in enumerate(range(first, budget)):  # t: greedy picks so far
                alpha = (n - t) / (n + n_reference)
                score_, pick = rows.best_of(rows.run(lambda s, e, p=pick, a=alpha: step(p, a, s, e)), rank)
                picks[index], scores[index] = pick, score_
                taken[pick] = True
            return Selection(rows.positions(picks), scores, [self.name] * budget)

    def _most_central(self, rows: CandidateRows, features: np.ndarray, rank, permutation: np.ndarray,
                      rng: np.random.Generator) -> int:
        """Row of the candidate with the smallest mean distance to the candidates, or to `cold_start_sample` of
        them drawn with `rng` when there are more (drawn from the candidates in the seeded order)."""
        reference = rows.candidates[permutation]
        if len(reference) > self.cold_start_sample:
            reference = reference[np.sort(rng.choice(len(reference), size=self.cold_start_sample, replace=False))]
        closeness = rows.distances_to_set(features, reference, "mean")
        closeness *= -1  # the largest -mean is the smallest mean; exact, so ties stay ties
        closeness[~rows.is_candidate] = float("-inf")
        return rows.best_of(rows.run(lambda s, e: rows.best(closeness[s:e], rank, s)), rank)[1]
