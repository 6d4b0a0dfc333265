"""Opening and closing rounds inside a write transaction (shared by the verbs and the worker)."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import jobs, queue
from storage.files import latest_artifact
from storage.labels import current_labels
from storage.models import Job, Project, QueueEntry, Round, utcnow

SEQUENTIAL_LOOKAHEAD = 2  # picks a sequential strategy keeps queued ahead, so an annotator never waits


def open_round(s: Session, project: Project, strategy: str | None = None, params: dict | None = None) -> Round:
    """A new round in state 'selecting' with its select job. Round 0 is random (no model yet), unless the project
    started from a source head: then that head's predictions feed the project's strategy from round 0."""
    index = s.scalar(select(func.coalesce(func.max(Round.index) + 1, 0)).where(Round.project_id == project.id))
    if strategy is None:
        cold = index == 0 and latest_artifact(s, project.id, "head") is None
        strategy = "random" if cold else project.strategy
    if params is None:
        params = {} if strategy != project.strategy else dict(project.strategy_params or {})
    round_ = Round(
        project_id=project.id,
        index=index,
        strategy=strategy,
        strategy_params=params,
        state="selecting",
        labels_at_start=len(current_labels(s, project.id, split="pool")),
    )
    s.add(round_)
    s.flush()
    jobs.enqueue(s, "select", project.id, round_.id)
    return round_


def send_to_training(s: Session, round_: Round) -> None:
    round_.state = "training"
    round_.closed_at = utcnow()
    jobs.enqueue(s, "train", round_.project_id, round_.id)


def round_picks(s: Session, round_id: int) -> tuple[int, int]:
    """(pool items picked so far in the round, of which still open), dropped entries and the eval set excluded."""
    counts = dict(
        s.execute(
            select(QueueEntry.state, func.count())
            .where(QueueEntry.round_id == round_id, QueueEntry.arm != "eval", QueueEntry.state != "dropped")
            .group_by(QueueEntry.state)
        ).all()
    )
    return sum(counts.values()), counts.get("pending", 0) + counts.get("claimed", 0)


def after_answer(s: Session, round_: Round, project: Project, sequential: bool) -> None:
    """After a label or skip: a sequential round asks the worker for its next pick; a finished round trains."""
    if round_.state != "labeling":
        return
    if sequential and round_picks(s, round_.id)[0] < project.round_size:
        waiting = s.scalar(
            select(func.count()).select_from(Job).where(
                Job.round_id == round_.id, Job.kind == "select", Job.state == "queued"
            )
        )
        if not waiting:
            jobs.enqueue(s, "select", project.id, round_.id, {"next": True})
        return
    if queue.open_entries(s, round_.id) == 0:
        send_to_training(s, round_)
