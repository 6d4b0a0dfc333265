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
matrix-vector product, O(|U| width) per pick (on one CPU thread, see `learners.cpu.one_cpu_thread`). Distances are
float64 when F is float64, else float32 (as |a|^2 + |b|^2 - 2 a.b, like coreset); scores are float64. Picks equal
modAL's in tests (float64) and in the benchmark (float32 features, N = 10,000).

Multi-label (`StrategyInputs.multi_label`): modAL's 1 - max_c P is meaningless for independent sigmoids, so the
uncertainty term is the workbench's multi-label uncertainty (confidence's rule, specs/strategies.md) on modAL's
[0, 1] scale: u_i = 1 - 2 mean_k |P[i, k] - 0.5| (1 when every class is at 0.5, 0 when every class is certain).
Distances, alpha and the greedy are unchanged (they read neither labels nor probabilities).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from learners.cpu import one_cpu_thread
from learners.strategies.base import Selection, Strategy, StrategyInputs
from learners.strategies.coreset import compute_dtype, distances_to_point, distances_to_set, rows_on_device
from learners.strategies.params import Param
from learners.strategies.registry import register

if TYPE_CHECKING:
    import torch


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
        import torch

        probs, features = inputs.probs, inputs.features
        if probs.ndim != 2 or features.ndim != 2 or len(probs) != len(features):
            raise ValueError(f"need probs (N, C) and features (N, d) with the same N, "
                             f"got {probs.shape} and {features.shape}")
        labeled = np.asarray(inputs.labeled if inputs.labeled is not None else [], dtype=np.int64)
        device = torch.device(self.device)
        # Visit candidates in a seeded random order: argmax returns the first maximum, so ties follow the seed.
        order = inputs.candidates[rng.permutation(len(inputs.candidates))]
        n = len(order)
        points = rows_on_device(features, order, compute_dtype(features), device)
        points_sq = (points * points).sum(dim=1)
        candidate_probs = rows_on_device(probs, order, torch.float64, device)
        if inputs.multi_label:
            uncertainty = 1.0 - 2.0 * (candidate_probs - 0.5).abs_().mean(dim=1)
        else:
            uncertainty = 1.0 - candidate_probs.amax(dim=1)
        del candidate_probs

        picks = torch.empty(budget, dtype=torch.int64, device=device)
        scores = torch.empty(budget, dtype=torch.float64, device=device)
        taken = torch.zeros(n, dtype=torch.bool, device=device)
        if len(labeled):
            nearest = distances_to_set(points, points_sq, features, labeled, "min", self.chunk_rows)
            n_reference, first = len(labeled), 0
        else:
            pick = self._most_central(points, points_sq, features, order, rng)
            picks[0], scores[0] = pick, uncertainty[pick]
            taken[pick] = True
            nearest = distances_to_point(points, points_sq, pick)
            n_reference, first = 1, 1
        with one_cpu_thread(device):
            for step in range(first, budget):
                t = step - first  # greedy picks so far
                alpha = (n - t) / (n + n_reference)
                similarity = 1 / (1 + nearest.double())
                score = alpha * (1 - similarity) + (1 - alpha) * uncertainty
                score.masked_fill_(taken, float("-inf"))
                pick = int(torch.argmax(score))
                picks[step], scores[step] = pick, score[pick]
                taken[pick] = True
                torch.minimum(nearest, distances_to_point(points, points_sq, pick), out=nearest)
        return Selection(order[picks.cpu().numpy()], scores.cpu().numpy(), [self.name] * budget)

    def _most_central(self, points: torch.Tensor, points_sq: torch.Tensor, features: np.ndarray,
                      order: np.ndarray, rng: np.random.Generator) -> int:
        """Index (into `order`) of the candidate with the smallest mean distance to the candidates, or to
        `cold_start_sample` of them drawn with `rng` when there are more."""
        import torch

        reference = order
        if len(order) > self.cold_start_sample:
            reference = order[np.sort(rng.choice(len(order), size=self.cold_start_sample, replace=False))]
        mean_distance = distances_to_set(points, points_sq, features, reference, "mean", self.chunk_rows)
        return int(torch.argmin(mean_distance))
