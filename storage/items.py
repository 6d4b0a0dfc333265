"""Reading a project's items and projects, and the counts the pages show of many projects at once (items per
split, current labels per split and value): SQL aggregates, so no per-item row reaches Python."""
from __future__ import annotations

import json
from collections import Counter

from sqlalchemy import Row, Text, cast, func, select
from sqlalchemy.orm import Session

from storage.db import IN_CHUNK
from storage.labels import ADJUDICATE, item_labels
from storage.models import Annotation, Item, Project


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


def split_counts(session: Session, project_ids: list[int]) -> dict[int, dict[str, int]]:
    """project id -> how many items each of its splits ("pool", "eval") holds (splits without items left out).

    A plain count of a project's items is SQLite's fastest scan (of the (project_id, split) index; a GROUP BY
    split takes over twice as long at 1M items) and the evaluation set is a short range of that index, so the
    pool is their difference."""
    counts: dict[int, dict[str, int]] = {}
    evals = dict(session.execute(select(Item.project_id, func.count())
                                 .where(Item.project_id.in_([int(p) for p in project_ids]), Item.split == "eval")
                                 .group_by(Item.project_id)).all())
    for project_id in project_ids:
        total = session.scalar(select(func.count()).select_from(Item).where(Item.project_id == int(project_id)))
        found = {"pool": total - evals.get(project_id, 0), "eval": evals.get(project_id, 0)}
        counts[int(project_id)] = {split: n for split, n in found.items() if n}
    return counts


def label_tallies(session: Session, project_ids: list[int]) -> dict[int, Counter]:
    """project id -> Counter of (split, label value as a tuple of class indices) over its items with a current
    label (storage.labels' rule).

    An item with exactly one live 'label' or 'adjudicate' row has that row's value as its label whatever else it
    has (skips, confirms): those are counted by SQL, grouped by value. Only items with several live rows (several
    annotators, a relabel) go through `item_labels`, which alone decides what is disputed."""
    tallies: dict[int, Counter] = {int(p): Counter() for p in project_ids}
    if not tallies:
        return tallies
    retracted = select(Annotation.replaces_id).where(
        Annotation.project_id.in_(tallies), Annotation.kind == "retract", Annotation.replaces_id.is_not(None))
    live = (select(Annotation.project_id, Annotation.item_id, func.count().label("rows"),
                   func.min(cast(Annotation.value, Text)).label("value"))
            .where(Annotation.project_id.in_(tallies), Annotation.kind.in_(("label", ADJUDICATE)),
                   Annotation.id.not_in(retracted))
            .group_by(Annotation.project_id, Annotation.item_id).subquery())
    single = session.execute(
        select(live.c.project_id, Item.split, live.c.value, func.count())
        .join(Item, Item.id == live.c.item_id).where(live.c.rows == 1)
        .group_by(live.c.project_id, Item.split, live.c.value))
    for project_id, split, value, n in single:
        tallies[project_id][(split, tuple(sorted(json.loads(value or "null") or [])))] += n
    several: dict[int, list[int]] = {}
    for project_id, item_id in session.execute(select(live.c.project_id, live.c.item_id).where(live.c.rows > 1)):
        several.setdefault(project_id, []).append(item_id)
    for project_id, item_ids in several.items():
        for start in range(0, len(item_ids), IN_CHUNK):
            chunk = item_ids[start:start + IN_CHUNK]
            splits = dict(session.execute(select(Item.id, Item.split).where(Item.id.in_(chunk))).all())
            for item_id, state in item_labels(session, project_id, item_ids=chunk).items():
                if state.label is not None:
                    tallies[project_id][(splits[item_id], tuple(sorted(state.label.value)))] += 1
    return tallies


def labeled_counts(tally: Counter) -> dict[str, int]:
    """split -> items with a current label, from one project's `label_tallies`."""
    counts: Counter = Counter()
    for (split, _), n in tally.items():
        counts[split] += n
    return dict(counts)
