"""`bait`: Fisher-information batch design (Ash et al., NeurIPS 2021), multi-class and multi-label.

1. Features: the head's penultimate features G (N x h), centered over the pool rows handed over (the pool only:
   app.jobs.select never hands the evaluation set to a strategy) and projected on their top
   `dim` principal components (d = min(dim, h)), giving x_i (d values).
2. Per-item Fisher information of the softmax head's last layer, I_i = (diag p_i - p_i p_i^T) kron x_i x_i^T. The
   matrix diag p - p p^T always has the all-ones vector in its null space (adding a constant to every logit changes
   nothing), so it is written in an orthonormal basis Q (C x (C-1)) of the complement of that vector:
   M_i = Q^T (diag p_i - p_i p_i^T) Q, (C-1) x (C-1), and I_i = M_i kron x_i x_i^T is D x D with D = (C-1) d.
   Its square-root factor U_i = R_i kron x_i (D x (C-1)), R_i = V sqrt(Lambda) from the eigendecomposition of M_i,
   gives I_i = U_i U_i^T: each item is a rank-(C-1) update.
3. F = mean of I_i over the pool (all N rows), and for a batch S of B items the design matrix
       A(S) = lambda I + (sum over L of I_i + B * sum over S of I_i) / (|L| + B)
   exactly as the original code scales it (JordanAsh/badge `bait_sampling.py`: the labeled mean Fisher weighted
   |L| / (|L| + B), each candidate's factor multiplied by sqrt(B / (|L| + B))): each batch item weighs B times a
   labeled one (`batch_weight`). BAIT minimizes trace(A(S)^-1 F) over |S| = B, B = `budget` (the items picked in
   the call).
4. Greedy forward: 2B times add the candidate that lowers the trace most. With K = A^-1, adding U_i lowers it by
       gain_i = trace((I + Z1_i)^-1 Z2_i),   Z1_i = U_i^T K U_i,  Z2_i = U_i^T KFK U_i   ((C-1) x (C-1)),
   and K and KFK get Woodbury rank-(C-1) updates. The Kronecker structure is never expanded for the candidates
   (x_i^T (block a, b of a D x D matrix) x_i). Every candidate keeps tr(Z1_i) and tr(Z2_i), updated in O((C-1)^2 d)
   per step from the rank-(C-1) change of K and KFK; since tr(Z2)/(1 + tr(Z1)) <= gain <= tr(Z2), the exact gain
   is computed only for the candidates whose upper bound reaches the best lower bound (usually a handful), so the
   pick is the exact argmax without a (C-1) x (C-1) solve for every candidate at every step.
5. Greedy backward: while the batch has more than B items, drop the one whose removal raises the trace least
   (removing U raises it by trace((I - U^T K U)^-1 U^T KFK U)); the 2B batch members keep their full Z1, Z2.
Picks come out by that removal cost, largest first (the item the batch can least do without), which is also each
pick's score. Ties (equal gains or costs, e.g. duplicate items) are broken by a seeded random permutation.

Refused, with a ValueError, when D = (C-1) d exceeds `max_dim` (default 600): the D x D algebra grows with D^2 to
D^3 and the per-candidate work with (C-1)^2 d. Memory: the reduced features (N d float64), (C-1)^2 + 2 float64 per
candidate (e.g. 6.6 MB for 10,000 candidates with C = 10), and chunks of at most CHUNK_ELEMENTS temporaries.
Computed with torch in float64 on `device`; the chunk size is the only thing that depends on it.

Multi-label (`StrategyInputs.multi_label`; specs/strategies.md gives no separate rule, so this is the same design
with the multi-label head's likelihood): the head outputs K independent sigmoids trained with binary cross-entropy,
whose last-layer Fisher information is I_i = diag(p_i (1 - p_i)) kron x_i x_i^T (the logits are independent: no
redundant direction to drop, no basis Q, p is not renormalised). So M_i = diag(p_i (1 - p_i)) (K x K), R_i =
diag(sqrt(p_i (1 - p_i))), r = K and D = K d; everything else (F, A(S), forward to 2B, backward to B, the
`max_dim` refusal on D) is unchanged. Labels are not read (BAIT's objective uses the model's p, not the labels).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from learners.strategies.base import Selection, Strategy, StrategyInputs, top_k
from learners.strategies.params import Param
from learners.strategies.registry import register

if TYPE_CHECKING:
    import torch

# Float64 elements of temporary work per chunk: 32 MB on CPU, 512 MB on CUDA.
CHUNK_ELEMENTS = {"cpu": 2**22, "cuda": 2**26}


@register
class BaitStrategy(Strategy):
    name = "bait"
    needs = frozenset({"probs", "penultimate", "labels"})
    supports_multi_label = True
    params = (
        Param("dim", int, 30, "principal components of the penultimate features kept (d = min(dim, h))", minimum=1),
        Param("lam", float, 1.0, "lambda: the ridge added to the Fisher information (> 0)"),
        Param("max_dim", int, 600, "refuse when (classes - 1) x d exceeds this (the D x D algebra grows as D^2)",
              minimum=1),
    )

    def __init__(self, dim: int = 30, lam: float = 1.0, max_dim: int = 600, device: str = "cpu",
                 chunk_rows: int | None = None) -> None:
        if dim < 1 or lam <= 0:
            raise ValueError(f"bait needs dim >= 1 and lam > 0, got dim={dim}, lam={lam}")
        self.dim = dim
        self.lam = lam
        self.max_dim = max_dim
        self.device = device
        self.chunk_rows = chunk_rows

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> Selection:
        import torch

        probs, feats, multi_label = inputs.probs, inputs.penultimate, inputs.multi_label
        if probs.ndim != 2 or probs.shape[1] < (1 if multi_label else 2):
            raise ValueError(f"probs must be an (N, C) array with C >= {1 if multi_label else 2}, "
                             f"got shape {probs.shape}")
        if feats.ndim != 2 or len(feats) != len(probs):
            raise ValueError(f"penultimate must be an (N, h) array with N = {len(probs)}, got shape {feats.shape}")
        if np.isnan(probs).any() or np.isnan(feats).any():
            raise ValueError("probs or penultimate contain NaN")
        num_classes, d = probs.shape[1], min(self.dim, feats.shape[1])
        blocks = num_classes if multi_label else num_classes - 1
        fisher_dim = blocks * d
        if fisher_dim > self.max_dim:
            what = f"K * dim = {num_classes} * {d}" if multi_label else f"(C-1) * dim = {num_classes - 1} * {d}"
            raise ValueError(
                f"bait: the Fisher matrix would be {fisher_dim} x {fisher_dim} ({what}),"
                f" above max_dim={self.max_dim}; lower dim (bait dim=...) or raise max_dim")

        device = torch.device(self.device)
        design = FisherDesign(probs, feats, d, self.lam, device, self.chunk_rows, multi_label)
        labeled = np.asarray(inputs.labeled, dtype=np.int64)
        picks, costs = design.select(labeled, inputs.candidates, budget, rng)
        return Selection(inputs.candidates[picks], costs, [self.name] * budget)


class FisherDesign:
    """The pool's reduced features and Fisher factors, and BAIT's forward-backward greedy on them."""

    def __init__(self, probs: np.ndarray, feats: np.ndarray, d: int, lam: float, device: torch.device,
                 chunk_rows: int | None = None, multi_label: bool = False) -> None:
        import torch

        self.device = device
        self.lam = lam
        self.multi_label = multi_label
        self.r = probs.shape[1] if multi_label else probs.shape[1] - 1
        self.d = d
        self.D = self.r * d
        work_per_row = self.r * self.r * max(d, self.r) + d * d
        self.chunk_rows = chunk_rows or max(1, CHUNK_ELEMENTS.get(device.type, 2**26) // work_per_row)
        self.probs = probs
        self.x = pca(feats, d, device, self.chunk_rows)  # (N, d) float64 on device
        ones = torch.ones(probs.shape[1], 1, dtype=torch.float64, device=device)
        self.basis = torch.linalg.qr(ones, mode="complete").Q[:, 1:]  # (C, C-1), orthogonal to the ones vector
        self.fisher = self.fisher_sum(np.arange(len(probs))) / len(probs)

    def reduced(self, rows: np.ndarray) -> torch.Tensor:
        """M_i = Q^T (diag p - p p^T) Q for the given pool rows, (n, C-1, C-1); multi-label diag(p (1 - p)),
        (n, K, K)."""
        import torch

        p = torch.as_tensor(np.asarray(self.probs[rows]), device=self.device).double()
        if self.multi_label:
            return torch.diag_embed(p * (1 - p))
        p = p / p.sum(dim=1, keepdim=True)
        a = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
        return self.basis.T @ a @ self.basis

    def factors(self, rows: np.ndarray) -> torch.Tensor:
        """R_i with R_i R_i^T = M_i, (n, C-1, C-1); multi-label diag(sqrt(p (1 - p))), (n, K, K)."""
        import torch

        if self.multi_label:
            p = torch.as_tensor(np.asarray(self.probs[rows]), device=self.device).double()
            return torch.diag_embed((p * (1 - p)).clamp_min(0).sqrt())
        values, vectors = torch.linalg.eigh(self.reduced(rows))
        return vectors * values.clamp_min(0).sqrt().unsqueeze(1)

    def fisher_sum(self, rows: np.ndarray) -> torch.Tensor:
        """sum over rows of M_i kron x_i x_i^T, as a D x D matrix (index a * d + j)."""
        import torch

        r, d = self.r, self.d
        total = torch.zeros(r * r, d * d, dtype=torch.float64, device=self.device)
        for start in range(0, len(rows), self.chunk_rows):
            chunk = rows[start:start + self.chunk_rows]
            m = self.reduced(chunk).reshape(len(chunk), r * r)
            x = self.x[torch.as_tensor(chunk, device=self.device)]
            total += m.T @ (x.unsqueeze(2) * x.unsqueeze(1)).reshape(len(chunk), d * d)
        return total.reshape(r, r, d, d).permute(0, 2, 1, 3).reshape(self.D, self.D)

    def quadratic(self, matrix: torch.Tensor, factor: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """U_i^T matrix U_i for U_i = R_i kron x_i, without forming U_i: (n, C-1, C-1)."""
        r, d = self.r, self.d
        blocks = matrix.reshape(r, d, r, d).permute(1, 0, 2, 3).reshape(d, r * r * d)
        y = ((x @ blocks).reshape(len(x), r, r, d) * x[:, None, None, :]).sum(dim=3)  # x^T block(a, b) x
        return factor.transpose(1, 2) @ y @ factor

    def cross(self, matrix: torch.Tensor, factor: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """U_i^T matrix for a D x m matrix, without forming U_i: (n, C-1, m)."""
        r, d, m = self.r, self.d, matrix.shape[1]
        blocks = matrix.reshape(r, d, m).permute(1, 0, 2).reshape(d, r * m)
        return factor.transpose(1, 2) @ (x @ blocks).reshape(len(x), r, m)

    def select(self, labeled: np.ndarray, candidates: np.ndarray, budget: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """BAIT's batch: (indices into `candidates`, best first; their removal costs)."""
        import torch

        a = self.lam * torch.eye(self.D, dtype=torch.float64, device=self.device)
        if len(labeled):
            a += self.fisher_sum(labeled) / (len(labeled) + budget)
        inv = torch.cholesky_inverse(torch.linalg.cholesky(a))   # K = A^-1
        inv_f_inv = inv @ self.fisher @ inv                       # K F K

        # Per candidate: R_i scaled so that each item weighs `weight` (U_i = sqrt(weight) R_i kron x_i), and the
        # traces of U_i^T K U_i and U_i^T KFK U_i, which bound the gain (see forward_gains).
        weight = batch_weight(len(labeled), budget)
        rows = torch.as_tensor(candidates, device=self.device)
        factor = torch.empty(len(candidates), self.r, self.r, dtype=torch.float64, device=self.device)
        trace_inv = torch.empty(len(candidates), dtype=torch.float64, device=self.device)
        trace_gain = torch.empty_like(trace_inv)
        for part in self.chunks(len(candidates)):
            factor[part] = self.factors(candidates[part]) * weight ** 0.5
            x = self.x[rows[part]]
            trace_inv[part] = _trace(self.quadratic(inv, factor[part], x))
            trace_gain[part] = _trace(self.quadratic(inv_f_inv, factor[part], x))

        # Greedy forward to 2B: add the best candidate, then update K, KFK and the candidates' traces
        # (tr(G W G^T) and tr(G W H^T) are elementwise sums: no per-candidate matrix products).
        chosen: list[int] = []
        available = torch.ones(len(candidates), dtype=torch.bool, device=self.device)
        for _ in range(min(2 * budget, len(candidates))):
            gains = self.forward_gains(inv, inv_f_inv, factor, rows, trace_inv, trace_gain, available)
            best = int(top_k(gains, 1, rng)[0])
            chosen.append(best)
            available[best] = False
            u = torch.kron(factor[best], self.x[rows[best]].unsqueeze(1))
            inv, inv_f_inv, p, q, w, e = self.rank_update(inv, inv_f_inv, u, sign=1)
            for part in self.chunks(len(candidates)):
                g, h = self.cross(torch.cat([p, q], dim=1), factor[part], self.x[rows[part]]).split(self.r, dim=2)
                gw = g @ w
                trace_inv[part] -= (gw * g).sum(dim=(1, 2))
                trace_gain[part] += ((gw @ e) * gw).sum(dim=(1, 2)) - 2 * (gw * h).sum(dim=(1, 2))

        # Greedy backward to B, on the batch's own U_i^T K U_i and U_i^T KFK U_i (2B of them), updated likewise.
        picked = torch.as_tensor(chosen, device=self.device)
        x = self.x[rows[picked]]
        z_inv, z_gain = self.quadratic(inv, factor[picked], x), self.quadratic(inv_f_inv, factor[picked], x)
        eye_r = torch.eye(self.r, dtype=torch.float64, device=self.device)
        costs = _trace(torch.linalg.solve(eye_r - z_inv, z_gain))   # trace rise if the item were dropped
        while len(chosen) > budget:
            drop = int(top_k(-costs, 1, rng)[0])
            u = torch.kron(factor[picked[drop]], x[drop].unsqueeze(1))
            inv, inv_f_inv, p, q, w, e = self.rank_update(inv, inv_f_inv, u, sign=-1)
            keep = torch.arange(len(chosen), device=self.device) != drop
            picked, x, z_inv, z_gain = picked[keep], x[keep], z_inv[keep], z_gain[keep]
            del chosen[drop]
            g, h = self.cross(torch.cat([p, q], dim=1), factor[picked], x).split(self.r, dim=2)
            gw = g @ w
            z_inv = z_inv + gw @ g.transpose(1, 2)
            z_gain = z_gain + gw @ h.transpose(1, 2) + h @ gw.transpose(1, 2) + gw @ e @ gw.transpose(1, 2)
            costs = _trace(torch.linalg.solve(eye_r - z_inv, z_gain))

        order = top_k(costs, len(chosen), rng).cpu().numpy()
        return np.array(chosen, dtype=np.int64)[order], costs.cpu().numpy()[order]

    def forward_gains(self, inv: torch.Tensor, inv_f_inv: torch.Tensor, factor: torch.Tensor, rows: torch.Tensor,
                      trace_inv: torch.Tensor, trace_gain: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """How much adding each candidate lowers trace(A^-1 F): gain_i = tr((I + Z1_i)^-1 Z2_i) with
        Z1_i = U_i^T K U_i, Z2_i = U_i^T KFK U_i, exact for every candidate that can be the best, -inf for the rest.

        Both Z are PSD and I + Z1 >= I, so tr(Z2) / (1 + tr(Z1)) <= gain_i <= tr(Z2). A candidate whose upper bound
        is below the best lower bound cannot win; the exact gain (a (C-1) x (C-1) solve on Z rebuilt from K, KFK)
        is computed only for the others, usually a handful."""
        import torch

        gains = torch.full_like(trace_gain, -torch.inf)
        gains[available & (trace_gain <= 0)] = 0.0  # Z2 = 0: adding the item changes nothing
        lower = torch.where(available, trace_gain / (1 + trace_inv.clamp_min(0)), -torch.inf)
        threshold = lower.max()
        contenders = torch.nonzero(available & (trace_gain > 0) & (trace_gain >= threshold * (1 - 1e-6))).squeeze(1)
        eye_r = torch.eye(self.r, dtype=torch.float64, device=self.device)
        for part in self.chunks(len(contenders)):
            idx = contenders[part]
            x = self.x[rows[idx]]
            z_inv, z_gain = self.quadratic(inv, factor[idx], x), self.quadratic(inv_f_inv, factor[idx], x)
            gains[idx] = _trace(torch.linalg.solve(eye_r + z_inv, z_gain))
        return gains

    def chunks(self, n: int) -> list[slice]:
        return [slice(start, min(start + self.chunk_rows, n)) for start in range(0, n, self.chunk_rows)]

    def rank_update(self, inv: torch.Tensor, inv_f_inv: torch.Tensor, u: torch.Tensor, sign: int):
        """Woodbury update of K = A^-1 and K F K for A -> A + sign U U^T.

        With P = K U, S = I + sign U^T K U, W = S^-1: K' = K - sign P W P^T, and with Q = K F K U, E = P^T F P:
        K'FK' = KFK - sign (P W Q^T + Q W P^T) + P W E W P^T. Returns K', K'FK', P, Q, W, E."""
        import torch

        p = inv @ u
        q = inv_f_inv @ u
        e = p.T @ self.fisher @ p
        w = torch.linalg.inv(torch.eye(self.r, dtype=u.dtype, device=u.device) + sign * (u.T @ p))
        pw = p @ w
        new_inv = inv - sign * pw @ p.T
        new_inv_f_inv = inv_f_inv - sign * (pw @ q.T + q @ pw.T) + pw @ e @ pw.T
        return new_inv, new_inv_f_inv, p, q, w, e


def batch_weight(num_labeled: int, budget: int) -> float:
    """A batch item's weight in A(S): B / (|L| + B), B times a labeled item's 1 / (|L| + B) (the original code's
    sqrt(B / (|L| + B)) scaling of each candidate's factor)."""
    return budget / (num_labeled + budget)


def _trace(matrices: torch.Tensor) -> torch.Tensor:
    return matrices.diagonal(dim1=-2, dim2=-1).sum(dim=-1)


def pca(feats: np.ndarray, d: int, device: torch.device, chunk_rows: int) -> torch.Tensor:
    """Rows of `feats`, centered over all rows and projected on the top-d principal directions (float64)."""
    import torch

    h = feats.shape[1]
    mean = torch.zeros(h, dtype=torch.float64, device=device)
    for start in range(0, len(feats), chunk_rows):
        mean += torch.as_tensor(np.asarray(feats[start:start + chunk_rows]), device=device).double().sum(dim=0)
    mean /= len(feats)
    cov = torch.zeros(h, h, dtype=torch.float64, device=device)
    for start in range(0, len(feats), chunk_rows):
        block = torch.as_tensor(np.asarray(feats[start:start + chunk_rows]), device=device).double() - mean
        cov += block.T @ block
    _, vectors = torch.linalg.eigh(cov)
    top = vectors[:, -d:].flip(1)  # eigh sorts ascending
    out = torch.empty(len(feats), d, dtype=torch.float64, device=device)
    for start in range(0, len(feats), chunk_rows):
        block = torch.as_tensor(np.asarray(feats[start:start + chunk_rows]), device=device).double() - mean
        out[start:start + len(block)] = block @ top
    return out
