"""TAILOR's posterior in the database (specs/tailor.md): loaded before a round is chosen, updated once per round
when its labels are in, and read back for the dashboard's arm panel.

The posterior lives in the project's `strategy_states` row for "tailor", as JSON: the stats array, the arm names,
the ids of the rounds already folded in (so an update is never applied twice, whatever restarts) and, per folded
round, each arm's posterior expected reward, for the panel's history.
"""
from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from learners.tailor import TailorPosterior, one_hot, reward_vector
from storage.labels import current_labels, label_array
from storage.models import Project, QueueEntry, Round, StrategyState

STRATEGY = "tailor"


def _row(s: Session, project_id: int) -> StrategyState | None:
    return s.scalar(select(StrategyState).where(StrategyState.project_id == project_id,
                                                StrategyState.strategy == STRATEGY))


def load_posterior(s: Session, project_id: int) -> TailorPosterior | None:
    row = _row(s, project_id)
    if row is None or not row.state.get("posterior"):
        return None
    return TailorPosterior.from_dict(row.state["posterior"])


def save_posterior(s: Session, project_id: int, posterior: TailorPosterior, history: list | None = None) -> None:
    row = _row(s, project_id)
    if row is None:
        row = StrategyState(project_id=project_id, strategy=STRATEGY, state={})
        s.add(row)
    state = dict(row.state or {})
    state["posterior"] = posterior.to_dict()
    if history is not None:
        state["history"] = history
    row.state = state  # a new dict, so SQLAlchemy sees the JSON change


def fold_round(s: Session, project: Project, round_: Round) -> bool:
    """Add a finished TAILOR round's labels to the posterior (stats = 0.9 stats + new); True if it changed.

    Only picks made by one of the posterior's arms count; skipped, dropped and eval entries add nothing, and the
    label is the one the item has now (an undone label is not counted)."""
    if round_.strategy != STRATEGY:
        return False
    posterior = load_posterior(s, project.id)
    if posterior is None or round_.id in posterior.folded_rounds:
        return False
    labels = current_labels(s, project.id)
    picks = [(arm, labels[item_id].value) for item_id, arm in s.execute(
        select(QueueEntry.item_id, QueueEntry.arm)
        .where(QueueEntry.round_id == round_.id, QueueEntry.state == "labeled")
        .order_by(QueueEntry.position)
    ) if item_id in labels]
    arm_index = posterior.arm_index([arm for arm, _ in picks])
    keep = arm_index >= 0
    num_classes = posterior.stats.shape[2]
    label_matrix = _label_matrix([value for _, value in picks], num_classes, posterior.multi_label)
    decay = float((round_.strategy_params or {}).get("decay", 0.9))
    posterior.update(arm_index[keep], label_matrix[keep], decay=decay, round_id=round_.id)
    row = _row(s, project.id)
    history = list((row.state or {}).get("history", []))
    reward = reward_vector(_label_matrix(_pool_label_values(s, project.id), num_classes, posterior.multi_label),
                           _reward_kind(round_))
    history.append({"round": round_.index,
                    "expected_reward": dict(zip(posterior.arm_names, posterior.expected_reward(reward).tolist()))})
    save_posterior(s, project.id, posterior, history)
    return True


def _reward_kind(round_: Round) -> str:
    return str((round_.strategy_params or {}).get("reward", "div"))


def _pool_label_values(s: Session, project_id: int) -> list[list[int]]:
    return [a.value for a in current_labels(s, project_id, split="pool").values()]


def _label_matrix(values: list[list[int]], num_classes: int, multi_label: bool) -> np.ndarray:
    """Label values as 0/1 rows (one-hot for multi-class), as the posterior and the reward read them."""
    labels = label_array(values, num_classes, multi_label)
    return labels if multi_label else one_hot(labels, num_classes)


def panel(s: Session, project: Project) -> dict | None:
    """What the dashboard shows for a TAILOR project, or None before TAILOR has chosen a round.

    {"pulls": [{round, arm, pulls}], "arms": [{arm, expected_reward, pulls, labeled}], "classes": [{arm, class,
    labels}], "history": [{round, arm, expected_reward}], "reward": {class: v_k}}; arm names show class names
    ("galaxy[cat]")."""
    posterior = load_posterior(s, project.id)
    if posterior is None:
        return None
    row = _row(s, project.id)
    classes = list(project.classes)
    display = {name: _display(name, classes) for name in posterior.arm_names}
    rounds = {r.id: r for r in s.scalars(select(Round).where(Round.project_id == project.id, Round.strategy == STRATEGY))}
    labels = current_labels(s, project.id)
    pulls: dict[tuple[int, str], int] = {}
    brought: dict[tuple[str, str], int] = {}
    labeled_by_arm: dict[str, int] = {}
    for round_id, item_id, arm, state in s.execute(
        select(QueueEntry.round_id, QueueEntry.item_id, QueueEntry.arm, QueueEntry.state)
        .where(QueueEntry.round_id.in_(list(rounds)), QueueEntry.arm != "eval")
    ):
        name = display.get(arm, arm)
        pulls[(rounds[round_id].index, name)] = pulls.get((rounds[round_id].index, name), 0) + 1
        if state == "labeled" and item_id in labels:
            labeled_by_arm[name] = labeled_by_arm.get(name, 0) + 1
            for k in labels[item_id].value:
                brought[(name, classes[k])] = brought.get((name, classes[k]), 0) + 1
    last_round = max(rounds.values(), key=lambda r: r.index, default=None)
    reward = reward_vector(_label_matrix(_pool_label_values(s, project.id), len(classes), posterior.multi_label),
                           _reward_kind(last_round) if last_round else "div")
    expected = posterior.expected_reward(reward)
    total_pulls: dict[str, int] = {}
    for (_, name), n in pulls.items():
        total_pulls[name] = total_pulls.get(name, 0) + n
    return {
        "pulls": [{"round": r, "arm": a, "pulls": n} for (r, a), n in sorted(pulls.items())],
        "arms": sorted(
            ({"arm": display[a], "expected_reward": float(e), "pulls": total_pulls.get(display[a], 0),
              "labeled": labeled_by_arm.get(display[a], 0)} for a, e in zip(posterior.arm_names, expected)),
            key=lambda row: -row["expected_reward"],
        ),
        "classes": [{"arm": a, "class": c, "labels": n} for (a, c), n in sorted(brought.items())],
        "history": [{"round": h["round"], "arm": display.get(a, a), "expected_reward": v}
                    for h in (row.state or {}).get("history", []) for a, v in h["expected_reward"].items()],
        "reward": dict(zip(classes, reward.tolist())),
    }


def _display(arm_name: str, classes: list[str]) -> str:
    """'galaxy:3' -> 'galaxy[cat]' (per-class arms show their class's name)."""
    strategy, _, k = arm_name.partition(":")
    return f"{strategy}[{classes[int(k)]}]" if k.isdigit() and int(k) < len(classes) else arm_name
