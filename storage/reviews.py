"""Likely label mistakes and the reviewer's decisions on them.

A scan (app.jobs.review) stores the flagged pool items as one `label_issues` artifact: a `.npy` matrix of their
out-of-fold probabilities in rank order (row 0 the likeliest mistake) with their item ids, and in its meta the label
each had (`given`), the annotation row that gave it (`annotation_ids`), the key of the labels and settings the scan
was computed on (`key`, `scan_key`) and the newest annotation id it saw (`last_annotation_id`).

A review decision is an append-only Annotation row by the reviewer, naming in `replaces_id` the label row it
decides on:
- "confirm": kind 'confirm', value the kept label. storage.labels.current_labels reads only 'label' and 'retract'
  rows, so the label stays as it was; the item leaves the list for as long as that label is current.
- "relabel": kind 'label', value the new class: the item's current label from now on (the latest non-retracted
  label row), so the next training uses it.
An item also leaves the list once its label changes by any other way (an undo, another answer): the scan's row
was about the old label.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.files import DamagedFile, latest_artifact, load_matrix, save_matrix
from storage.labels import current_labels
from storage.models import Annotation, Artifact, Item, Project
from storage.source_heads import backbone_key

ISSUES_KIND = "label_issues"
DECISIONS = ("confirm", "relabel")


class ReviewError(StorageError, RuntimeError):
    """A review decision that cannot be stored; the message says why."""


@dataclass(frozen=True)
class Flagged:
    """One flagged item still to review."""

    rank: int  # 0: the likeliest mistake of the scan
    item_id: int
    key: str
    given: int  # the class it is labeled with (the label the scan checked)
    suggested: int  # the class the out-of-fold model gives the highest probability
    probability: float  # of `suggested`
    given_probability: float  # of `given`
    annotation_id: int  # the label row the scan checked
    labeled_by: str  # who gave that label


@dataclass(frozen=True)
class ScanView:
    """The latest scan and what is left of it to review."""

    job_id: int | None
    created_at: datetime
    labels: int  # labeled pool items scanned
    folds: int
    flagged: int  # items the scan flagged
    open: list[Flagged]  # flagged and still to review, in rank order
    confirmed: int  # flagged items whose label a reviewer kept
    changed: int  # flagged items whose label changed since (relabeled, undone, answered again)
    labels_changed_since: int  # pool items whose label was given, changed or withdrawn after the scan


def scan_key(project: Project, labels: list[tuple[int, int]]) -> str:
    """The key of a scan's inputs: the (item id, annotation id) of each label it reads and the settings that shape
    its probabilities (feature space, head settings, seed). The same key means the same result."""
    inputs = [backbone_key(project.backbone), project.head, project.seed, sorted(labels)]
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def last_annotation_id(session: Session, project_id: int) -> int:
    """The newest annotation row of the project (0 without any): a scan records it with its result."""
    return session.scalar(select(func.coalesce(func.max(Annotation.id), 0)).where(
        Annotation.project_id == project_id))


def save_scan(session: Session, path: Path, *, project_id: int, item_ids: list[int], probs: np.ndarray,
              given: list[int], annotation_ids: list[int], key: str, labels: int, folds: int,
              seen_up_to: int, job_id: int | None) -> Artifact:
    """Store a scan's flagged items (rank order) and what it was computed on (module docstring)."""
    return save_matrix(
        session, path, project_id=project_id, kind=ISSUES_KIND, matrix=np.asarray(probs, dtype=np.float32),
        item_ids=np.asarray(item_ids, dtype=np.int64),
        meta={"key": key, "job_id": job_id, "labels": labels, "folds": folds, "last_annotation_id": seen_up_to,
              "given": [int(g) for g in given], "annotation_ids": [int(a) for a in annotation_ids]},
    )


def scan_with_key(session: Session, project_id: int, key: str) -> Artifact | None:
    """The project's latest scan computed on the inputs of `key`, if any and its file is intact (a damaged one is
    computed again: the new scan becomes the latest)."""
    artifact = latest_artifact(session, project_id, ISSUES_KIND, key=key)
    if artifact is None:
        return None
    try:
        load_matrix(artifact)
    except DamagedFile:
        return None
    return artifact


def confirmed_rows(session: Session, project_id: int) -> set[int]:
    """Label rows a reviewer confirmed (the `replaces_id` of each 'confirm' row)."""
    return set(session.scalars(select(Annotation.replaces_id).where(
        Annotation.project_id == project_id, Annotation.kind == "confirm")))


def latest_scan(session: Session, project_id: int) -> ScanView | None:
    """The project's latest scan with its flagged items still to review (None before the first scan)."""
    artifact = latest_artifact(session, project_id, ISSUES_KIND)
    if artifact is None:
        return None
    probs, item_ids = load_matrix(artifact)
    meta = artifact.meta
    current = current_labels(session, project_id)
    confirmed = confirmed_rows(session, project_id)
    keys = dict(session.execute(select(Item.id, Item.key).where(Item.id.in_([int(i) for i in item_ids]))).all())
    open_, n_confirmed, n_changed = [], 0, 0
    for rank, (item_id, row) in enumerate(zip(item_ids.tolist(), probs)):
        given, annotation_id = meta["given"][rank], meta["annotation_ids"][rank]
        label = current.get(item_id)
        if label is None or label.annotation_id != annotation_id or item_id not in keys:
            n_changed += 1
        elif annotation_id in confirmed:
            n_confirmed += 1
        else:
            suggested = int(np.argmax(row))
            open_.append(Flagged(rank, item_id, keys[item_id], given, suggested, float(row[suggested]),
                                 float(row[given]), annotation_id, label.annotator))
    return ScanView(
        job_id=meta.get("job_id"), created_at=artifact.created_at, labels=meta["labels"], folds=meta["folds"],
        flagged=len(item_ids), open=open_, confirmed=n_confirmed, changed=n_changed,
        labels_changed_since=_pool_items_changed_after(session, project_id, meta["last_annotation_id"]),
    )


def _pool_items_changed_after(session: Session, project_id: int, annotation_id: int) -> int:
    return session.scalar(
        select(func.count(func.distinct(Annotation.item_id)))
        .join(Item, Item.id == Annotation.item_id)
        .where(Annotation.project_id == project_id, Annotation.id > annotation_id,
               Annotation.kind.in_(("label", "retract")), Item.split == "pool")
    )


def record_review(session: Session, project_id: int, item_id: int, reviewer: str, decision: str,
                  value: list[int] | None = None, seen_annotation_id: int | None = None) -> Annotation:
    """Store a review decision on the item's current label as a new annotation row by `reviewer` (module
    docstring): "confirm" keeps it, "relabel" gives `value` instead (a relabel to the label it has is a confirm).
    `seen_annotation_id`: the label row the reviewer was shown; ReviewError when the label changed since, or when
    the item has no label now, so a decision never lands on a label nobody showed them."""
    if decision not in DECISIONS:
        raise ReviewError(f"unknown review decision {decision!r}; known: {', '.join(DECISIONS)}")
    reviewer = (reviewer or "").strip()[:100]
    if not reviewer:
        raise ReviewError("a review decision needs the reviewer's name")
    project = session.get(Project, project_id)
    item = session.get(Item, item_id)
    if project is None or item is None or item.project_id != project_id:
        raise ReviewError(f"item {item_id} is not in this project")
    label = current_labels(session, project_id).get(item_id)
    if label is None:
        raise ReviewError(f"{item.key} has no label now (it was withdrawn); nothing was stored")
    if seen_annotation_id is not None and label.annotation_id != seen_annotation_id:
        raise ReviewError(f"the label of {item.key} was changed by {label.annotator} since this list was drawn; "
                          "nothing was stored")
    if decision == "relabel":
        value = _checked_value(value, project)
        if value == sorted(label.value):
            decision = "confirm"
    row = Annotation(
        project_id=project_id, item_id=item_id, annotator=reviewer,
        kind="label" if decision == "relabel" else "confirm",
        value=value if decision == "relabel" else list(label.value), replaces_id=label.annotation_id,
    )
    session.add(row)
    session.flush()
    return row


def _checked_value(value: list[int] | None, project: Project) -> list[int]:
    value = sorted({int(v) for v in value or []})
    if any(not 0 <= v < len(project.classes) for v in value) or (project.task == "single_label" and len(value) != 1):
        raise ReviewError(f"label {value} is not valid for classes {project.classes}")
    return value
