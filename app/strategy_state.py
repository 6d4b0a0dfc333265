"""Strategy state that survives rounds, for any strategy: loaded before a selection, saved after it, folded with a
closed round's labels, and read back as dashboard panels. The job handlers and the Dashboard call only these four
functions; what a strategy keeps, how it folds a round and what its panel shows are the strategy's own business
(the base-class hooks in learners.strategies); the state lives in its StrategyState row (storage.strategy_states).
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from learners.strategies import Panel, PanelView, Pick, RoundOutcome, Strategy, available_strategies, get_strategy
from storage import strategy_states
from storage.models import Project, Round


def load_into(s: Session, project_id: int, strategy: Strategy) -> None:
    """Hand `strategy` the state stored for it in this project (before `select`)."""
    strategy.load_state(strategy_states.stored_state(s, project_id, strategy.name))


def save_from(s: Session, project_id: int, strategy: Strategy) -> None:
    """Store what `strategy` keeps after a selection (in the transaction that queues its picks)."""
    state = strategy.state()
    if state is not None:
        strategy_states.store_state(s, project_id, strategy.name, state)


def fold_round(s: Session, project: Project, round_: Round) -> bool:
    """Fold a closed round's labels into the state of the strategy that chose it; True when the state changed.
    Never applies the same round twice (the strategy's `fold_round` guarantees it)."""
    state = strategy_states.stored_state(s, project.id, round_.strategy)
    if not state:
        return False
    outcome = RoundOutcome(
        round_id=round_.id, round_index=round_.index, picks=strategy_states.labeled_picks(s, project.id, round_.id),
        pool_labels=strategy_states.pool_label_values(s, project.id), num_classes=len(project.classes),
        multi_label=project.task == "multi_label",
    )
    new_state = get_strategy(round_.strategy, **(round_.strategy_params or {})).fold_round(state, outcome)
    if new_state is None:
        return False
    strategy_states.store_state(s, project.id, round_.strategy, new_state)
    return True


def panels(s: Session, project: Project) -> list[Panel]:
    """The dashboard panels of the project's stateful strategies (empty when none has anything to show); each
    strategy is built with the parameters of its last round."""
    found = []
    for name, state in strategy_states.stored_states(s, project.id).items():
        if name not in available_strategies():
            continue  # a strategy that is no longer installed
        last = strategy_states.latest_round(s, project.id, name)
        strategy = get_strategy(name, **((last.strategy_params or {}) if last else {}))
        view = PanelView(
            classes=list(project.classes), multi_label=project.task == "multi_label",
            picks=[Pick(*pick) for pick in strategy_states.strategy_picks(s, project.id, name)],
            pool_labels=strategy_states.pool_label_values(s, project.id),
        )
        panel = strategy.panel(state, view)
        if panel is not None:
            found.append(panel)
    return found
