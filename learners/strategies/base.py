"""What every selection strategy reads and returns, and the checks and cold-start rule they share.

Importing `learners.strategies` (for example to list the registered names in the web UI) loads numpy only:
modules import torch inside the functions that compute.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np

from learners.strategies.panel import Panel, PanelView
from learners.strategies.params import Param

if TYPE_CHECKING:
    import torch

Ask = Callable[[int], int]
INPUT_FIELDS = frozenset({"probs", "previous_probs", "features", "penultimate", "labels"})


@dataclass
class StrategyInputs:
    """Pool arrays for one selection. `candidates` are positions into the pool arrays (U: unlabeled, not in the
    eval set, not queued); `labeled`/`labels` are the positions and classes of the labeled pool items.
    `probs` (N x C), `features` (N x d) and `penultimate` (N x h) are indexed by pool position.
    `previous_probs` (N x C, by pool position like `probs`) is the softmax the previous round's head gave the same
    items, already aligned by item id by the caller (never by position: the pool order may change between rounds);
    a row that is all NaN means the item had no previous prediction (it is new to the pool). Read by `lftl`.
    `item_ids` (N, int64): the item id of each pool position, as app.jobs.select fills it (None when the caller
    has no item ids, e.g. arrays built in a test).

    `multi_label`: the project is multi-label. Then `labels` is an (n_labeled, K) 0/1 matrix (row i: the classes
    item `labeled[i]` has), `probs` (N x K) are independent sigmoids (rows need not sum to 1), and a sequential
    strategy's `ask(position)` answers with the item's (K,) 0/1 label vector. Strategies without a multi-label
    rule (`Strategy.supports_multi_label` False) refuse such inputs with a ValueError."""

    candidates: np.ndarray
    probs: np.ndarray | None = None
    previous_probs: np.ndarray | None = None
    features: np.ndarray | None = None
    penultimate: np.ndarray | None = None
    labeled: np.ndarray | None = None
    labels: np.ndarray | None = None
    step: int = 0  # picks this round has already made (sequential strategies continue their cycle from here)
    multi_label: bool = False
    item_ids: np.ndarray | None = None


@dataclass
class Selection:
    """Picks, best first: pool positions, one score per pick, and the arm (strategy name) that chose each."""

    positions: np.ndarray
    scores: np.ndarray
    arms: list[str]
    note: str = ""

    def __post_init__(self) -> None:
        if not len(self.positions) == len(self.scores) == len(self.arms):
            raise ValueError("positions, scores and arms must have the same length")

    def __len__(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class RoundOutcome:
    """A closed round, for `Strategy.fold_round`: its labeled picks in queue order as (arm, current label value)
    (eval-set entries left out), the current label value of every labeled pool item, and the project's shape.
    A label value lists class indices: one for a multi-class item, any number for a multi-label one."""

    round_id: int
    round_index: int
    picks: list[tuple[str, list[int]]]
    pool_labels: list[list[int]]
    num_classes: int
    multi_label: bool


class Strategy(ABC):
    """A selection rule. Call `select`; subclasses implement `_select`, which may assume that
    0 < budget <= len(candidates), the candidates are unique valid positions, and every input in `needs` is
    present (with one exception: a strategy needing `probs` never sees a missing `probs` - `select` falls back
    to random picks and says so in `Selection.note`; this is the cold start, before any head exists).

    `params` declares the user parameters (constructor keywords; forms and the CLI are built from them).
    A strategy that keeps state across rounds overrides the state hooks: the app stores what `state()` returns,
    JSON-safe, per project and strategy name, hands it back through `load_state` before the next `select`, asks
    `fold_round` for the new state when a round it chose closes, and draws `panel` on the Dashboard."""

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset()
    uses: ClassVar[frozenset[str]] = frozenset()  # inputs read when given, fine when missing (lftl's previous_probs)
    sequential: ClassVar[bool] = False
    # Whether the strategy has a multi-label rule (StrategyInputs.multi_label); if not, why (the refusal message).
    supports_multi_label: ClassVar[bool] = False
    no_multi_label_reason: ClassVar[str] = "specs/strategies.md gives it no multi-label rule"

    def select(
        self, inputs: StrategyInputs, budget: int, rng: np.random.Generator, ask: Ask | None = None
    ) -> Selection:
        """Up to `budget` candidates, best first (all of them when budget >= |U|).

        `ask(position) -> label` is used by sequential strategies only: in simulation it is the oracle, answering
        each pick before the next. Without it a sequential strategy treats its earlier picks of this call as
        taken but unlabeled (never as labeled); the web UI calls it with budget 1 after each human label."""
        if inputs.multi_label and not self.supports_multi_label:
            raise ValueError(multi_label_refusal(self))
        candidates = _checked_candidates(inputs)
        if budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        budget = min(budget, len(candidates))
        if budget == 0:
            return Selection(np.empty(0, dtype=np.int64), np.empty(0), [])
        if "probs" in self.needs and inputs.probs is None:
            picks = random_selection(candidates, budget, rng)
            picks.note = f"cold start: no head yet, {self.name} fell back to random"
            return picks
        for field in self.needs:
            if getattr(inputs, field) is None:
                raise ValueError(f"strategy {self.name!r} needs {field!r}, which was not given")
        if "labels" in self.needs and inputs.labeled is None:
            raise ValueError(f"strategy {self.name!r} needs the labeled positions ('labeled') with 'labels'")
        inputs = replace(inputs, candidates=candidates)
        if inputs.multi_label and inputs.labels is not None and inputs.probs is not None:
            inputs.labels = multilabel_matrix(inputs.labels, inputs.probs.shape[1])
            if inputs.labeled is not None and len(inputs.labels) != len(inputs.labeled):
                raise ValueError(f"multi-label labels have {len(inputs.labels)} rows for {len(inputs.labeled)} "
                                 f"labeled positions")
        if self.sequential:
            return self._select(inputs, budget, rng, ask=ask)
        return self._select(inputs, budget, rng)

    @abstractmethod
    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator, **kwargs) -> Selection:
        """Sequential strategies receive `ask=` (None or the callback) as a keyword."""

    def load_state(self, state: dict | None) -> None:
        """Take the state stored for this strategy in the project (None: nothing stored yet), before `select`."""

    def state(self) -> dict | None:
        """What to store after `select` (JSON-safe), or None to store nothing."""
        return None

    def fold_round(self, state: dict, outcome: RoundOutcome) -> dict | None:
        """The stored `state` with a closed round's labels folded in, or None when nothing changes. Called only
        when a state is stored, on the strategy built with that round's parameters; folding a round twice must
        change nothing."""
        return None

    def panel(self, state: dict, view: PanelView) -> Panel | None:
        """The Dashboard panel for the stored `state`, or None to show none."""
        return None


def multi_label_refusal(strategy: Strategy) -> str:
    """The message a strategy without a multi-label rule refuses multi-label inputs with."""
    return f"strategy {strategy.name!r} has no multi-label rule: {strategy.no_multi_label_reason}"


def multilabel_matrix(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Multi-label labels checked and returned as an (n, num_classes) float64 0/1 matrix (an empty input of any
    shape is (0, num_classes)); ValueError otherwise (e.g. class indices given where a matrix is expected)."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.size == 0:
        return labels.reshape(0, num_classes)
    if labels.ndim != 2 or labels.shape[1] != num_classes or not ((labels == 0.0) | (labels == 1.0)).all():
        raise ValueError(f"multi-label labels must be an (n, {num_classes}) 0/1 matrix (one column per class), "
                         f"got shape {labels.shape}")
    return labels


def _pool_size(inputs: StrategyInputs) -> int | None:
    for array in (inputs.probs, inputs.previous_probs, inputs.features, inputs.penultimate):
        if array is not None:
            return len(array)
    return None


def _checked_candidates(inputs: StrategyInputs) -> np.ndarray:
    candidates = np.asarray(inputs.candidates)
    if candidates.ndim != 1 or (len(candidates) and not np.issubdtype(candidates.dtype, np.integer)):
        raise ValueError("candidates must be a 1-D array of integer pool positions")
    candidates = candidates.astype(np.int64, copy=False)
    if len(candidates) == 0:
        return candidates
    pool_size = _pool_size(inputs)
    if candidates.min() < 0 or (pool_size is not None and candidates.max() >= pool_size):
        raise ValueError(f"candidate positions must lie in [0, {pool_size}), got range "
                         f"[{candidates.min()}, {candidates.max()}]")
    if np.bincount(candidates).max() > 1:
        raise ValueError("candidates contain duplicate positions")
    return candidates


def top_k(scores: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """Indices of the k largest `scores`, best first; ties are broken by a random permutation drawn from `rng`.

    Partial selection (torch.topk), no full sort: O(n) plus O(k log k)."""
    import torch

    permutation = torch.from_numpy(rng.permutation(len(scores))).to(scores.device)
    shuffled = scores[permutation]
    kth_value = torch.topk(shuffled, k, sorted=False).values.min()
    above = torch.nonzero(shuffled > kth_value).squeeze(1)
    at_kth = torch.nonzero(shuffled == kth_value).squeeze(1)[: k - len(above)]
    chosen = torch.cat([above, at_kth])
    # stable sort: equal scores keep their (random) shuffled order
    best_first = torch.sort(shuffled[chosen], descending=True, stable=True).indices
    return permutation[chosen[best_first]]


def random_selection(candidates: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
    """`budget` candidates uniformly at random, best first; each pick's score is its uniform random priority
    in [0, 1) (float64 draws: ties have probability ~0)."""
    priority = rng.random(len(candidates))
    top = np.argpartition(-priority, budget - 1)[:budget]
    order = top[np.argsort(-priority[top])]
    return Selection(candidates[order], priority[order], ["random"] * budget)
