"""The round state machine, inside a write transaction (shared by the verbs and the worker). Every change of a
round's state is one of the functions here:

    open_round          -> selecting
    start_labeling      selecting -> labeling    (its picks are queued)
    end_without_picks   selecting -> done        (nothing was left to pick)
    send_to_training    labeling  -> training    (its queue is done, or it was closed early)
    finish_training     training  -> done        (its head is trained and evaluated)
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from app import job_kinds
from storage import jobs, queue
from storage.files import latest_artifact
from storage.labels import current_labels
from storage.models import Project, Round, utcnow
from storage.rounds import next_round_index, round_picks

SEQUENTIAL_LOOKAHEAD = 2  # picks a sequential strategy keeps queued ahead, so an annotator never waits


def open_round(s: Session, project: Project, strategy: str | None = None, params: dict | None = None) -> Round:
    """A new round in state 'selecting' with its select job. Round 0 is random (no model yet), unless the project
    started from a source head: then that head's predictions feed the project's strategy from round 0."""
    index = next_round_index(s, project.id)
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
    job_kinds.enqueue(s, "select", project.id, round_.id)
    return round_


def start_labeling(round_: Round, note: str | None) -> None:
    round_.note = note
    round_.labeling_at = utcnow()
    round_.state = "labeling"


def end_without_picks(round_: Round, note: str | None) -> None:
    round_.note = note
    round_.labeling_at = utcnow()
    round_.state = "done"


def send_to_training(s: Session, round_: Round) -> None:
    round_.state = "training"
    round_.closed_at = utcnow()
    job_kinds.enqueue(s, "train", round_.project_id, round_.id)


def finish_training(round_: Round, metrics: dict, note: str) -> None:
    """Store the trained head's metrics; the note is added to the selection's."""
    round_.metrics = metrics
    round_.note = (round_.note + "; " if round_.note else "") + note
    round_.state = "done"
    round_.done_at = utcnow()


def after_answer(s: Session, round_: Round, project: Project, sequential: bool) -> None:
    """After a label or skip: a sequential round asks the worker for its next pick; a finished round trains."""
    if round_.state != "labeling":
        return
    if sequential and round_picks(s, round_.id)[0] < project.round_size:
        if not jobs.is_queued(s, round_.id, "select"):
            job_kinds.enqueue(s, "select", project.id, round_.id, {"next": True})
        return
    if queue.open_entries(s, round_.id) == 0:
        send_to_training(s, round_)
