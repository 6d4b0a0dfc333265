"""The current label of each item, read from the append-only annotation log."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Annotation, Item


@dataclass(frozen=True)
class CurrentLabel:
    item_id: int
    value: list[int]
    annotator: str
    annotation_id: int
    created_at: datetime


def current_labels(session: Session, project_id: int, split: str | None = None) -> dict[int, CurrentLabel]:
    """item id -> its current label: the latest label row that no retraction withdrew."""
    stmt = select(Annotation).where(Annotation.project_id == project_id).order_by(Annotation.id)
    if split is not None:
        stmt = stmt.join(Item, Item.id == Annotation.item_id).where(Item.split == split)
    live: dict[int, list[Annotation]] = {}
    retracted: set[int] = set()
    rows = session.scalars(stmt).all()
    for row in rows:
        if row.kind == "retract" and row.replaces_id is not None:
            retracted.add(row.replaces_id)
    for row in rows:
        if row.kind == "label" and row.id not in retracted:
            live.setdefault(row.item_id, []).append(row)
    return {
        item_id: CurrentLabel(item_id, list(rows[-1].value or []), rows[-1].annotator, rows[-1].id, rows[-1].created_at)
        for item_id, rows in live.items()
    }



def items_per_split(session: Session, project_id: int) -> dict[str, int]:
    """How many items each split ("pool", "eval") of the project holds."""
    return dict(
        session.execute(select(Item.split, func.count()).where(Item.project_id == project_id).group_by(Item.split)).all()
    )


def labeled_per_split(session: Session, project_id: int) -> dict[str, int]:
    """How many items of each split have a current label (splits without one are left out)."""
    splits = dict(session.execute(select(Item.id, Item.split).where(Item.project_id == project_id)).all())
    return dict(Counter(splits[item_id] for item_id in current_labels(session, project_id)))


def label_array(values: list[list[int]], num_classes: int, multi_label: bool) -> np.ndarray:
    """Stored label values as the learners read them: class indices (n,), or a 0/1 matrix (n, K) of tags."""
    if not multi_label:
        return np.array([v[0] for v in values], dtype=np.int64)
    matrix = np.zeros((len(values), num_classes), dtype=np.float32)
    for row, value in enumerate(values):
        matrix[row, value] = 1.0
    return matrix
