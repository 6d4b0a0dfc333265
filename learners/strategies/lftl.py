"""LFTL's contrastive active sampling (Lyu et al., ECCV 2024; specs/lftl.md, "Contrastive Active Sampling").

Over the candidates (the unlabeled pool U, which is also the "pool" of the top-k default below):

1. Contrast the current head's softmax P with the previous round's P_prev (`StrategyInputs.previous_probs`,
   aligned by item id by the caller): Pc = P + alpha (P - P_prev), alpha = `contrast`. A row of P_prev that is
   all NaN (item new to the pool), or no P_prev at all (first round), uses P: its contrast is 0.
   `space="log"` contrasts log-probabilities instead: log Pc = log P + alpha (log P - log P_prev), renormalised
   with a softmax (Pc is proportional to P^(1+alpha) / P_prev^alpha; probabilities are floored at 1e-12 before
   the log, as `entropy` does). The default `"prob"` is the reference code's choice (Pc may leave [0, 1]).
2. u = top1(Pc) - top2(Pc), computed exactly as the `margin` strategy computes its gap.
3. Class balance, lambda = `balance` (off when 0): yhat = argmax P; among the `topk` candidates with the largest
   u, count yhat per class and divide by the largest count, giving c; u = u / max(u) + lambda c[yhat].
   (When every u is 0, u / max(u) is taken as 0.) Default topk = min(500, ceil(5 % of the candidates)).
4. Picks: the B smallest u. Scores are 1 - u (float64; higher = picked first), so that with alpha = 0 and
   lambda = 0 the picks, their order, their scores and the tie-breaking (`top_k` with the same rng) are
   exactly `margin`'s.

Step 5 of the spec (keep P as the next round's P_prev) is the caller's: strategies do not store state.
Rows are processed in chunks with torch on `device`, like learners.strategies.uncertainty.

Multi-label: refused (ValueError "strategy 'lftl' has no multi-label rule"). specs/lftl.md defines the contrast on
softmax outputs, u as the top-2 gap of one class distribution and the balance term on one predicted class per item
(yhat = argmax P); it gives no multi-label rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from learners.strategies.base import Selection, Strategy, StrategyInputs, top_k
from learners.strategies.params import Param
from learners.strategies.registry import register
from learners.strategies.uncertainty import CHUNK_ELEMENTS, MarginStrategy, _take_rows

if TYPE_CHECKING:
    import torch

SPACES = ("prob", "log")
LOG_FLOOR = 1e-12
TOPK_CAP, TOPK_SHARE = 500, 0.05
_MARGIN = MarginStrategy()  # its `uncertainty` (1 - gap of a probability block) is reused as is


def contrast_probs(probs: torch.Tensor, previous: torch.Tensor, alpha: float, space: str) -> torch.Tensor:
    """Pc for a block of rows (step 1); `previous` has no NaN here (missing rows were replaced by P)."""
    import torch

    if space == "log":
        log_p, log_prev = probs.clamp_min(LOG_FLOOR).log(), previous.clamp_min(LOG_FLOOR).log()
        return torch.softmax(log_p + alpha * (log_p - log_prev), dim=1)
    return probs + alpha * (probs - previous)


def balance_weights(u: torch.Tensor, y_hat: torch.Tensor, num_classes: int, topk: int,
                    rng: np.random.Generator) -> torch.Tensor:
    """c[yhat] per row (step 3): yhat counted per class over the `topk` rows with the largest u (ties broken by
    `rng`), divided by the largest count."""
    import torch

    confident = top_k(u, topk, rng)
    counts = torch.bincount(y_hat[confident], minlength=num_classes).double()
    return (counts / counts.max())[y_hat]


@dataclass
class _Margins:
    """Per candidate: `margin`'s score of Pc, 1 - u (float64), yhat = argmax P, and how many rows had no
    previous prediction."""

    one_minus_u: torch.Tensor
    y_hat: torch.Tensor
    missing_previous: int


@register
class LftlStrategy(Strategy):
    """`contrast` (alpha), `balance` (lambda, 0 = off), `topk` (rows counted for the class balance; None = the
    default above), `space` ("prob" or "log": where the contrast is taken). See the module docstring."""

    name = "lftl"
    needs = frozenset({"probs"})
    uses = frozenset({"previous_probs"})
    no_multi_label_reason = ("specs/lftl.md defines its contrast, top-2 margin and class balance on softmax outputs "
                             "with one predicted class per item, and gives no multi-label rule")
    params = (
        Param("contrast", float, 0.03, "alpha: how far the current predictions are pushed away from the previous "
                                       "round's (0: plain margin)"),
        Param("balance", float, 0.1, "lambda: weight of the class-balance term (0: off)", minimum=0.0),
        Param("topk", int, None, "candidates counted for the class balance (None: min(500, 5% of the candidates))",
              minimum=1),
        Param("space", str, "prob", "where the contrast is taken: probabilities or log-probabilities",
              choices=SPACES),
    )

    def __init__(self, contrast: float = 0.03, balance: float = 0.1, topk: int | None = None, space: str = "prob",
                 device: str = "cpu", chunk_rows: int | None = None) -> None:
        self.contrast, self.balance, self.topk, self.space = contrast, balance, topk, space
        self.device, self.chunk_rows = device, chunk_rows

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> Selection:
        probs, previous = inputs.probs, inputs.previous_probs
        if probs.ndim != 2 or probs.shape[1] < 1:
            raise ValueError(f"probs must be an (N, C) array, got shape {probs.shape}")
        if previous is not None and previous.shape != probs.shape:
            raise ValueError(f"previous_probs must have the shape of probs {probs.shape}, got {previous.shape}")
        margins = self._margins(probs, previous, inputs.candidates)
        topk = self._topk(len(inputs.candidates))
        scores = margins.one_minus_u  # without the balance term, exactly margin's scores
        if self.balance > 0:
            u = 1.0 - scores
            largest = u.max()
            weights = balance_weights(u, margins.y_hat, probs.shape[1], topk, rng)
            scores = 1.0 - ((u / largest if largest > 0 else u) + self.balance * weights)
        order = top_k(scores, budget, rng).cpu().numpy()
        note = self._note(previous is not None, margins.missing_previous, len(inputs.candidates), topk)
        return Selection(inputs.candidates[order], scores[order].cpu().numpy(), [self.name] * budget, note)

    def _topk(self, pool: int) -> int:
        topk = self.topk if self.topk is not None else min(TOPK_CAP, math.ceil(TOPK_SHARE * pool))
        return min(topk, pool)

    def _margins(self, probs: np.ndarray, previous: np.ndarray | None, positions: np.ndarray) -> _Margins:
        """Steps 1-2 in row chunks: 1 - u with u = top1 - top2 of Pc, and yhat = argmax P."""
        import torch

        device = torch.device(self.device)
        chunk_rows = self.chunk_rows or max(1, CHUNK_ELEMENTS.get(device.type, 2**26) // probs.shape[1])
        one_minus_u = torch.empty(len(positions), dtype=torch.float64, device=device)
        y_hat = torch.empty(len(positions), dtype=torch.int64, device=device)
        missing = 0
        for start in range(0, len(positions), chunk_rows):
            rows = positions[start:start + chunk_rows]
            block = torch.from_numpy(_take_rows(probs, rows)).to(device, non_blocking=True)
            if block.isnan().any():
                bad = rows[block.isnan().any(dim=1).cpu().numpy()]
                raise ValueError(f"probs contain NaN for {len(bad)} candidate(s), e.g. pool positions "
                                 f"{bad[:5].tolist()}")
            contrasted = block
            if previous is not None:
                prev_block = torch.from_numpy(_take_rows(previous, rows)).to(device, non_blocking=True)
                prev_block, absent = _fill_missing(prev_block, block, rows)
                missing += absent
                contrasted = contrast_probs(block, prev_block.to(block.dtype), self.contrast, self.space)
            one_minus_u[start:start + len(rows)] = _MARGIN.uncertainty(contrasted)
            y_hat[start:start + len(rows)] = block.argmax(dim=1)
        return _Margins(one_minus_u, y_hat, missing)

    def _note(self, has_previous: bool, missing: int, pool: int, topk: int) -> str:
        balance = f"balance lambda={self.balance:g} over the top {topk}" if self.balance > 0 else "balance off"
        if not has_previous:
            previous = "no previous predictions: contrast 0 for every candidate"
        elif missing:
            previous = f"previous predictions for {pool - missing}/{pool} candidates ({missing} new: contrast 0)"
        else:
            previous = f"previous predictions for all {pool} candidates"
        return f"lftl: {self.space} space, contrast alpha={self.contrast:g}, {balance}; {previous}"


def _fill_missing(previous: torch.Tensor, probs: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, int]:
    """`previous` with its all-NaN rows replaced by `probs` (no previous prediction: contrast 0), and how many
    there were. A row with only some NaN is an error."""
    import torch

    nan = previous.isnan()
    absent, partial = nan.all(dim=1), nan.any(dim=1)
    if (partial & ~absent).any():
        bad = rows[(partial & ~absent).cpu().numpy()]
        raise ValueError(f"previous_probs rows must be all NaN (no previous prediction) or have no NaN; "
                         f"{len(bad)} mix both, e.g. pool positions {bad[:5].tolist()}")
    return torch.where(absent.unsqueeze(1), probs.to(previous.dtype), previous), int(absent.sum())
