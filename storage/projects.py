"""A project's life after creation, inside the caller's transaction: which of its jobs a worker is running now (and
which are active, for many projects at once),
growing and shrinking its evaluation set, retiring the heads and predictions of a feature space it left, a
history of its settings changes, and deleting all its rows (and, after the commit, its own folder).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.files import save_json
from storage.models import Annotation, Artifact, Base, Item, Job, Project, QueueEntry, Round, utcnow
from storage.queue import queued_item_ids

SETTINGS_KIND = "settings"  # artifact kind of one settings change (a small JSON file; the change is in its meta)
RETIRED_PREFIX = "retired_"  # head -> retired_head: kept on disk, never read as the latest head again
EVAL_GROW_STREAM = 7  # a seed stream of its own for the items an eval-size change moves


class ProjectFolderProblem(StorageError, OSError):
    """The project's folder could not be removed (the message names it and why)."""


# ----- jobs ---------------------------------------------------------------------------------------------------------
def running_jobs(session: Session, project_id: int, stale_after: float) -> list[Job]:
    """The project's jobs a live worker runs now (running, heartbeat within `stale_after` seconds): a worker that
    stopped heartbeating is dead and its job is no longer held."""
    fresh = utcnow() - timedelta(seconds=stale_after)
    return list(session.scalars(
        select(Job).where(Job.project_id == project_id, Job.state == "running", Job.heartbeat >= fresh)
        .order_by(Job.id).with_for_update()
    ))


def active_jobs_by_project(session: Session, project_ids: list[int]) -> dict[int, list[Job]]:
    """project id -> its queued and running jobs, oldest first (every given project, [] when none): one query."""
    found: dict[int, list[Job]] = {int(p): [] for p in project_ids}
    for job in session.scalars(select(Job).where(Job.project_id.in_(found), Job.state.in_(("queued", "running")))
                               .order_by(Job.id)):
        found[job.project_id].append(job)
    return found


# ----- the evaluation set -------------------------------------------------------------------------------------------
def _answered_item_ids(session: Session, project_id: int):
    """Items with any answer (label, skip or retraction): the evaluation set never gives one back."""
    return select(Annotation.item_id).where(Annotation.project_id == project_id)


def eval_counts(session: Session, project_id: int) -> tuple[int, int]:
    """(evaluation items, of which answered)."""
    ids = list(session.scalars(select(Item.id).where(Item.project_id == project_id, Item.split == "eval")))
    answered = set(session.scalars(_answered_item_ids(session, project_id)))
    return len(ids), sum(1 for i in ids if i in answered)


def grow_eval_set(session: Session, project_id: int, count: int, seed: int) -> list[int]:
    """Move up to `count` random pool items that were never answered and wait in no queue to the evaluation set
    (seeded by the project's seed and the set's size now); returns their ids, in the random order drawn."""
    free = np.array(list(session.scalars(
        select(Item.id).where(Item.project_id == project_id, Item.split == "pool",
                              Item.id.not_in(_answered_item_ids(session, project_id)))
        .order_by(Item.id)
    )), dtype=np.int64)
    queued = queued_item_ids(session, project_id)
    free = free[[int(i) not in queued for i in free]] if len(free) else free
    size_now = eval_counts(session, project_id)[0]
    rng = np.random.default_rng([seed, EVAL_GROW_STREAM, size_now])
    picked = [int(i) for i in free[rng.permutation(len(free))[:count]]]
    if picked:
        session.execute(update(Item).where(Item.id.in_(picked)).values(split="eval")
                        .execution_options(synchronize_session=False))
    return picked


def shrink_eval_set(session: Session, project_id: int, count: int, seed: int) -> tuple[list[int], int]:
    """Give up to `count` evaluation items back to the pool: only items never answered, and none an annotator
    holds now; those waiting in no queue go first, then pending ones (their queue entries are dropped). Labeled
    evaluation items always stay. Returns (the ids moved, queue entries dropped)."""
    candidates = list(session.scalars(
        select(Item.id).where(Item.project_id == project_id, Item.split == "eval",
                              Item.id.not_in(_answered_item_ids(session, project_id)))
        .order_by(Item.id)
    ))
    entries = {
        item_id: (entry_id, state) for entry_id, item_id, state in session.execute(
            select(QueueEntry.id, QueueEntry.item_id, QueueEntry.state)
            .join(Round, Round.id == QueueEntry.round_id)
            .where(Round.project_id == project_id, QueueEntry.state.in_(("pending", "claimed")))
        )
    }
    rng = np.random.default_rng([seed, EVAL_GROW_STREAM, len(candidates)])
    order = [candidates[int(k)] for k in rng.permutation(len(candidates))]
    unqueued = [i for i in order if i not in entries]
    pending = [i for i in order if i in entries and entries[i][1] == "pending"]
    moved = (unqueued + pending)[:count]
    dropped = [entries[i][0] for i in moved if i in entries]
    if moved:
        session.execute(update(Item).where(Item.id.in_(moved)).values(split="pool")
                        .execution_options(synchronize_session=False))
    if dropped:
        session.execute(update(QueueEntry).where(QueueEntry.id.in_(dropped), QueueEntry.state == "pending")
                        .values(state="dropped").execution_options(synchronize_session=False))
    return moved, len(dropped)


# ----- artifacts of a feature space the project left ---------------------------------------------------------------
def retire_artifacts(session: Session, project_id: int, kinds: tuple[str, ...], reason: str) -> int:
    """Mark the project's artifacts of `kinds` retired (their kind becomes 'retired_<kind>'): the files stay on
    disk, but no job or page reads them as the latest head or predictions again. Returns how many."""
    rows = list(session.scalars(select(Artifact).where(Artifact.project_id == project_id, Artifact.kind.in_(kinds))))
    for row in rows:
        row.meta = {**(row.meta or {}), "retired": reason}
        row.kind = RETIRED_PREFIX + row.kind
    session.flush()
    return len(rows)


# ----- the settings history -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SettingsRecord:
    at: datetime
    round_index: int | None  # the project's latest round when the change was made
    changes: list[str]  # one sentence per change: what changed, and what it did


def record_settings_change(session: Session, folder: Path, project_id: int, round_index: int | None,
                           changes: list[str], before: dict, after: dict) -> None:
    """One entry of the history: a small JSON file under the project's folder, its sentences in the row."""
    stamp = f"{utcnow():%Y%m%d%H%M%S%f}"
    save_json(session, folder / "settings" / f"change-{stamp}.json", project_id=project_id, kind=SETTINGS_KIND,
              data={"round": round_index, "changes": changes, "before": before, "after": after},
              meta={"round": round_index, "changes": changes})


def settings_history(session: Session, project_id: int) -> list[SettingsRecord]:
    """The project's settings changes, newest first."""
    rows = session.scalars(select(Artifact).where(Artifact.project_id == project_id,
                                                  Artifact.kind == SETTINGS_KIND).order_by(Artifact.id.desc()))
    return [SettingsRecord(row.created_at, (row.meta or {}).get("round"), list((row.meta or {}).get("changes", [])))
            for row in rows]


# ----- deletion -----------------------------------------------------------------------------------------------------
def delete_project_rows(session: Session, project_id: int) -> dict[str, int]:
    """Delete every row of the project in every table, children first (the foreign-key order of the schema, so
    no cascade is relied on and a table added later is covered): rows with its project id, or of its rounds or
    items. Returns the number of rows deleted per table."""
    rounds = select(Round.id).where(Round.project_id == project_id).scalar_subquery()
    items = select(Item.id).where(Item.project_id == project_id).scalar_subquery()
    counts: dict[str, int] = {}
    for table in reversed(Base.metadata.sorted_tables):
        columns = table.c
        if table.name == Project.__tablename__:
            where = columns.id == project_id
        elif "project_id" in columns:
            where = columns.project_id == project_id
        elif "round_id" in columns:
            where = columns.round_id.in_(rounds)
        elif "item_id" in columns:
            where = columns.item_id.in_(items)
        else:
            continue
        counts[table.name] = session.execute(delete(table).where(where)).rowcount
    session.expunge_all()
    return counts


def project_folder(home: Path, project_id: int) -> Path:
    """The project's own folder (features, heads, predictions, settings history), without creating it."""
    return Path(home) / "projects" / str(int(project_id))


def remove_project_folder(home: Path, project_id: int) -> Path | None:
    """Remove the project's own folder and nothing else: a link there is removed as a link, never followed.
    Returns the folder removed, or None when there was none."""
    folder = project_folder(home, project_id)
    parent = (Path(home) / "projects").resolve()
    if folder.is_symlink():
        folder.unlink()
        return folder
    if not folder.exists():
        return None
    if folder.resolve().parent != parent:
        raise ProjectFolderProblem(f"{folder} does not lie in {parent}; it was left in place")
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        raise ProjectFolderProblem(f"{folder}: could not be removed ({exc.strerror or exc}); delete it by hand") from exc
    return folder
