"""`tailor`: TAILOR, Thompson sampling over active-learning algorithms (Zhang et al., NeurIPS 2023; specs/tailor.md).

Each round the arms (default multi-class set: galaxy, confidence, badge, margin; see DEFAULT_MULTICLASS_ARMS) each
rank up to B candidates, and the batch is filled slot by slot by Thompson sampling from the posterior (`learners.tailor`: posterior, reward, filling). Each pick's arm name ("galaxy:3", "margin") is in
`Selection.arms` and its score is the theta . v its arm drew for that slot (a sampled expected reward, not a rank).

- Arms (`Arm`, `build_arms`, `arm_rankings`): any registered strategy, plus the built-in rules `most_likely`
  (largest P[:, k]), and multi-label only `emal` (smallest sum_k |P[:, k] - 0.5|) and `uncertain` (smallest
  |P[:, k] - 0.5|). `galaxy`, `most_likely` and `uncertain` expand into one arm per class with a trailing `*`
  ("galaxy*" -> "galaxy:0", "galaxy:1", ...); "galaxy:3" names one such arm. Per-class galaxy arms are
  `galaxy.GalaxyStrategy(classes=[k])` in both modes (multi-label: the line is ordered by P[:, k] and y_k is
  column k of the label matrix). Sequential arms (galaxy) run without `ask`, so their earlier picks of the round
  are taken, never labeled (a deviation from the spec).
- State (the base-class hooks; the app stores it per project): {"posterior": TailorPosterior.to_dict(),
  "history": [{round, expected_reward: {arm: E[theta] . v}} per folded round], "round_picks": {item id: arm} of
  the round in progress}. `select` keeps the loaded posterior when it fits the arms and classes, else starts a
  fresh one and says so in `Selection.note`. `fold_round` adds a closed round's labeled picks to the posterior of
  the arms that made them (stats = decay stats + new), once per round id, and forgets the round's picks. `panel`
  shows pulls per round, each arm's expected reward, the classes each arm brought in and the reward per class,
  per-class arms named by their class ("galaxy[cat]").
- Update (`update`): "round" is the paper's batch rule: the whole round is drawn from the posterior the last
  round left, with the reward of the labels at the round's start. "answer" (default) suits a live tool, where
  labels arrive one at a time: TAILOR is then sequential (the app keeps a few picks queued ahead and selects again
  after each answer), and every selection draws from the stored posterior plus this round's picks answered so far
  (`TailorPosterior.plus`: those picks are remembered in `round_picks` by item id, their current labels read from
  the inputs, so a repeated selection never counts an answer twice) with the reward of all labels so far. The
  stored posterior itself changes only in `fold_round`, from the closed round's picks and labels, exactly as with
  "round": each answer counts once, the decay once per round. With `ask` each pick is answered before the next
  draw. `StrategyInputs.step` 0 (a round's first selection) starts `round_picks` afresh.

Multi-label: the project kind comes from `StrategyInputs.multi_label`, as for every strategy. Then
`StrategyInputs.labels` is an (n_labeled, K) 0/1 matrix, the posterior is Beta, the default arms are the
multi-label set, and every registered arm runs its own multi-label rule (strategies without one are refused when
the arms are built). `reward="pos"` is refused on multi-class inputs (every arm would score 1). `seed` (an
internal, not a user parameter) is handed to the arms whose constructor takes one (galaxy's class cycle).
`features` is in `needs` because an arm may read it; the default arms use probs, penultimate and labels.
"""
from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from learners.strategies.base import (
    Ask,
    RoundOutcome,
    Selection,
    Strategy,
    StrategyInputs,
    multi_label_refusal,
    multilabel_matrix,
    top_k,
)
from learners.strategies.panel import Bars, Panel, PanelView, Pivot, StackedBars, Table
from learners.strategies.params import Param
from learners.strategies.registry import available_strategies, get_strategy, register
from learners.tailor import TailorPosterior, ThompsonPicks, label_rows, one_hot, reward_vector, thompson_fill

# The paper's multi-class set is galaxy per class, confidence, badge and most_likely per class (specs/tailor.md
# adds margin and coreset). Two deviations, each measured with benchmarks/bench_tailor.py (rounds of 20, 5 seeds,
# labels to random's final accuracy, mean +- SE):
# - most_likely per class is left out (as the reference code's multi-class `uncertain_algs` set leaves it out):
#   the class-balance reward pays most for the most confident item of the rarest class, so TAILOR settled on those
#   arms (85 of 100 pulls by round 14 on the digits) and its balanced labels taught the head little.
# - one galaxy arm over all classes instead of one per class, and no coreset. With K per-class galaxy arms the
#   arm of the rarest class always wins the draw under the class-balance reward (80-90 of 100 pulls per round), so
#   TAILOR became a class-balancing rule: on the balanced digits 161 +- 12 labels against margin's 128 +- 4. With
#   these four arms: 133 +- 14 (within noise of margin, and more balanced); on the imbalanced digits 103 +- 10
#   against the best arm galaxy's 81 +- 10 (within noise; per-class arms: 86 +- 7, more balanced). For a long-tailed
#   pool `arms` = "galaxy*, confidence, badge, margin" brings rare classes in harder; "most_likely*" stays available.
DEFAULT_MULTICLASS_ARMS = ("galaxy", "confidence", "badge", "margin")
DEFAULT_MULTILABEL_ARMS = ("emal", "uncertain*", "most_likely*", "galaxy*")
ARM_EXAMPLES = ("galaxy*", "most_likely*", "confidence", "margin", "entropy", "badge", "coreset", "random", "bait",
                "direct")

UPDATES = ("answer", "round")  # when the posterior learns: from each answer, or once per round (the paper)

PER_CLASS_RULES = frozenset({"galaxy", "most_likely", "uncertain"})  # may (or must) be tied to one class
CLASS_ONLY_RULES = frozenset({"most_likely", "uncertain"})           # are only defined for one class
MULTILABEL_ONLY_RULES = frozenset({"emal", "uncertain"})
BUILT_IN_RULES = frozenset({"most_likely", "emal", "uncertain"})

# Arms named in the note, most pulled first.
NOTE_TOP_ARMS = 5
# Arms drawn in the panel's expected-reward chart, best first.
PANEL_TOP_ARMS = 15


@dataclass(frozen=True)
class Arm:
    """One bandit arm: a strategy (registered name or built-in rule), optionally tied to one class."""

    strategy: str
    cls: int | None = None

    @property
    def name(self) -> str:
        """The name recorded with each pick: the strategy ("margin"), or strategy:class ("galaxy:3")."""
        return self.strategy if self.cls is None else f"{self.strategy}:{self.cls}"


def build_arms(specs: list[str] | tuple[str, ...], num_classes: int, multi_label: bool = False) -> list[Arm]:
    """The arms named by `specs`: "name" (one arm), "name*" (one arm per class) or "name:k" (class k's arm).

    Raises ValueError naming the bad spec: unknown names, "tailor" itself, per-class forms of rules that have no
    class, class-less forms of `most_likely`/`uncertain`, multi-label-only rules in multi-class mode, and in
    multi-label mode the registered strategies without a multi-label rule (`Strategy.supports_multi_label`) and a
    class-less `galaxy` (the spec's multi-label arms are per class). Duplicate arms are refused: arm names key the
    posterior."""
    if num_classes < 1:
        raise ValueError(f"TAILOR needs at least one class, got {num_classes}")
    arms: list[Arm] = []
    for spec in specs:
        arms.extend(_parse_arm_spec(spec, num_classes, multi_label))
    if not arms:
        raise ValueError("TAILOR needs at least one arm")
    names = [arm.name for arm in arms]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"TAILOR arm specs give duplicate arms: {duplicates}")
    return arms


def _parse_arm_spec(spec: str, num_classes: int, multi_label: bool) -> list[Arm]:
    name, per_class, cls = _split_arm_spec(spec, num_classes)
    _check_arm_name(spec, name, multi_label)
    if (per_class or cls is not None) and name not in PER_CLASS_RULES:
        raise ValueError(f"TAILOR arm {spec!r}: only {sorted(PER_CLASS_RULES)} have per-class arms")
    if not per_class and cls is None and (name in CLASS_ONLY_RULES or (multi_label and name == "galaxy")):
        raise ValueError(f"TAILOR arm {spec!r} is defined per class: write {name + '*'!r} or '{name}:k'")
    if per_class:
        return [Arm(name, k) for k in range(num_classes)]
    return [Arm(name, cls)]


def _split_arm_spec(spec: str, num_classes: int) -> tuple[str, bool, int | None]:
    """("galaxy", True, None) for "galaxy*", ("galaxy", False, 3) for "galaxy:3", ("margin", False, None)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"TAILOR arm spec must be a non-empty string, got {spec!r}")
    if spec.endswith("*"):
        return spec[:-1], True, None
    if ":" in spec:
        name, _, cls = spec.partition(":")
        if not cls.isdigit() or int(cls) >= num_classes:
            raise ValueError(f"TAILOR arm {spec!r}: the class must be an integer in [0, {num_classes})")
        return name, False, int(cls)
    return spec, False, None


def _check_arm_name(spec: str, name: str, multi_label: bool) -> None:
    if name == "tailor":
        raise ValueError(f"TAILOR arm {spec!r}: tailor cannot be one of its own arms")
    if name in MULTILABEL_ONLY_RULES and not multi_label:
        raise ValueError(f"TAILOR arm {spec!r} is a multi-label rule; this project is multi-class")
    if name in BUILT_IN_RULES:
        return
    if name not in available_strategies():
        raise ValueError(f"TAILOR arm {spec!r}: unknown strategy {name!r}; known: "
                         f"{', '.join(sorted(set(available_strategies()) - {'tailor'} | BUILT_IN_RULES))}")
    strategy = get_strategy(name)
    if multi_label and not strategy.supports_multi_label:
        raise ValueError(f"TAILOR arm {spec!r}: {multi_label_refusal(strategy)}")


def arm_rankings(arms: list[Arm], inputs: StrategyInputs, budget: int, rng: np.random.Generator,
                 device: str = "cpu", multi_label: bool = False, seed: int = 0) -> list[np.ndarray]:
    """For each arm, up to `budget` pool positions from `inputs.candidates`, best first.

    Multi-label when `multi_label` or `inputs.multi_label`: registered arms then get inputs with `multi_label`
    set, so each runs its own multi-label rule. Registered strategies run through `select` (built with `device`
    and `seed` where their constructor takes them); galaxy runs without `ask`, so its picks are taken, not
    labeled. Each arm gets its own child generator of `rng` (adding an arm does not change the others' rankings).
    The candidates' probabilities are gathered once for all built-in rules. Raises ValueError when an arm's
    inputs are missing (e.g. coreset without penultimate)."""
    if inputs.probs is None:
        raise ValueError("TAILOR arms need probs (there is no head yet)")
    budget = min(budget, len(inputs.candidates))
    if budget <= 0:
        return [np.empty(0, dtype=np.int64) for _ in arms]
    if multi_label and not inputs.multi_label:
        inputs = replace(inputs, multi_label=True)
    candidate_probs = None
    if any(arm.strategy in BUILT_IN_RULES for arm in arms):
        candidate_probs = np.asarray(inputs.probs[inputs.candidates], dtype=np.float64)
    rankings = []
    for arm, arm_rng in zip(arms, rng.spawn(len(arms))):
        if arm.strategy in BUILT_IN_RULES:
            ranking = inputs.candidates[_top(rule_scores(arm, candidate_probs), budget, arm_rng)]
        else:
            ranking = _registered_arm(arm, device, seed).select(inputs, budget, arm_rng).positions
        rankings.append(np.asarray(ranking, dtype=np.int64))
    return rankings


def rule_scores(arm: Arm, candidate_probs: np.ndarray) -> np.ndarray:
    """Built-in rules as scores, higher first: most_likely P_k, uncertain -|P_k - 0.5|, emal -sum_k |P_k - 0.5|."""
    if arm.strategy == "most_likely":
        return candidate_probs[:, arm.cls]
    if arm.strategy == "uncertain":
        return -np.abs(candidate_probs[:, arm.cls] - 0.5)
    return -np.abs(candidate_probs - 0.5).sum(axis=1)


def _top(scores: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the `budget` largest scores, best first, ties in a seeded random order (`base.top_k`)."""
    import torch

    if np.isnan(scores).any():
        raise ValueError("probs contain NaN for some candidates")
    return top_k(torch.from_numpy(np.ascontiguousarray(scores)), budget, rng).numpy()


def _registered_arm(arm: Arm, device: str, seed: int) -> Strategy:
    """An instance of the arm's registered strategy; galaxy restricted to the arm's class when it has one."""
    strategy = get_strategy(arm.strategy)
    accepted = inspect.signature(type(strategy)).parameters
    params = {name: value for name, value in (("device", device), ("seed", seed)) if name in accepted}
    if arm.cls is not None:
        params["classes"] = [arm.cls]
    return get_strategy(arm.strategy, **params) if params else strategy




def item_ids(inputs: StrategyInputs) -> np.ndarray:
    """Each pool position's item id; the positions themselves when the caller gives no ids."""
    if inputs.item_ids is not None:
        return np.asarray(inputs.item_ids, dtype=np.int64)
    return np.arange(len(inputs.probs), dtype=np.int64)


def answer_rows(answers: list, num_classes: int, multi_label: bool) -> np.ndarray:
    """`ask`'s answers as (n, K) 0/1 label vectors: a class index each, or (multi-label) a (K,) 0/1 vector each."""
    if multi_label:
        return multilabel_matrix(np.array(answers, dtype=np.float64).reshape(len(answers), num_classes), num_classes)
    return one_hot(np.array(answers, dtype=np.int64), num_classes)


def label_matrix(inputs: StrategyInputs, num_classes: int, multi_label: bool) -> np.ndarray:
    """The labeled items' label vectors, (|L|, K) 0/1: one-hot class indices, or the given multi-label matrix
    (checked by `base.multilabel_matrix`)."""
    if inputs.labels is None:
        return np.zeros((0, num_classes))
    if not multi_label:
        return one_hot(inputs.labels, num_classes)
    return multilabel_matrix(inputs.labels, num_classes)


@register
class TailorStrategy(Strategy):
    name = "tailor"
    needs = frozenset({"probs", "features", "penultimate", "labels"})
    supports_multi_label = True
    params = (
        Param("arms", list, None,
              "The algorithms TAILOR chooses among; a * makes one arm per class ('galaxy:3': class 3's arm only). "
              "TAILOR learns which arm suits the data from their picks: keep the round size several times the "
              f"number of arms. Unset: {', '.join(DEFAULT_MULTICLASS_ARMS)} (multi-label: "
              f"{', '.join(DEFAULT_MULTILABEL_ARMS)}).", examples=ARM_EXAMPLES),
        Param("reward", str, "div", "div: favour arms that bring in classes still rare among the labels; pos: "
                                    "arms that find positives (multi-label only)", choices=("div", "pos")),
        Param("decay", float, 0.9, "weight of the earlier rounds in the posterior at each update, in (0, 1]",
              maximum=1.0),
        Param("update", str, "answer", "answer: TAILOR learns from every answer, picking a few items ahead of the "
                                       "annotators from all answers so far; round: the paper's batch rule, the "
                                       "whole round picked at once from what the earlier rounds taught",
              choices=UPDATES),
    )
    # What the default (update="answer") is; an instance built with update="round" is not sequential (__init__).
    sequential = True

    def __init__(self, arms: list[str] | None = None, reward: str = "div", decay: float = 0.9,
                 update: str = "answer", seed: int = 0, device: str = "cpu") -> None:
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must lie in (0, 1], got {decay}")
        if update not in UPDATES:
            raise ValueError(f"unknown TAILOR update {update!r}; use one of {', '.join(UPDATES)}")
        self.arms = arms
        self.reward = reward
        self.decay = decay
        self.update = update
        self.sequential = update == "answer"
        self.seed = seed
        self.device = device
        self.posterior: TailorPosterior | None = None
        self.history: list[dict] = []
        self.round_picks: dict[int, str] = {}  # this round's picks so far, item id -> arm (update="answer")

    def arm_specs(self, multi_label: bool) -> list[str]:
        """The configured arm specs, or the default set for the project kind."""
        if self.arms is not None:
            return list(self.arms)
        return list(DEFAULT_MULTILABEL_ARMS if multi_label else DEFAULT_MULTICLASS_ARMS)

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator,
                ask: Ask | None = None) -> Selection:
        num_classes = inputs.probs.shape[1]
        multi_label = bool(inputs.multi_label)
        if self.reward == "pos" and not multi_label:
            raise ValueError("TAILOR reward 'pos' is for multi-label projects (multi-class: every arm scores 1)")
        arms = build_arms(self.arm_specs(multi_label), num_classes, multi_label)
        names = [arm.name for arm in arms]
        posterior_note = self._use_posterior(names, num_classes, multi_label)
        labels = label_matrix(inputs, num_classes, multi_label)
        rankings = arm_rankings(arms, inputs, budget, rng, self.device, multi_label, self.seed)
        if self.sequential:
            picks, learned = self._fill_by_answers(inputs, labels, rankings, budget, rng, ask)
            posterior_note += f", learning from each answer ({learned} of this round so far)"
        else:
            picks = thompson_fill(self.posterior, rankings, reward_vector(labels, self.reward), budget, rng)
        picked_arms = [names[m] for m in picks.arm_index]
        note = f"{posterior_note}; {pulls_note(picked_arms)}; reward {self.reward}"
        return Selection(picks.positions, picks.sampled_reward, picked_arms, note)

    def _fill_by_answers(self, inputs: StrategyInputs, labels: np.ndarray, rankings: list[np.ndarray], budget: int,
                         rng: np.random.Generator, ask: Ask | None) -> tuple[ThompsonPicks, int]:
        """update="answer": draw from the stored posterior plus this round's answered picks, with the reward of
        all labels so far; with `ask`, answer each pick and add it before the next draw. The picks join
        `round_picks`. Returns the picks and how many of the round's answers the draws learned from."""
        if inputs.step == 0:
            self.round_picks = {}
        posterior, learned = self.round_posterior(inputs)
        if ask is None:
            picks = thompson_fill(posterior, rankings, reward_vector(labels, self.reward), budget, rng)
        else:
            positions, arm_index, drawn = [], [], []
            for _ in range(budget):
                pick = thompson_fill(posterior, rankings, reward_vector(labels, self.reward), 1, rng,
                                     taken=np.array(positions, dtype=np.int64))
                if not len(pick.positions):
                    break
                position, m = int(pick.positions[0]), int(pick.arm_index[0])
                y = answer_rows([ask(position)], posterior.num_classes, bool(inputs.multi_label))
                posterior = posterior.plus([m], y)
                labels = np.vstack([labels, y])
                positions.append(position)
                arm_index.append(m)
                drawn.append(float(pick.sampled_reward[0]))
            picks = ThompsonPicks(np.array(positions, dtype=np.int64), np.array(arm_index, dtype=np.int64),
                                  np.array(drawn, dtype=np.float64))
            learned += len(positions)
        ids = item_ids(inputs)
        for position, m in zip(picks.positions.tolist(), picks.arm_index.tolist()):
            self.round_picks[int(ids[position])] = self.posterior.arm_names[m]
        return picks, learned

    def round_posterior(self, inputs: StrategyInputs) -> tuple[TailorPosterior, int]:
        """What update="answer" draws from: the stored posterior plus this round's picks (`round_picks`) that are
        labeled in `inputs` (matched by item id, with their current labels), and how many of them there are. Picks
        of arms the posterior does not have are left out. Recomputed from the inputs at every call, so a repeated
        call counts nothing twice."""
        if not self.round_picks or inputs.labeled is None or not len(inputs.labeled):
            return self.posterior, 0
        labels = label_matrix(inputs, self.posterior.num_classes, bool(inputs.multi_label))
        labeled_ids = item_ids(inputs)[inputs.labeled].tolist()
        rows = [row for row, item_id in enumerate(labeled_ids) if item_id in self.round_picks]
        arm_index = self.posterior.arm_index([self.round_picks[labeled_ids[row]] for row in rows])
        keep = arm_index >= 0
        return self.posterior.plus(arm_index[keep], labels[rows][keep]), int(keep.sum())

    def _use_posterior(self, arm_names: list[str], num_classes: int, multi_label: bool) -> str:
        """Keep `self.posterior` if it fits these arms, classes and project kind, else replace it with a fresh one;
        say which."""
        old = self.posterior
        if old is not None and old.matches(arm_names, num_classes, multi_label):
            return f"TAILOR: {len(arm_names)} arms"
        self.posterior = TailorPosterior.fresh(arm_names, num_classes, multi_label)
        if old is None:
            return f"TAILOR: arm set built ({len(arm_names)} arms)"
        return f"TAILOR: arm set rebuilt because {rebuild_reason(old, arm_names, num_classes, multi_label)} " \
               f"({len(arm_names)} arms)"

    # ----- state across rounds (base-class hooks) -----------------------------------------------------------------
    def load_state(self, state: dict | None) -> None:
        state = state or {}
        self.posterior = TailorPosterior.from_dict(state["posterior"]) if state.get("posterior") else None
        self.history = list(state.get("history", []))
        self.round_picks = {int(item_id): arm for item_id, arm in state.get("round_picks", {}).items()}

    def state(self) -> dict | None:
        if self.posterior is None:
            return None
        return {"posterior": self.posterior.to_dict(), "history": self.history,
                "round_picks": {str(item_id): arm for item_id, arm in self.round_picks.items()}}

    def fold_round(self, state: dict, outcome: RoundOutcome) -> dict | None:
        """Add the round's labeled picks to the posterior (stats = decay stats + new), once per round id, record
        each arm's expected reward under the current labels and forget the round's picks (`round_picks`: what
        update="answer" drew from between answers is replaced by this, so each answer counts once). Only picks made
        by one of the posterior's arms count."""
        if not state.get("posterior"):
            return None
        posterior = TailorPosterior.from_dict(state["posterior"])
        if outcome.round_id in posterior.folded_rounds:
            return None
        arm_index = posterior.arm_index([arm for arm, _ in outcome.picks])
        keep = arm_index >= 0
        labels = label_rows([value for _, value in outcome.picks], posterior.num_classes)
        posterior.update(arm_index[keep], labels[keep], decay=self.decay, round_id=outcome.round_id)
        reward = reward_vector(label_rows(outcome.pool_labels, posterior.num_classes), self.reward)
        expected = dict(zip(posterior.arm_names, posterior.expected_reward(reward).tolist()))
        history = [*state.get("history", []), {"round": outcome.round_index, "expected_reward": expected}]
        return {**state, "posterior": posterior.to_dict(), "history": history, "round_picks": {}}

    def panel(self, state: dict, view: PanelView) -> Panel | None:
        if not state.get("posterior"):
            return None
        posterior = TailorPosterior.from_dict(state["posterior"])
        classes = view.classes
        display = {name: display_name(name, classes) for name in posterior.arm_names}
        pulls: Counter[tuple[int, str]] = Counter()
        brought: Counter[tuple[str, str]] = Counter()
        labeled: Counter[str] = Counter()
        for pick in view.picks:
            name = display.get(pick.arm, pick.arm)
            pulls[(pick.round_index, name)] += 1
            if pick.label is not None:
                labeled[name] += 1
                brought.update((name, classes[k]) for k in pick.label)
        total_pulls: Counter[str] = Counter()
        for (_, name), count in pulls.items():
            total_pulls[name] += count
        reward = reward_vector(label_rows(view.pool_labels, len(classes)), self.reward)
        arms = sorted(
            ({"arm": display[a], "expected_reward": float(e), "pulls": total_pulls[display[a]],
              "labeled": labeled[display[a]]} for a, e in zip(posterior.arm_names, posterior.expected_reward(reward))),
            key=lambda row: -row["expected_reward"],
        )
        details = "Arm table and reward per class"
        return Panel(
            title="TAILOR: which algorithm suits this data",
            caption="Each arm is one selection algorithm (per-class arms name their class). TAILOR draws an arm per "
                    "slot by Thompson sampling, favouring arms whose past picks were of classes still rare among "
                    "the labels. Expected reward: the arm's posterior class distribution weighted by the current "
                    "class rewards.",
            blocks=[
                Bars(arms, value="expected_reward", label="arm", value_title="posterior expected reward",
                     value_format=".3f", limit=PANEL_TOP_ARMS),
                StackedBars([{"round": r, "arm": a, "pulls": n} for (r, a), n in sorted(pulls.items())],
                            x="round", y="pulls", color="arm", title="Pulls per arm per round",
                            groups={display[a]: a.partition(":")[0] for a in posterior.arm_names},
                            group_label="Group the per-class arms by algorithm"),
                Pivot([{"arm": a, "class": c, "labels": n} for (a, c), n in sorted(brought.items())],
                      index="arm", columns="class", values="labels", title="Classes each arm brought in",
                      note="(labeled picks)"),
                Table(arms, expander=details),
                Table([dict(zip(classes, reward.tolist()))], expander=details),
            ],
        )


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


def display_name(arm_name: str, classes: list[str]) -> str:
    """'galaxy:3' -> 'galaxy[cat]' (per-class arms show their class's name)."""
    strategy, _, k = arm_name.partition(":")
    return f"{strategy}[{classes[int(k)]}]" if k.isdigit() and int(k) < len(classes) else arm_name
