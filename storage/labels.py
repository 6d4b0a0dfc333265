"""The current label of each item, read from the append-only annotation log: the one rule that training, the
evaluation metrics, selection, the review scan and the exports read (`current_labels`).

Rows that a 'retract' row names do not count. Of an item's other rows:
1. A decision settles the item: an 'adjudicate' row (a reviewer's final label of a disputed item, the Adjudicate
   page: storage.answers.apply_adjudications), or a label given outside the queue (no queue entry: a review's
   relabel, storage.reviews, or a lead's correction). The latest one is the item's label.
2. Otherwise each annotator's latest 'label' row given through the queue is their answer. When every answer has
   the same value, that is the label (given by the latest of those rows); when they differ the item is
   *disputed*: it has no label, so it does not train, is not counted by the evaluation metrics and is not
   exported, until a reviewer adjudicates it.
With one annotator per item this is what it always was: the latest label row that no retraction withdrew.
"""
from __future__ import annotations

import threading
import weakref
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from storage.db import IN_CHUNK
from storage.models import Annotation, Item

LABELED, DISPUTED, ADJUDICATED = "labeled", "disputed", "adjudicated"
ADJUDICATE = "adjudicate"  # the Annotation kind of a reviewer's final label of a disputed item


@dataclass(frozen=True)
class CurrentLabel:
    item_id: int
    value: list[int]
    annotator: str  # who gave the row the label comes from (the adjudicator of an adjudicated item)
    annotation_id: int
    created_at: datetime
    adjudicated: bool = False


@dataclass(frozen=True)
class Answer:
    """One live row of an item: an annotator's label or skip, a reviewer's adjudication, relabel or confirm."""

    annotation_id: int
    annotator: str
    kind: str  # "label", "skip", "adjudicate", "relabel" (storage.reviews), "confirm" (storage.reviews)
    value: list[int] | None
    created_at: datetime


@dataclass(frozen=True)
class ItemLabel:
    """An item's state under the rule of the module doc; `label` is None when it is disputed."""

    item_id: int
    status: str  # LABELED, DISPUTED or ADJUDICATED
    label: CurrentLabel | None
    answers: tuple[Answer, ...]  # every live row of the item, oldest first

    def labels_given(self) -> dict[str, list[int]]:
        """annotator -> the value of their latest live label (the answers the rule compares)."""
        return {a.annotator: list(a.value or []) for a in self.answers if a.kind == "label"}


def item_labels(session: Session, project_id: int, split: str | None = None,
                item_ids: list[int] | None = None) -> dict[int, ItemLabel]:
    """item id -> its state (module doc), for every item (of `split`, of `item_ids` when given) with a live label
    or adjudication. The whole project's states come from the rows `current_labels` keeps (`_annotation_rows`:
    plain rows, only the new ones read), a split's or some items' from their own query."""
    if split is None and item_ids is None:
        cache = _annotation_rows(session, project_id)
        if cache.states is None:
            cache.states = _states_of(cache.rows)
        return dict(cache.states)
    stmt = select(*_ROW_COLUMNS).where(Annotation.project_id == project_id).order_by(Annotation.id)
    if item_ids is not None:
        stmt = stmt.where(Annotation.item_id.in_([int(i) for i in item_ids]))
    if split is not None:
        stmt = stmt.join(Item, Item.id == Annotation.item_id).where(Item.split == split)
    return _states_of(session.execute(stmt).all())


def _states_of(rows: list[Row]) -> dict[int, ItemLabel]:
    """item_labels' rule on annotation rows (ordered by id)."""
    retracted = {row.replaces_id for row in rows if row.kind == "retract" and row.replaces_id is not None}
    live: dict[int, list[Row]] = {}
    for row in rows:
        if row.kind != "retract" and row.id not in retracted:
            live.setdefault(row.item_id, []).append(row)
    states = {}
    for item_id, item_rows in live.items():
        state = _state(item_id, item_rows)
        if state is not None:
            states[item_id] = state
    return states


def _state(item_id: int, rows: list[Row]) -> ItemLabel | None:
    answers = tuple(Answer(r.id, r.annotator, _kind(r), None if r.value is None else list(r.value), r.created_at)
                    for r in rows)
    decisions = [r for r in rows if r.kind == ADJUDICATE or (r.kind == "label" and r.queue_entry_id is None)]
    if decisions:
        row = decisions[-1]
        status = ADJUDICATED if row.kind == ADJUDICATE else LABELED
        return ItemLabel(item_id, status, _label(row, adjudicated=row.kind == ADJUDICATE), answers)
    latest: dict[str, Row] = {}
    for row in rows:
        if row.kind == "label":
            latest[row.annotator] = row
    if not latest:
        return None  # skips only
    values = {tuple(sorted(row.value or [])) for row in latest.values()}
    if len(values) > 1:
        return ItemLabel(item_id, DISPUTED, None, answers)
    return ItemLabel(item_id, LABELED, _label(max(latest.values(), key=lambda r: r.id)), answers)


def _kind(row: Row) -> str:
    return "relabel" if row.kind == "label" and row.replaces_id is not None else row.kind


def _label(row: Row, adjudicated: bool = False) -> CurrentLabel:
    return CurrentLabel(row.item_id, list(row.value or []), row.annotator, row.id, row.created_at, adjudicated)


def current_labels(session: Session, project_id: int, split: str | None = None) -> dict[int, CurrentLabel]:
    """item id -> its current label (module doc); disputed items have none. In the order of `item_labels` (by
    each item's first live row), which training follows.

    The same rule as `item_labels`, on plain column rows (no ORM objects, no Answer tuples) that this process
    keeps between calls with the labels they give (`_annotation_rows`): every round's selection and training, and
    every opened round, read it. An item's label depends on its own rows only, so a split's labels are the
    project's of the items in that split, in the same order."""
    cache = _annotation_rows(session, project_id)
    if cache.labels is None:
        cache.labels, cache.items = _labels_of(cache.rows), {row.item_id for row in cache.rows}
    if split is None:
        return dict(cache.labels)
    in_split: set[int] = set()
    if split == "eval":  # the evaluation set is small (eval_size): read its ids
        in_split.update(session.scalars(select(Item.id).where(Item.project_id == project_id, Item.split == split)))
    else:  # a pool may hold a million items: look the labeled items up by id instead
        ids = list(cache.labels)
        for start in range(0, len(ids), IN_CHUNK):
            in_split.update(session.scalars(select(Item.id).where(
                Item.project_id == project_id, Item.split == split, Item.id.in_(ids[start:start + IN_CHUNK]))))
    return {item_id: label for item_id, label in cache.labels.items() if item_id in in_split}


def _labels_of(rows: list[Row]) -> dict[int, CurrentLabel]:
    """current_labels' rule on the project's annotation rows (ordered by id)."""
    retracted = {row.replaces_id for row in rows if row.kind == "retract" and row.replaces_id is not None}
    order: dict[int, None] = {}
    decision: dict[int, Row] = {}
    latest: dict[int, dict[str, Row]] = {}
    for row in rows:
        if row.kind == "retract" or row.id in retracted:
            continue
        order.setdefault(row.item_id)
        if row.kind == ADJUDICATE or (row.kind == "label" and row.queue_entry_id is None):
            decision[row.item_id] = row
        elif row.kind == "label":
            latest.setdefault(row.item_id, {})[row.annotator] = row
    labels = {}
    for item_id in order:
        if item_id in decision:
            row = decision[item_id]
        elif item_id in latest:
            given = latest[item_id].values()
            if len({tuple(sorted(r.value or [])) for r in given}) > 1:
                continue  # disputed
            row = max(given, key=lambda r: r.id)
        else:
            continue  # skips only
        labels[item_id] = CurrentLabel(item_id, list(row.value or []), row.annotator, row.id, row.created_at,
                                       adjudicated=row.kind == ADJUDICATE)
    return labels


def _appended(labels: dict[int, CurrentLabel], items: set[int], new: list[Row]) -> tuple[dict | None, set | None]:
    """The labels after `new` rows when each is a first answer on an item without rows so far (the common case: a
    round's labels arriving), which adds that label at the end of the order; else (None, None): read in full."""
    first = {row.item_id for row in new}
    if len(first) != len(new) or not first.isdisjoint(items) or any(
            row.kind != "label" or row.queue_entry_id is None for row in new):
        return None, None
    grown = dict(labels)
    for row in new:
        grown[row.item_id] = CurrentLabel(row.item_id, list(row.value or []), row.annotator, row.id, row.created_at)
    return grown, items | first


_ROW_COLUMNS = (Annotation.id, Annotation.item_id, Annotation.annotator, Annotation.kind, Annotation.value,
                Annotation.replaces_id, Annotation.queue_entry_id, Annotation.created_at)


@dataclass
class _RowCache:
    rows: list[Row]  # the project's annotation rows (_ROW_COLUMNS), by id
    last_id: int
    id_sum: int
    last_created: datetime | None  # the latest created_at among them
    labels: dict[int, CurrentLabel] | None = None  # what they give (current_labels), once asked
    items: set[int] | None = None  # the items with any of these rows, kept with `labels`
    states: dict[int, ItemLabel] | None = None  # every item's state (item_labels), once asked


# engine -> project id -> its annotation rows as last read. Annotations are append-only, so a later read fetches
# only the rows after the last one it has, once it has checked that the rows up to it are still those it holds
# (their count, sum of ids and latest created_at: a deleted project's rows, a rolled-back insert or a row committed
# late under PostgreSQL show there, and the rows are then read again in full).
_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ROWS_LOCK = threading.Lock()
_ROWS_PROJECTS = 8  # projects kept per engine


def _annotation_rows(session: Session, project_id: int) -> _RowCache:
    engine = session.get_bind()
    with _ROWS_LOCK:
        cached = _ROWS.get(engine, {}).get(project_id)
    if cached is not None:
        count, id_sum, created = session.execute(
            select(func.count(), func.coalesce(func.sum(Annotation.id), 0), func.max(Annotation.created_at))
            .where(Annotation.project_id == project_id, Annotation.id <= cached.last_id)).one()
        if (count, id_sum, created) == (len(cached.rows), cached.id_sum, cached.last_created):
            new = session.execute(
                select(*_ROW_COLUMNS).where(Annotation.project_id == project_id, Annotation.id > cached.last_id)
                .order_by(Annotation.id)).all()
            if not new:
                return cached
            created = [row.created_at for row in new] + ([cached.last_created] if cached.last_created else [])
            grown = _RowCache(cached.rows + new, new[-1].id, cached.id_sum + sum(row.id for row in new), max(created))
            if cached.labels is not None:
                grown.labels, grown.items = _appended(cached.labels, cached.items, new)
            return _keep(engine, project_id, grown)
    rows = session.execute(
        select(*_ROW_COLUMNS).where(Annotation.project_id == project_id).order_by(Annotation.id)).all()
    return _keep(engine, project_id, _RowCache(rows, rows[-1].id if rows else 0, sum(row.id for row in rows),
                                               max((row.created_at for row in rows), default=None)))


def _keep(engine, project_id: int, cache: _RowCache) -> _RowCache:
    with _ROWS_LOCK:
        projects = _ROWS.setdefault(engine, {})
        projects.pop(project_id, None)
        projects[project_id] = cache
        while len(projects) > _ROWS_PROJECTS:
            projects.pop(next(iter(projects)))
    return cache


def disputed_items(session: Session, project_id: int) -> list[ItemLabel]:
    """The project's disputed items (the review queue of the Adjudicate page), the longest disputed first."""
    found = [state for state in item_labels(session, project_id).values() if state.status == DISPUTED]
    return sorted(found, key=lambda state: max(a.annotation_id for a in state.answers if a.kind == "label"))


def answered_item_ids(project_id: int):
    """A select of the items with a live label or adjudication row (labeled or disputed): never picked again."""
    retracted = select(Annotation.replaces_id).where(
        Annotation.project_id == project_id, Annotation.kind == "retract", Annotation.replaces_id.is_not(None))
    return select(Annotation.item_id).where(
        Annotation.project_id == project_id, Annotation.kind.in_(("label", ADJUDICATE)),
        Annotation.id.not_in(retracted))


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
