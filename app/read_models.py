"""Typed read models for the pages and the CLI: what a project, its rounds, its jobs and its simulations look like
to a reader. Built from storage's queries; `Workbench` hands them out (`wb.status(project_id)`, ...).

Users see a round by its index, never by its database id: a job names the round it belongs to by index.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from learners.metrics import wilson_interval
from storage import jobs, queue
from storage.db import Database
from storage.files import DamagedFile, artifacts, latest_artifact, load_json, load_matrix
from storage.labels import items_per_split, labeled_per_split
from storage.models import Artifact, Job, Project, Round
from storage.rounds import latest_round, project_rounds


@dataclass(frozen=True)
class QueueCounts:
    """A round's queue entries per state."""

    pending: int = 0
    claimed: int = 0
    labeled: int = 0
    skipped: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class RoundRow:
    index: int
    strategy: str
    state: str  # selecting, labeling, training, done
    labels_at_start: int
    queue: QueueCounts
    note: str
    metrics: dict  # the eval-set metrics after the round's training ({} before)
    # Items the round began with that the selection of round `picked_ahead_by` ranked (app.rounds: labeled while
    # that round trained); 0 and None when the round was chosen by its own selection only.
    picked_ahead: int = 0
    picked_ahead_by: int | None = None
    awaiting_selection: bool = False  # opened ahead; its own selection (with the new head) is still to come


@dataclass(frozen=True)
class JobView:
    id: int
    kind: str
    state: str  # queued, running, done, failed
    progress: float  # 0..1
    message: str
    error: str | None
    attempts: int
    worker: str | None
    round_index: int | None  # the round the job belongs to, None for project-wide jobs (embed, simulate)
    created_at: datetime


@dataclass(frozen=True)
class ProjectStatus:
    project: str
    classes: list[str]
    items: dict[str, int]  # items per split ("pool", "eval")
    labeled_pool: int
    labeled_eval: int
    round: RoundRow | None  # the latest round
    jobs: list[JobView]  # queued and running jobs, oldest first


@dataclass(frozen=True)
class ChartPoint:
    """One finished round: pool labels spent and the eval-set metrics after that round's training."""

    round: int
    strategy: str
    labels: int | None
    accuracy: float | None
    balanced_accuracy: float | None
    macro_f1: float | None
    mAP: float | None
    micro_f1: float | None
    eval_n: int | None
    labels_per_class: list[int] | None
    intervals: dict[str, list[float] | None] = field(default_factory=dict)  # metric -> 95% [low, high]

    def metric(self, name: str) -> float | None:
        """The value of a metric named in learners' metric table (accuracy, mAP, ...)."""
        return getattr(self, name)

    def interval(self, name: str) -> list[float] | None:
        """The metric's 95% interval over the evaluation items. Rounds trained before intervals were stored have
        one for accuracy only (Wilson, from accuracy and n, which is exact)."""
        if name in self.intervals:
            return self.intervals[name]
        if name == "accuracy" and self.accuracy is not None and self.eval_n:
            return wilson_interval(round(self.accuracy * self.eval_n), self.eval_n)
        return None


@dataclass(frozen=True)
class SimulationResult:
    """A finished simulation: its settings, one point per (strategy, seed, round), and the project's own rounds."""

    job_id: int
    created_at: datetime
    config: dict
    points: list[dict]
    human: list[dict]


def _round_row(s, round_: Round) -> RoundRow:
    return RoundRow(
        index=round_.index,
        strategy=round_.strategy,
        state=round_.state,
        labels_at_start=round_.labels_at_start,
        queue=QueueCounts(**queue.round_counts(s, round_.id)),
        note=round_.note,
        metrics=round_.metrics or {},
        picked_ahead=round_.picked_ahead or 0,
        picked_ahead_by=round_.picked_ahead_by,
        awaiting_selection=bool(round_.awaiting_selection),
    )


def _job_views(s, project_id: int, rows: list[Job]) -> list[JobView]:
    index_of = {r.id: r.index for r in project_rounds(s, project_id)}
    return [
        JobView(id=j.id, kind=j.kind, state=j.state, progress=j.progress or 0.0, message=j.message or "", error=j.error,
                attempts=j.attempts, worker=j.worker, round_index=index_of.get(j.round_id), created_at=j.created_at)
        for j in rows
    ]


def project_status(db: Database, project_id: int) -> ProjectStatus:
    with db.read() as s:
        project = s.get(Project, project_id)
        labeled = labeled_per_split(s, project_id)
        round_ = latest_round(s, project_id)
        return ProjectStatus(
            project=project.name,
            classes=list(project.classes),
            items=items_per_split(s, project_id),
            labeled_pool=labeled.get("pool", 0),
            labeled_eval=labeled.get("eval", 0),
            round=None if round_ is None else _round_row(s, round_),
            jobs=_job_views(s, project_id, jobs.active_jobs(s, project_id)),
        )


def round_table(db: Database, project_id: int) -> list[RoundRow]:
    """One row per round, oldest first."""
    with db.read() as s:
        return [_round_row(s, r) for r in project_rounds(s, project_id)]


def chart_points(db: Database, project_id: int) -> list[ChartPoint]:
    """One point per finished (trained and evaluated) round, oldest first."""
    with db.read() as s:
        rounds = project_rounds(s, project_id)
    return [
        ChartPoint(
            round=r.index,
            strategy=r.strategy,
            labels=r.metrics.get("labels"),
            accuracy=r.metrics.get("accuracy"),
            balanced_accuracy=r.metrics.get("balanced_accuracy"),
            macro_f1=r.metrics.get("macro_f1"),
            mAP=r.metrics.get("mAP"),
            micro_f1=r.metrics.get("micro_f1"),
            eval_n=r.metrics.get("n"),
            labels_per_class=r.metrics.get("labels_per_class"),
            intervals=r.metrics.get("intervals") or {},
        )
        for r in rounds
        if r.state == "done" and r.metrics
    ]


def recent_jobs(db: Database, project_id: int, limit: int = 20) -> list[JobView]:
    """The project's latest jobs, newest first."""
    with db.read() as s:
        return _job_views(s, project_id, jobs.recent_jobs(s, project_id, limit))


def failed_jobs(db: Database, project_id: int) -> list[JobView]:
    """Failed jobs that no later job of the same kind and round has replaced (by a retry or a rerun)."""
    with db.read() as s:
        return _job_views(s, project_id, jobs.failed_jobs(s, project_id))


def simulations(db: Database, project_id: int) -> list[SimulationResult]:
    """Finished simulations of the project, newest first."""
    with db.read() as s:
        stored = artifacts(s, project_id, "simulation")
    results = []
    for artifact in stored:
        run = load_json(artifact)
        results.append(SimulationResult(job_id=artifact.meta.get("job_id"), created_at=artifact.created_at,
                                        config=run["config"], points=run["points"], human=run["human"]))
    return results


def has_predictions(db: Database, project_id: int) -> bool:
    """Whether a trained head has written predictions yet (they exist after the first training)."""
    with db.read() as s:
        return latest_artifact(s, project_id, "predictions") is not None


_PREDICTIONS_LOCK = threading.Lock()
_predictions: tuple[str, np.ndarray, dict[int, int]] | None = None  # (file, probabilities, row of each item id)


def prediction_rows(artifact: Artifact | None) -> tuple[np.ndarray, dict[int, int]] | None:
    """The latest head's probabilities and the row of each item id, read once per new predictions file (the Label
    page asks for every item it shows); None before the first training, or when the file is damaged (labeling
    goes on without a guess; the Rounds page offers the retrain). Keyed by the file, not the artifact id: ids of a
    deleted project are reused."""
    global _predictions
    if artifact is None:
        return None
    with _PREDICTIONS_LOCK:
        if _predictions is None or _predictions[0] != artifact.path:
            try:
                probs, ids = load_matrix(artifact)
            except DamagedFile:
                return None
            _predictions = (artifact.path, probs, {int(i): row for row, i in enumerate(ids)})
        return _predictions[1], _predictions[2]


def guess(artifact: Artifact | None, item_id: int, task: str) -> list[tuple[int, float]] | None:
    """What the latest head says of an item: None without predictions for it; else [(class, probability)] for
    the top class, or (multi-label) every tag at 0.5 or more, most likely first ([] means none of them)."""
    rows = prediction_rows(artifact)
    if rows is None or item_id not in rows[1]:
        return None
    scores = rows[0][rows[1][item_id]]
    if task == "multi_label":
        return [(int(k), float(scores[k])) for k in np.argsort(-scores) if scores[k] >= 0.5]
    k = int(np.argmax(scores))
    return [(k, float(scores[k]))]
