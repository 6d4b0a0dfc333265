"""Reading a project's items."""
from __future__ import annotations

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from storage.models import Item


def item_rows(session: Session, project_id: int) -> list[Row]:
    """(id, key, split) of every item, ordered by id: light rows, and never the gold labels."""
    return list(session.execute(
        select(Item.id, Item.key, Item.split).where(Item.project_id == project_id).order_by(Item.id)
    ))
