"""`badge`: k-means++ seeding (Ash et al. 2020) on gradient embeddings, multi-class and multi-label.

Rule. Item i's gradient embedding is g_i = q_i outer G_i, with q_i = onehot(argmax P_i) - P_i and G_i the head's
penultimate features (multi-label, P independent sigmoids: q_i = 1[P_i > 0.5] - P_i, the gradient of the binary
cross-entropy at the predicted label set; specs/strategies.md). It is never materialised (N x C*h): since
<g_i, g_j> = (q_i.q_j)(G_i.G_j),

    |g_i - g_j|^2 = |q_i|^2 |G_i|^2 + |q_j|^2 |G_j|^2 - 2 (q_i.q_j)(G_i.G_j).

The first pick is the candidate with the largest |g|^2 = |q|^2 |G|^2 (ties by a seeded random permutation); its
score is that |g|^2. Each next pick is drawn with probability proportional to D^2, D = distance to the nearest
pick so far (picked items have D^2 = 0), by inverse CDF: u = rng.random(), the first candidate whose running sum of
D^2 exceeds u * sum(D^2); its score is its D^2 at pick time. When every remaining D^2 is 0, a remaining candidate is
drawn uniformly (rng.integers). Labeled items play no part (k-means++ runs on the candidates only).

Cost. Two matrix-vector products per pick, O(|U| (h + C)), on one CPU thread (see `learners.cpu.one_cpu_thread`); the
running sum is float64. Distances are computed in
float64 when G or P is float64, else in float32 (squared distances clamped at 0).
"""
from __future__ import annotations

import numpy as np

from learners.cpu import one_cpu_thread
from learners.strategies.base import Selection, Strategy, StrategyInputs
from learners.strategies.coreset import compute_dtype, rows_on_device
from learners.strategies.registry import register


@register
class BadgeStrategy(Strategy):
    name = "badge"
    needs = frozenset({"probs", "penultimate"})
    supports_multi_label = True

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> Selection:
        import torch

        probs, features, candidates = inputs.probs, inputs.penultimate, inputs.candidates
        if probs.ndim != 2 or features.ndim != 2 or len(probs) != len(features):
            raise ValueError(f"need probs (N, C) and penultimate (N, h) with the same N, "
                             f"got {probs.shape} and {features.shape}")
        device = torch.device(self.device)
        dtype = compute_dtype(probs, features)
        g = rows_on_device(features, candidates, dtype, device)
        p = rows_on_device(probs, candidates, dtype, device)
        if inputs.multi_label:
            q = (p > 0.5).to(dtype) - p  # 1[P > 0.5] - P
        else:
            q = torch.nn.functional.one_hot(p.argmax(dim=1), p.shape[1]).to(dtype) - p  # onehot(argmax P) - P
        del p
        q_sq, g_sq = (q * q).sum(dim=1), (g * g).sum(dim=1)
        norm_sq = q_sq * g_sq  # |g_i|^2 of the gradient embedding

        def squared_distances_to(j: int) -> torch.Tensor:
            cross = torch.mv(q, q[j]) * torch.mv(g, g[j])
            return (norm_sq + norm_sq[j] - 2 * cross).clamp_min_(0)

        n = len(candidates)
        chosen = torch.zeros(n, dtype=torch.bool, device=device)
        picks = torch.empty(budget, dtype=torch.int64, device=device)
        scores = torch.empty(budget, dtype=torch.float64, device=device)
        permutation = torch.from_numpy(rng.permutation(n)).to(device)
        pick = int(permutation[torch.argmax(norm_sq[permutation])])
        picks[0], scores[0] = pick, norm_sq[pick]
        chosen[pick] = True
        nearest_sq = squared_distances_to(pick)
        nearest_sq[pick] = 0
        with one_cpu_thread(device):
            for step in range(1, budget):
                cumulative = torch.cumsum(nearest_sq, dim=0, dtype=torch.float64)
                total = float(cumulative[-1])
                if total > 0:
                    target = torch.tensor([rng.random() * total], dtype=torch.float64, device=device)
                    pick = int(torch.searchsorted(cumulative, target, right=True))
                    if pick >= n:  # u * total rounded up to the total: take the last item with weight
                        pick = int(torch.nonzero(nearest_sq).max())
                else:  # every remaining distance is 0: a uniformly random remaining candidate
                    remaining = torch.nonzero(~chosen).squeeze(1)
                    pick = int(remaining[rng.integers(len(remaining))])
                picks[step], scores[step] = pick, nearest_sq[pick]
                chosen[pick] = True
                torch.minimum(nearest_sq, squared_distances_to(pick), out=nearest_sq)
                nearest_sq[pick] = 0  # earlier picks stay at 0: min(0, d^2 >= 0) = 0
        return Selection(candidates[picks.cpu().numpy()], scores.cpu().numpy(), [self.name] * budget)
