"""Typed read models for the pages and the CLI: what a project, its rounds, its jobs and its simulations look like
to a reader. Built from storage's queries; `Workbench` hands them out (`wb.status(project_id)`, ...).

Users see a round by its index, never by its database id: a job names the round it belongs to by index.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from learners.forecast import changed_share
from learners.metrics import wilson_interval
from storage import jobs
from storage.db import Database
from storage.files import DamagedFile, artifacts, latest_artifact, load_json, load_matrix
from storage.items import all_projects, label_tallies, labeled_counts, split_counts
from storage.models import Artifact, Job, Project, Round
from storage.projects import active_jobs_by_project
from storage.rounds import latest_rounds, project_rounds, queue_counts, round_indices
from storage.simulation_runs import pool_item_ids, round_predictions


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


def _round_row(round_: Round, counts: dict[str, int]) -> RoundRow:
    return RoundRow(
        index=round_.index,
        strategy=round_.strategy,
        state=round_.state,
        labels_at_start=round_.labels_at_start,
        queue=QueueCounts(**counts),
        note=round_.note,
        metrics=round_.metrics or {},
        picked_ahead=round_.picked_ahead or 0,
        picked_ahead_by=round_.picked_ahead_by,
        awaiting_selection=bool(round_.awaiting_selection),
    )


def _job_views(index_of: dict[int, int], rows: list[Job]) -> list[JobView]:
    """`index_of`: round id -> its index, for the rounds the jobs name."""
    return [
        JobView(id=j.id, kind=j.kind, state=j.state, progress=j.progress or 0.0, message=j.message or "", error=j.error,
                attempts=j.attempts, worker=j.worker, round_index=index_of.get(j.round_id), created_at=j.created_at)
        for j in rows
    ]


def project_statuses(db: Database, project_ids: list[int] | None = None) -> dict[int, ProjectStatus]:
    """project id -> its status, for the given projects (every project when None), in a few aggregate queries
    for all of them together: the Projects page's list. The counts are SQL aggregates (storage.items.split_counts,
    label_tallies): no per-item row reaches Python, so a 1M-item project costs an index scan, not 1M objects."""
    with db.read() as s:
        projects = {p.id: p for p in all_projects(s)}
        ids = list(projects) if project_ids is None else [int(p) for p in project_ids if int(p) in projects]
        items = split_counts(s, ids)
        tallies = label_tallies(s, ids)
        latest = latest_rounds(s, ids)
        counts = queue_counts(s, [r.id for r in latest.values()])
        active = active_jobs_by_project(s, ids)
        index_of = round_indices(s, ids)
        statuses = {}
        for pid in ids:
            labeled = labeled_counts(tallies[pid])
            round_ = latest.get(pid)
            statuses[pid] = ProjectStatus(
                project=projects[pid].name,
                classes=list(projects[pid].classes),
                items=items[pid],
                labeled_pool=labeled.get("pool", 0),
                labeled_eval=labeled.get("eval", 0),
                round=None if round_ is None else _round_row(round_, counts[round_.id]),
                jobs=_job_views(index_of, active[pid]),
            )
        return statuses


def project_status(db: Database, project_id: int) -> ProjectStatus:
    return project_statuses(db, [project_id])[project_id]


def active_jobs(db: Database, project_id: int) -> list[JobView]:
    """The project's queued and running jobs, oldest first (what `ProjectStatus.jobs` holds), alone: a page that
    polls its jobs reads only these."""
    with db.read() as s:
        return _job_views(round_indices(s, [project_id]), active_jobs_by_project(s, [project_id])[project_id])


def labels_per_class(db: Database, project_id: int) -> dict[tuple[int, str], int]:
    """(class index, split) -> items of the split with a current label holding that class (a multi-label item
    counts once per tag), counted in SQL (storage.items.label_tallies): the Dashboard's labels per class."""
    with db.read() as s:
        tally = label_tallies(s, [project_id])[project_id]
    counts: dict[tuple[int, str], int] = {}
    for (split, value), n in tally.items():
        for k in value:
            counts[(k, split)] = counts.get((k, split), 0) + n
    return counts


def round_table(db: Database, project_id: int) -> list[RoundRow]:
    """One row per round, oldest first."""
    with db.read() as s:
        rounds = project_rounds(s, project_id)
        counts = queue_counts(s, [r.id for r in rounds])
        return [_round_row(r, counts[r.id]) for r in rounds]


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
        return _job_views(round_indices(s, [project_id]), jobs.recent_jobs(s, project_id, limit))


def failed_jobs(db: Database, project_id: int) -> list[JobView]:
    """Failed jobs that no later job of the same kind and round has replaced (by a retry or a rerun)."""
    with db.read() as s:
        return _job_views(round_indices(s, [project_id]), jobs.failed_jobs(s, project_id))


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


@dataclass(frozen=True)
class PredictionChange:
    """How many pool predictions changed between the heads of two consecutive trained rounds."""

    round: int
    previous_round: int
    changed: float  # share of the pool items compared
    pool_n: int  # pool items both heads predicted


_CHANGES_LOCK = threading.Lock()
_changes: dict[tuple[str, str, int], tuple[float, int]] = {}  # (earlier file, later file, pool size) -> result


def prediction_changes(db: Database, project_id: int, rounds: int = 5) -> list[PredictionChange]:
    """The share of pool items whose prediction changed between each pair of consecutive trained rounds among the
    latest `rounds` that saved predictions (oldest first; every round's training keeps its own predictions file).
    Each pair is read once per process (keyed by its files: the Dashboard asks on every rerun); the pairs before a
    damaged file are left out."""
    with db.read() as s:
        by_round = round_predictions(s, project_id)
        if len(by_round) < 2:
            return []
        pool_n = split_counts(s, [project_id]).get(project_id, {}).get("pool", 0)
        multi_label = s.get(Project, project_id).task == "multi_label"
    indices = sorted(by_round)[-rounds:]
    pool: np.ndarray | None = None  # read only when a pair is not known yet (1M ids cost seconds on every rerun)
    out: list[PredictionChange] = []
    for before, after in zip(indices, indices[1:]):
        key = (by_round[before].path, by_round[after].path, pool_n)
        with _CHANGES_LOCK:
            known = _changes.get(key)
        if known is None:
            if pool is None:
                with db.read() as s:
                    pool = np.fromiter(pool_item_ids(s, project_id), dtype=np.int64)
            try:
                known = _changed_in_pool(by_round[before], by_round[after], pool, multi_label)
            except DamagedFile:
                out = []
                continue
            with _CHANGES_LOCK:
                _changes[key] = known
        if known[1]:
            out.append(PredictionChange(round=after, previous_round=before, changed=known[0], pool_n=known[1]))
    return out


def _changed_in_pool(before: Artifact, after: Artifact, pool: np.ndarray, multi_label: bool) -> tuple[float, int]:
    """(changed share, items compared) over the pool items both files predict."""
    probs_a, ids_a = load_matrix(before)
    probs_b, ids_b = load_matrix(after)
    ids_a, ids_b = np.asarray(ids_a, dtype=np.int64), np.asarray(ids_b, dtype=np.int64)
    both, rows_a, rows_b = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
    keep = np.isin(both, pool)
    if not keep.any():
        return 0.0, 0
    return changed_share(probs_a[rows_a[keep]], probs_b[rows_b[keep]], multi_label), int(keep.sum())
