"""Opening and closing rounds inside a write transaction (shared by the verbs and the worker)."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import jobs
from storage.labels import current_labels
from storage.models import Project, Round, utcnow


def open_round(s: Session, project: Project, strategy: str | None = None, params: dict | None = None) -> Round:
    """A new round in state 'selecting' with its select job. Round 0 is random (no model yet)."""
    index = s.scalar(select(func.coalesce(func.max(Round.index) + 1, 0)).where(Round.project_id == project.id))
    if strategy is None:
        strategy = "random" if index == 0 else project.strategy
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
