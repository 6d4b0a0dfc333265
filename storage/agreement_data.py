"""Each annotator's current answer on each item of a project, for measuring agreement (learners.agreement).

The rule is storage.labels.current_labels' taken per annotator: an annotator's current answer on an item is their
latest label row that no 'retract' row withdrew. Skips give no value and are left out.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Annotation, Item

AnswerRow = tuple[int, str, list[int], datetime, float | None]  # item id, annotator, value, created at, seconds


def current_answers(session: Session, project_id: int, split: str | None = None) -> list[AnswerRow]:
    """(item id, annotator, value, created at, seconds shown) of every annotator's current label of every item
    (of one split when given), oldest first: one query."""
    retracted = select(Annotation.replaces_id).where(
        Annotation.project_id == project_id, Annotation.kind == "retract", Annotation.replaces_id.is_not(None)
    )
    stmt = (
        select(Annotation.item_id, Annotation.annotator, Annotation.value, Annotation.created_at, Annotation.seconds)
        .where(Annotation.project_id == project_id, Annotation.kind == "label", Annotation.id.not_in(retracted))
        .order_by(Annotation.id)
    )
    if split is not None:
        stmt = stmt.join(Item, Item.id == Annotation.item_id).where(Item.split == split)
    latest: dict[tuple[int, str], AnswerRow] = {}
    for item_id, annotator, value, created_at, seconds in session.execute(stmt):
        latest.pop((item_id, annotator), None)  # re-inserted: the dict keeps the order of the latest rows
        latest[(item_id, annotator)] = (item_id, annotator, list(value or []), created_at, seconds)
    return list(latest.values())
