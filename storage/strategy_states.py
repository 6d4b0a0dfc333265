"""What a selection strategy keeps across rounds (one StrategyState row per project and strategy name, JSON), and
the picks of a strategy's rounds with the arm that chose each, as the strategy hooks read them."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.labels import current_labels
from storage.models import Item, QueueEntry, Round, StrategyState
from storage.queue import HAND_ARMS


def _row(s: Session, project_id: int, strategy: str) -> StrategyState | None:
    return s.scalar(select(StrategyState).where(StrategyState.project_id == project_id,
                                                StrategyState.strategy == strategy))


def stored_state(s: Session, project_id: int, strategy: str) -> dict | None:
    """The state stored for `strategy` in the project, or None."""
    row = _row(s, project_id, strategy)
    return None if row is None else row.state


def stored_states(s: Session, project_id: int) -> dict[str, dict]:
    """Strategy name -> its stored state, for every strategy that stored one in the project, by name."""
    rows = s.scalars(select(StrategyState).where(StrategyState.project_id == project_id)
                     .order_by(StrategyState.strategy))
    return {row.strategy: row.state for row in rows}


def store_state(s: Session, project_id: int, strategy: str, state: dict) -> None:
    row = _row(s, project_id, strategy)
    if row is None:
        s.add(StrategyState(project_id=project_id, strategy=strategy, state=state))
    else:
        row.state = state  # a new dict, so SQLAlchemy sees the JSON change


def labeled_picks(s: Session, project_id: int, round_id: int) -> list[tuple[str, list[int]]]:
    """The round's labeled picks in queue order as (arm, current label value); eval-set entries, and picks whose
    label was undone, left out."""
    labels = current_labels(s, project_id)
    return [(arm, labels[item_id].value) for item_id, arm in s.execute(
        select(QueueEntry.item_id, QueueEntry.arm)
        .join(Item, Item.id == QueueEntry.item_id)
        .where(QueueEntry.round_id == round_id, QueueEntry.state == "labeled", Item.split == "pool",
               QueueEntry.copy_index == 0,  # an overlap copy is not another pick
               QueueEntry.arm.not_in(HAND_ARMS))  # nor is an item a person chose
        .order_by(QueueEntry.position)
    ) if item_id in labels]


def strategy_picks(s: Session, project_id: int, strategy: str) -> list[tuple[int, str, list[int] | None]]:
    """Every pick of the project's rounds chosen by `strategy` (eval-set entries left out), as (round index, arm,
    current label value if the pick was labeled and still is, else None)."""
    labels = current_labels(s, project_id)
    return [(index, arm, labels[item_id].value if state == "labeled" and item_id in labels else None)
            for index, item_id, arm, state in s.execute(
                select(Round.index, QueueEntry.item_id, QueueEntry.arm, QueueEntry.state)
                .join(Round, Round.id == QueueEntry.round_id)
                .join(Item, Item.id == QueueEntry.item_id)
                .where(Round.project_id == project_id, Round.strategy == strategy, Item.split == "pool",
                       QueueEntry.copy_index == 0, QueueEntry.arm.not_in(HAND_ARMS))
                .order_by(Round.index, QueueEntry.position)
            )]


def latest_round(s: Session, project_id: int, strategy: str) -> Round | None:
    """The project's last round chosen by `strategy`."""
    return s.scalar(select(Round).where(Round.project_id == project_id, Round.strategy == strategy)
                    .order_by(Round.index.desc()).limit(1))


def pool_label_values(s: Session, project_id: int) -> list[list[int]]:
    """The current label value of every labeled pool item."""
    return [label.value for label in current_labels(s, project_id, split="pool").values()]
