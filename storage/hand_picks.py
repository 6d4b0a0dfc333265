"""Items a person chose to label, not the round's strategy: the grid page's pages of one predicted class ("grid"),
an item's nearest neighbours ("like") and the items picked on a map ("map"), HAND_ARMS.

Each such label goes through a queue entry of the project's current round (the labeling round, else the latest
one) whose `arm` names the way it was picked, so every label keeps its entry, its round and its annotator, and
`hand_picked_count` can tell how many labels are not an active-learning sample. An item already queued in that
round (a strategy's pick the annotator holds, or one still pending) is taken with its own entry and arm: it stays
the strategy's pick.

`claim_hand_picks` is the one rule: it holds the entries for an annotator, skipping (with the reason in words)
items already labeled, answered in that round, or held by someone else, and refuses evaluation items.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Iterable

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import queue
from storage.errors import StorageError
from storage.labels import answered_item_ids, current_labels
from storage.models import Annotation, Item, QueueEntry, Round, utcnow
from storage.queue import HAND_ARMS  # defined with the queue: a round's size leaves them out
from storage.rounds import latest_round, open_items

MAX_ITEMS = 200  # items one call may hold (a map selection is capped at this too)


class HandPickError(StorageError, ValueError):
    pass


@dataclass(frozen=True)
class HandPicks:
    claims: list[queue.Claim]  # held for the annotator, in the order asked
    skipped: dict[int, str] = field(default_factory=dict)  # item id -> why it was not held


def target_round(session: Session, project_id: int) -> Round | None:
    """The round hand-picked entries go to: the labeling round, else the latest round."""
    return queue.labeling_round(session, project_id) or latest_round(session, project_id)


def claim_hand_picks(session: Session, project_id: int, annotator: str, item_ids: Iterable[int], arm: str,
                     lease_seconds: int = queue.DEFAULT_LEASE_SECONDS) -> HandPicks:
    """Hold a queue entry of the current round (`target_round`) for each of `item_ids` for `annotator`, new ones
    with `arm` (one of HAND_ARMS); see the module doc for what is skipped. Raises HandPickError for an evaluation
    item (the evaluation set is labeled in its own order, never picked by hand), more than MAX_ITEMS items, or a
    project with no round yet."""
    if arm not in HAND_ARMS:
        raise ValueError(f"arm {arm!r} is not one of {HAND_ARMS}")
    wanted = list(dict.fromkeys(int(i) for i in item_ids))
    if len(wanted) > MAX_ITEMS:
        raise HandPickError(f"{len(wanted)} items asked for at once; at most {MAX_ITEMS}")
    round_ = target_round(session, project_id)
    if round_ is None:
        raise HandPickError("this project has no round yet: its items are embedded and round 0 is selected first")
    items = {item.id: item for item in session.scalars(
        select(Item).where(Item.project_id == project_id, Item.id.in_(wanted)))}
    evaluation = [i for i in wanted if i in items and items[i].split == "eval"]
    if evaluation:
        raise HandPickError(f"item(s) {', '.join(map(str, evaluation))} belong to the evaluation set, which is "
                            "labeled on the Label page only")
    labeled = set(session.scalars(answered_item_ids(project_id).where(Annotation.item_id.in_(wanted))))
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    entries: dict[int, list[QueueEntry]] = {}
    for entry in session.scalars(
            select(QueueEntry).join(Round, Round.id == QueueEntry.round_id)
            .where(Round.project_id == project_id, QueueEntry.item_id.in_(wanted))
            .order_by(QueueEntry.id).with_for_update(key_share=True, of=QueueEntry)
            .execution_options(populate_existing=True)):
        entries.setdefault(entry.item_id, []).append(entry)
    claims, skipped = [], {}
    position = queue.next_position(session, round_.id)
    for item_id in wanted:
        if item_id not in items:
            skipped[item_id] = f"item {item_id} is not an item of this project"
            continue
        if item_id in labeled:
            skipped[item_id] = f"{_name(items[item_id])} is labeled already"
            continue
        mine = others = None
        for entry in entries.get(item_id, []):
            if entry.state == "claimed" and entry.claimed_by == annotator:
                mine = entry
            elif entry.state == "claimed" and entry.lease_expires is not None and entry.lease_expires >= now:
                others = entry
        if others is not None and mine is None:
            skipped[item_id] = f"{_name(items[item_id])} is held by {others.claimed_by}"
            continue
        if mine is None:
            here = next((e for e in entries.get(item_id, []) if e.round_id == round_.id and e.copy_index == 0), None)
            if here is not None and here.state in ("labeled", "skipped"):
                skipped[item_id] = f"{_name(items[item_id])} was {here.state} in round {round_.index} already"
                continue
            if here is None:
                here = QueueEntry(round_id=round_.id, item_id=item_id, position=position, arm=arm)
                position += 1
                session.add(here)
            elif here.state == "dropped":  # left its round unanswered: this time a person picked it
                here.arm, here.score, here.position = arm, None, position
                position += 1
            mine = here
        mine.state, mine.claimed_by, mine.lease_expires, mine.claimed_at = "claimed", annotator, lease, now
        session.flush()
        claims.append(queue.claim_of(mine))
    return HandPicks(claims, skipped)


def _name(item: Item) -> str:
    return item.key.rsplit("/", 1)[-1]


def hand_picked_count(session: Session, project_id: int) -> int:
    """How many of the project's current labels were given through a hand-picked entry (arm in HAND_ARMS)."""
    current = {label.annotation_id for label in current_labels(session, project_id).values()}
    if not current:
        return 0
    hand = session.scalars(  # the project's answers through hand-picked entries, kept if they are a current label
        select(Annotation.id).join(QueueEntry, QueueEntry.id == Annotation.queue_entry_id)
        .where(Annotation.project_id == project_id, QueueEntry.arm.in_(HAND_ARMS)))
    return sum(1 for annotation_id in hand if annotation_id in current)


def open_pool_items(session: Session, project_id: int) -> set[int]:
    """Pool items neither labeled nor waiting in (or held by) a queue: what a grid page may offer."""
    return set(open_items(session, project_id, "pool"))


def closed_items(session: Session, project_id: int) -> np.ndarray:
    """The items a grid page may not offer (every other item of the project is an open pool item), sorted: the
    evaluation set, labeled items and queued items. Small next to a large pool, so a page reads these instead of
    every pool id."""
    closed = set(session.scalars(select(Item.id).where(Item.project_id == project_id, Item.split == "eval")))
    closed |= set(current_labels(session, project_id)) | queue.queued_item_ids(session, project_id)
    return np.array(sorted(closed), dtype=np.int64)


def not_pickable(session: Session, project_id: int, annotator: str, item_ids: Iterable[int]) -> dict[int, str]:
    """item id -> why `annotator` cannot label it by hand now (not of the project, evaluation set, labeled, held by
    someone else), for the items of `item_ids` that cannot; `claim_hand_picks` decides again when they are sent."""
    wanted = list(dict.fromkeys(int(i) for i in item_ids))
    items = {item.id: item for item in session.scalars(
        select(Item).where(Item.project_id == project_id, Item.id.in_(wanted)))}
    labeled = set(session.scalars(answered_item_ids(project_id).where(Annotation.item_id.in_(wanted))))
    now = utcnow()
    held = dict(session.execute(
        select(QueueEntry.item_id, QueueEntry.claimed_by).join(Round, Round.id == QueueEntry.round_id)
        .where(Round.project_id == project_id, QueueEntry.item_id.in_(wanted), QueueEntry.state == "claimed",
               QueueEntry.claimed_by != annotator, QueueEntry.lease_expires >= now)).all())
    reasons = {}
    for item_id in wanted:
        if item_id not in items:
            reasons[item_id] = "not an item of this project"
        elif items[item_id].split == "eval":
            reasons[item_id] = "of the evaluation set (labeled on the Label page)"
        elif item_id in labeled:
            reasons[item_id] = "labeled already"
        elif item_id in held:
            reasons[item_id] = f"held by {held[item_id]}"
    return reasons


def labeled_items(session: Session, project_id: int, item_ids: Iterable[int]) -> set[int]:
    """The items of `item_ids` with a live label or adjudication."""
    wanted = [int(i) for i in item_ids]
    if not wanted:
        return set()
    return set(session.scalars(answered_item_ids(project_id).where(Annotation.item_id.in_(wanted))))
