"""Reading a project's items and projects."""
from __future__ import annotations

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from storage.models import Item, Project


def item_rows(session: Session, project_id: int) -> list[Row]:
    """(id, key, split) of every item, ordered by id: light rows, and never the gold labels."""
    return list(session.execute(
        select(Item.id, Item.key, Item.split).where(Item.project_id == project_id).order_by(Item.id)
    ))


def key_and_split(session: Session, item_id: int) -> tuple[str, str]:
    key, split = session.execute(select(Item.key, Item.split).where(Item.id == item_id)).one()
    return key, split


def gold_counts(session: Session, project_id: int) -> tuple[int, int]:
    """(items, items with a gold label) of the project."""
    items = session.scalar(select(func.count()).select_from(Item).where(Item.project_id == project_id))
    with_gold = session.scalar(select(func.count()).select_from(Item).where(
        Item.project_id == project_id, Item.gold.is_not(None)))
    return items, with_gold


def all_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.id)))


def project_id_named(session: Session, name: str) -> int | None:
    return session.scalar(select(Project.id).where(Project.name == name))
