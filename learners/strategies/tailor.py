"""`tailor`: TAILOR, Thompson sampling over active-learning algorithms (Zhang et al., NeurIPS 2023).

Each round the arms (default multi-class set: galaxy per class, confidence, badge, most_likely per class, margin,
coreset) each rank up to B candidates, and the batch is filled slot by slot by Thompson sampling from the posterior
in `posterior`; the math lives in `learners.tailor`. Each pick's arm name ("galaxy:3", "margin") is in
`Selection.arms` and its score is the theta . v its arm drew for that slot (a sampled expected reward, not a rank).

Protocol with the caller (the app keeps the posterior in the database; this layer never touches it):
1. set `strategy.posterior` to the stored `TailorPosterior` (or leave None), then call `select`;
2. save `strategy.posterior` afterwards: `select` replaces it with a fresh one when it is None or was built for
   other arms / classes, and says so in `Selection.note`;
3. when the round's labels are in: `posterior.update(posterior.arm_index(arms), one_hot(labels, K),
   decay=strategy.decay, round_id=...)` over the labeled picks whose arm index is not -1 (multi-label: the picks'
   (n, K) 0/1 label matrix instead of one_hot).

Multi-label: the project kind comes from `StrategyInputs.multi_label`, as for every strategy. Then
`StrategyInputs.labels` is an (n_labeled, K) 0/1 matrix, the posterior is Beta, the default arms are the
multi-label set, and every registered arm runs its own multi-label rule. `reward="pos"` is refused on multi-class
inputs (every arm would score 1). `seed` is handed to the arms whose constructor takes one (galaxy's class cycle).
`features` is in `needs` because an arm may read it; the default arms use probs, penultimate and labels.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from learners.strategies.base import Selection, Strategy, StrategyInputs
from learners.strategies.registry import register

if TYPE_CHECKING:
    from learners.tailor import TailorPosterior

# Arms named in the note, most pulled first.
NOTE_TOP_ARMS = 5


@register
class TailorStrategy(Strategy):
    name = "tailor"
    needs = frozenset({"probs", "features", "penultimate", "labels"})
    supports_multi_label = True

    def __init__(self, arms: list[str] | None = None, reward: str = "div", decay: float = 0.9, seed: int = 0,
                 device: str = "cpu") -> None:
        if reward not in ("div", "pos"):
            raise ValueError(f"unknown TAILOR reward {reward!r}; use 'div' or 'pos'")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must lie in (0, 1], got {decay}")
        self.arms = arms
        self.reward = reward
        self.decay = decay
        self.seed = seed
        self.device = device
        self.posterior: TailorPosterior | None = None

    def arm_specs(self, multi_label: bool) -> list[str]:
        """The configured arm specs, or the default set for the project kind."""
        from learners.tailor import DEFAULT_MULTICLASS_ARMS, DEFAULT_MULTILABEL_ARMS

        if self.arms is not None:
            return list(self.arms)
        return list(DEFAULT_MULTILABEL_ARMS if multi_label else DEFAULT_MULTICLASS_ARMS)

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> Selection:
        # learners.tailor imports this package's modules, so it is imported here, not at the top (import cycle).
        from learners import tailor

        num_classes = inputs.probs.shape[1]
        multi_label = bool(inputs.multi_label)
        if self.reward == "pos" and not multi_label:
            raise ValueError("TAILOR reward 'pos' is for multi-label projects (multi-class: every arm scores 1)")
        arms = tailor.build_arms(self.arm_specs(multi_label), num_classes, multi_label)
        names = [arm.name for arm in arms]
        posterior_note = self._use_posterior(names, num_classes, multi_label)
        reward = tailor.reward_vector(tailor.label_matrix(inputs, num_classes, multi_label), self.reward)
        rankings = tailor.arm_rankings(arms, inputs, budget, rng, self.device, multi_label, self.seed)
        picks = tailor.thompson_fill(self.posterior, rankings, reward, budget, rng)
        picked_arms = [names[m] for m in picks.arm_index]
        note = f"{posterior_note}; {pulls_note(picked_arms)}; reward {self.reward}"
        return Selection(picks.positions, picks.sampled_reward, picked_arms, note)

    def _use_posterior(self, arm_names: list[str], num_classes: int, multi_label: bool) -> str:
        """Keep `self.posterior` if it fits these arms, classes and project kind, else replace it with a fresh one;
        say which."""
        from learners.tailor import TailorPosterior

        old = self.posterior
        if old is not None and old.matches(arm_names, num_classes, multi_label):
            return f"TAILOR: {len(arm_names)} arms"
        self.posterior = TailorPosterior.fresh(arm_names, num_classes, multi_label)
        if old is None:
            return f"TAILOR: arm set built ({len(arm_names)} arms)"
        return f"TAILOR: arm set rebuilt because {rebuild_reason(old, arm_names, num_classes, multi_label)} " \
               f"({len(arm_names)} arms)"


def rebuild_reason(old: TailorPosterior, arm_names: list[str], num_classes: int, multi_label: bool) -> str:
    if old.multi_label != multi_label:
        return f"the project is now {'multi-label' if multi_label else 'multi-class'}"
    if old.num_classes != num_classes:
        return f"the number of classes changed from {old.num_classes} to {num_classes}"
    if len(old.arm_names) != len(arm_names):
        return f"the number of arms changed from {len(old.arm_names)} to {len(arm_names)}"
    return "the arm set changed"


def pulls_note(picked_arms: list[str]) -> str:
    """Pulls per arm, the most pulled first, e.g. "pulls: galaxy:3 x12, margin x5 (+3 more arms)"."""
    counts = Counter(picked_arms).most_common()
    shown = ", ".join(f"{name} x{count}" for name, count in counts[:NOTE_TOP_ARMS])
    more = f" (+{len(counts) - NOTE_TOP_ARMS} more arms)" if len(counts) > NOTE_TOP_ARMS else ""
    return f"pulls: {shown}{more}"
