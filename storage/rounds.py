"""Round queries: a project's rounds in order, its latest and unfinished rounds, the next index, and how many
pool items a round has picked."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Item, QueueEntry, Round


def project_rounds(session: Session, project_id: int) -> list[Round]:
    """The project's rounds, oldest (index 0) first."""
    return list(session.scalars(select(Round).where(Round.project_id == project_id).order_by(Round.index)))


def latest_round(session: Session, project_id: int) -> Round | None:
    """The round with the highest index (the one being selected, labeled or trained, or the last done), or None."""
    return session.scalars(select(Round).where(Round.project_id == project_id).order_by(Round.index.desc())).first()


def next_round_index(session: Session, project_id: int) -> int:
    return session.scalar(select(func.coalesce(func.max(Round.index) + 1, 0)).where(Round.project_id == project_id))


def unfinished_round(session: Session, project_id: int) -> Round | None:
    """A round of the project that is not done (selecting, labeling or training), or None."""
    return session.scalars(select(Round).where(Round.project_id == project_id, Round.state != "done").limit(1)).first()


def round_picks(session: Session, round_id: int) -> tuple[int, int]:
    """(pool items picked so far in the round, of which still open): dropped entries and evaluation-set items
    (known by their split) are not picks."""
    counts = dict(session.execute(
        select(QueueEntry.state, func.count())
        .join(Item, Item.id == QueueEntry.item_id)
        .where(QueueEntry.round_id == round_id, Item.split == "pool", QueueEntry.state != "dropped")
        .group_by(QueueEntry.state)
    ).all())
    return sum(counts.values()), counts.get("pending", 0) + counts.get("claimed", 0)
