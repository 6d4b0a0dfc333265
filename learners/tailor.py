"""TAILOR's bandit (Zhang et al., NeurIPS 2023; specs/tailor.md): the posterior over arms, the reward, and the
Thompson-sampling fill of a batch. The arms themselves (registered strategies and built-in rules) are composed in
`learners.strategies.tailor`, which imports this module; this one imports no strategy.

- Posterior (`TailorPosterior`): stats (2, M, K). Multi-class: theta_m ~ Dirichlet(stats[0, m] + 1). Multi-label:
  theta_m,k ~ Beta(stats[0, m, k], stats[1, m, k]). Update: stats = decay * stats + new, new[0, m] += y,
  new[1, m] += 1 - y over the labeled picks of arm m (`pick_counts`). Within a round, `plus` gives the posterior
  with the round's answers so far added (no decay, nothing recorded): what TAILOR draws from between answers.
- Reward (`reward_vector`): `div` (class diversity) or `pos` (all ones: find positives, multi-label).
- Filling (`thompson_fill`): the posterior is fixed for the round; draws are made in blocks of slots, all arms at
  once, so B = 1000 slots x M = 200 arms x K = 10 classes takes well under a second.

Layer rule: nothing here touches a database; the caller stores `TailorPosterior.to_dict()`. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

# Draws per block of slots in `thompson_fill`: at most this many theta entries (32 MB of float64) at once.
DRAW_ELEMENTS = 2**22


# ---------------------------------------------------------------------------------------------- rewards


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, K) 0/1 float64 rows for class indices `labels`."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or (len(labels) and (labels.min() < 0 or labels.max() >= num_classes)):
        raise ValueError(f"labels must be 1-D class indices in [0, {num_classes})")
    out = np.zeros((len(labels), num_classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def label_rows(values: list[list[int]], num_classes: int) -> np.ndarray:
    """Stored label values (the class indices each item has: one for a multi-class item) as (n, K) 0/1 float64
    rows, as the posterior and the reward read them (one-hot rows for multi-class)."""
    rows = np.zeros((len(values), num_classes))
    for row, value in enumerate(values):
        rows[row, value] = 1.0
    return rows


def reward_vector(labels: np.ndarray, kind: str = "div") -> np.ndarray:
    """The reward v (K,) for the labeled set's label vectors `labels` (|L| x K, 0/1; one-hot rows if multi-class).

    div: w_k = max(1, count_k); where w_k / |L| > 0.5, w_k = -w_k; v = 1 / w. A class holding over half the labels
    costs. As in the spec (and reference code) the flip reads the clipped w_k, so with |L| = 1 every class flips;
    with |L| = 0 nothing flips (v = ones).
    pos: all ones (find positives). Meant for multi-label; `TailorStrategy` refuses it for multi-class, where every
    arm would score theta . v = 1."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2:
        raise ValueError(f"labels must be an (|L|, K) 0/1 matrix, got shape {labels.shape}")
    if kind == "pos":
        return np.ones(labels.shape[1])
    if kind != "div":
        raise ValueError(f"unknown TAILOR reward {kind!r}; use 'div' or 'pos'")
    w = np.maximum(1.0, labels.sum(axis=0))
    if len(labels):
        w[w / len(labels) > 0.5] *= -1
    return 1.0 / w


# -------------------------------------------------------------------------------------------- posterior


@dataclass
class TailorPosterior:
    """Per-arm, per-class statistics stats (2, M, K) float64; `folded_rounds` lists the round ids already folded
    in by `update`, so that a caller replaying a round does not count it twice."""

    arm_names: list[str]
    stats: np.ndarray
    multi_label: bool = False
    folded_rounds: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.arm_names = list(self.arm_names)
        self.stats = np.array(self.stats, dtype=np.float64)
        if self.stats.ndim != 3 or self.stats.shape[:2] != (2, len(self.arm_names)):
            raise ValueError(f"stats must have shape (2, {len(self.arm_names)}, K), got {self.stats.shape}")
        if len(set(self.arm_names)) != len(self.arm_names):
            raise ValueError("arm names must be unique")

    @classmethod
    def fresh(cls, arm_names: list[str], num_classes: int, multi_label: bool = False) -> TailorPosterior:
        """The prior: stats all ones (spec)."""
        return cls(list(arm_names), np.ones((2, len(arm_names), num_classes)), multi_label)

    @property
    def num_classes(self) -> int:
        return self.stats.shape[2]

    def to_dict(self) -> dict:
        """JSON-safe (lists, floats, bools); `from_dict(to_dict())` reproduces it exactly."""
        return {"arm_names": list(self.arm_names), "stats": self.stats.tolist(), "multi_label": bool(self.multi_label),
                "folded_rounds": [int(r) for r in self.folded_rounds]}

    @classmethod
    def from_dict(cls, data: dict) -> TailorPosterior:
        return cls(data["arm_names"], np.array(data["stats"], dtype=np.float64), bool(data["multi_label"]),
                   [int(r) for r in data.get("folded_rounds", [])])

    def matches(self, arm_names: list[str], num_classes: int, multi_label: bool | None = None) -> bool:
        """Whether this posterior is for exactly these arms (same order) and classes (and mode, if given)."""
        return (list(arm_names) == self.arm_names and num_classes == self.num_classes
                and (multi_label is None or multi_label == self.multi_label))

    def arm_index(self, names: list[str]) -> np.ndarray:
        """Index of each arm name; -1 for names that are not arms (eval-set or random picks)."""
        index = {name: m for m, name in enumerate(self.arm_names)}
        return np.array([index.get(name, -1) for name in names], dtype=np.int64)

    def expected_theta(self) -> np.ndarray:
        """(M, K) posterior mean of theta: Dirichlet (stats[0] + 1) / sum, or Beta stats[0] / (stats[0] + stats[1])."""
        if self.multi_label:
            return self.stats[0] / (self.stats[0] + self.stats[1])
        alpha = self.stats[0] + 1.0
        return alpha / alpha.sum(axis=1, keepdims=True)

    def expected_reward(self, reward: np.ndarray) -> np.ndarray:
        """(M,) each arm's posterior expected reward E[theta_m] . v."""
        return self.expected_theta() @ np.asarray(reward, dtype=np.float64)

    def pick_counts(self, arm_index: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """new (2, M, K) for labeled picks: pick i was made by arm `arm_index[i]` and got label vector `labels[i]`
        (0/1, one-hot for multi-class; pass only labeled picks); new[0, m] += y, new[1, m] += 1 - y."""
        arm_index = np.asarray(arm_index, dtype=np.int64).reshape(-1)
        labels = np.asarray(labels, dtype=np.float64)
        if labels.size == 0:
            labels = labels.reshape(0, self.num_classes)
        if labels.shape != (len(arm_index), self.num_classes) or not np.isin(labels, (0.0, 1.0)).all():
            raise ValueError(f"labels must be a ({len(arm_index)}, {self.num_classes}) 0/1 matrix, "
                             f"got shape {labels.shape}")
        if len(arm_index) and (arm_index.min() < 0 or arm_index.max() >= len(self.arm_names)):
            raise ValueError(f"arm indices must lie in [0, {len(self.arm_names)}) (filter out non-arm picks)")
        new = np.zeros_like(self.stats)
        np.add.at(new[0], arm_index, labels)
        np.add.at(new[1], arm_index, 1.0 - labels)
        return new

    def update(self, arm_index: np.ndarray, labels: np.ndarray, decay: float = 0.9,
               round_id: int | None = None) -> bool:
        """Fold in one round's labeled picks (`pick_counts`): stats = decay * stats + new. With `round_id` already
        in `folded_rounds` nothing changes and False is returned; otherwise the round id (if given) is recorded
        and True returned."""
        if round_id is not None and round_id in self.folded_rounds:
            return False
        new = self.pick_counts(arm_index, labels)
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must lie in (0, 1], got {decay}")
        self.stats = decay * self.stats + new
        if round_id is not None:
            self.folded_rounds.append(int(round_id))
        return True

    def plus(self, arm_index: np.ndarray, labels: np.ndarray) -> TailorPosterior:
        """A new posterior with these labeled picks added (stats + new, `pick_counts`): no decay, no round
        recorded, this one unchanged. The round's decay comes once, when the round is folded by `update`."""
        return TailorPosterior(self.arm_names, self.stats + self.pick_counts(arm_index, labels), self.multi_label,
                               list(self.folded_rounds))

    def sample_rewards(self, reward: np.ndarray, slots: int, rng: np.random.Generator) -> np.ndarray:
        """(slots, M) independent draws of theta_m . v, all arms at once."""
        shape = (slots, *self.stats.shape[1:])
        if self.multi_label:
            return rng.beta(self.stats[0], self.stats[1], size=shape) @ reward
        gammas = rng.standard_gamma(self.stats[0] + 1.0, size=shape)  # normalised gammas are Dirichlet draws
        return (gammas @ reward) / gammas.sum(axis=2)


# ------------------------------------------------------------------------------------------------ filling


class ThompsonPicks(NamedTuple):
    """One round's picks in slot order: pool positions, the arm (index) that made each, and the theta . v that arm
    drew for the slot."""

    positions: np.ndarray
    arm_index: np.ndarray
    sampled_reward: np.ndarray


def thompson_fill(posterior: TailorPosterior, rankings: list[np.ndarray], reward: np.ndarray, budget: int,
                  rng: np.random.Generator, taken: np.ndarray | None = None) -> ThompsonPicks:
    """Fill up to `budget` slots by Thompson sampling with the posterior held fixed.

    Per slot: draw theta for every arm, m* = argmax theta_m . v among the arms still alive, take arm m*'s next
    ranked item not taken this round (nor in `taken`); an arm with nothing left is dropped for the rest of the round
    and the slot is drawn again. Stops when the budget is filled or every arm is exhausted. Draws come in blocks
    (at most DRAW_ELEMENTS thetas) and each arm keeps a pointer into its ranking, so a round costs
    O(B M K) for the draws plus O(total ranking length) for the skipping."""
    if len(rankings) != len(posterior.arm_names):
        raise ValueError(f"{len(rankings)} rankings for {len(posterior.arm_names)} arms")
    reward = np.asarray(reward, dtype=np.float64)
    if reward.shape != (posterior.num_classes,):
        raise ValueError(f"reward must have shape ({posterior.num_classes},), got {reward.shape}")
    rankings = [np.asarray(r, dtype=np.int64) for r in rankings]
    lists: list[list[int] | None] = [None] * len(rankings)  # python ints (fast element access), made on first pull
    pointers = [0] * len(rankings)
    alive = np.array([len(r) > 0 for r in rankings])
    used = set() if taken is None else set(np.asarray(taken, dtype=np.int64).tolist())
    positions, arms, drawn = [], [], []
    block_rows = max(1, DRAW_ELEMENTS // posterior.stats[0].size)
    while len(positions) < budget and alive.any():
        block = posterior.sample_rewards(reward, min(block_rows, budget - len(positions)), rng)
        block[:, ~alive] = -np.inf
        for row in block:
            m = int(np.argmax(row))
            if lists[m] is None:
                lists[m] = rankings[m].tolist()
            ranking, at = lists[m], pointers[m]
            while at < len(ranking) and ranking[at] in used:
                at += 1
            pointers[m] = at + 1
            if at == len(ranking):  # exhausted: drop the arm, redraw this slot
                alive[m] = False
                block[:, m] = -np.inf
                if not alive.any():
                    break
                continue
            used.add(ranking[at])
            positions.append(ranking[at])
            arms.append(m)
            drawn.append(row[m])
            if len(positions) == budget:
                break
    return ThompsonPicks(np.array(positions, dtype=np.int64), np.array(arms, dtype=np.int64),
                         np.array(drawn, dtype=np.float64))
