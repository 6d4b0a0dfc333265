"""Round queries: a project's rounds in order, its latest and unfinished rounds (the latest of many projects at
once), the next index, how many pool items a round has picked, queue counts of many rounds at once, which items
are still open to be queued, and queueing a round's entries."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import queue
from storage.db import IN_CHUNK
from storage.labels import current_labels
from storage.models import Item, QueueEntry, Round


def project_rounds(session: Session, project_id: int) -> list[Round]:
    """The project's rounds, oldest (index 0) first."""
    return list(session.scalars(select(Round).where(Round.project_id == project_id).order_by(Round.index)))


def latest_round(session: Session, project_id: int) -> Round | None:
    """The round with the highest index (the one being selected, labeled or trained, or the last done), or None."""
    return session.scalars(select(Round).where(Round.project_id == project_id).order_by(Round.index.desc())).first()


def round_indices(session: Session, project_ids: list[int]) -> dict[int, int]:
    """round id -> its index, for every round of the projects."""
    return dict(session.execute(select(Round.id, Round.index).where(Round.project_id.in_([int(p) for p in project_ids]))
                                ).all())


def latest_rounds(session: Session, project_ids: list[int]) -> dict[int, Round]:
    """project id -> its latest round (highest index), for the projects that have one: one query for all."""
    top = (select(Round.project_id, func.max(Round.index).label("index"))
           .where(Round.project_id.in_([int(p) for p in project_ids])).group_by(Round.project_id).subquery())
    rows = session.scalars(select(Round).join(top, (Round.project_id == top.c.project_id) & (Round.index == top.c.index)))
    return {r.project_id: r for r in rows}


def queue_counts(session: Session, round_ids: list[int]) -> dict[int, dict[str, int]]:
    """round id -> its queue entries per state (every state, 0 when none), in one GROUP BY for all the rounds."""
    counts = {int(r): dict.fromkeys(("pending", "claimed", "labeled", "skipped", "dropped"), 0) for r in round_ids}
    ids = list(counts)
    for start in range(0, len(ids), IN_CHUNK):
        rows = session.execute(select(QueueEntry.round_id, QueueEntry.state, func.count())
                               .where(QueueEntry.round_id.in_(ids[start:start + IN_CHUNK]))
                               .group_by(QueueEntry.round_id, QueueEntry.state))
        for round_id, state, n in rows:
            counts[round_id][state] = n
    return counts


def next_round_index(session: Session, project_id: int) -> int:
    return session.scalar(select(func.coalesce(func.max(Round.index) + 1, 0)).where(Round.project_id == project_id))


def unfinished_round(session: Session, project_id: int) -> Round | None:
    """A round of the project that is not done (selecting, labeling or training), or None."""
    return session.scalars(select(Round).where(Round.project_id == project_id, Round.state != "done").limit(1)).first()


def round_picks(session: Session, round_id: int) -> tuple[int, int]:
    """(pool items picked so far in the round, of which still open): dropped entries, hand-picked ones
    (queue.HAND_ARMS) and evaluation-set items (known by their split) are not picks."""
    counts = dict(session.execute(
        select(QueueEntry.state, func.count())
        .join(Item, Item.id == QueueEntry.item_id)
        .where(QueueEntry.round_id == round_id, Item.split == "pool", QueueEntry.state != "dropped",
               QueueEntry.arm.not_in(queue.HAND_ARMS))
        .group_by(QueueEntry.state)
    ).all())
    return sum(counts.values()), counts.get("pending", 0) + counts.get("claimed", 0)


def round_arms(session: Session, round_id: int) -> dict[int, str]:
    """{item id: arm} of a round's queue entries (first copies of overlapped items): what chose each of them."""
    return dict(session.execute(select(QueueEntry.item_id, QueueEntry.arm)
                                .where(QueueEntry.round_id == round_id, QueueEntry.copy_index == 0)).all())


def round_after(session: Session, round_: Round) -> Round | None:
    """The round that follows `round_` in its project (index + 1), or None."""
    return session.scalar(select(Round).where(Round.project_id == round_.project_id, Round.index == round_.index + 1))


def open_items(session: Session, project_id: int, split: str | None, item_ids: list[int] | None = None) -> list[int]:
    """Items of `split` (None: of either split) that are neither labeled nor waiting in (or held by) a queue: of
    `item_ids` in their order, or every such item of the project by id."""
    rows = select(Item.id).where(Item.project_id == project_id)
    if split is not None:
        rows = rows.where(Item.split == split)
    if item_ids is not None:
        rows = rows.where(Item.id.in_([int(i) for i in item_ids]))
    found = set(session.scalars(rows))
    taken = set(current_labels(session, project_id)) | queue.queued_item_ids(session, project_id)
    order = [int(i) for i in item_ids] if item_ids is not None else sorted(found)
    return [i for i in order if i in found and i not in taken]


def add_entries(session: Session, round_id: int, entries: list[tuple[int, str, float | None]]) -> int:
    """Queue (item id, arm, score) entries at the end of the round's queue, in order; returns how many."""
    start = queue.next_position(session, round_id)
    for position, (item_id, arm, score) in enumerate(entries, start=start):
        session.add(QueueEntry(round_id=round_id, item_id=int(item_id), position=position, arm=arm, score=score))
    session.flush()
    return len(entries)
