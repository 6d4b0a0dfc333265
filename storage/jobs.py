"""The job table as a work queue for model workers: enqueue, atomic claim, heartbeat, finish. Which kinds exist,
their priorities and which of them wait for an embedding are the caller's (app.job_kinds)."""
from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from storage.models import Job, utcnow

STALE_AFTER_SECONDS = 30
MAX_ATTEMPTS = 3
EMBED = "embed"  # the kind whose running job makes a project's `waits_for_embed` kinds wait


def enqueue(
    session: Session, kind: str, project_id: int | None, round_id: int | None = None, params: dict | None = None,
    *, priority: int,
) -> Job:
    """A queued job; a lower `priority` is claimed first."""
    job = Job(
        kind=kind,
        project_id=project_id,
        round_id=round_id,
        params=params or {},
        priority=priority,
        state="queued",
        message="waiting for a worker",
    )
    session.add(job)
    session.flush()
    return job


def claim(
    session: Session, worker: str, stale_after: float = STALE_AFTER_SECONDS, waits_for_embed: Collection[str] = (),
) -> Job | None:
    """Take the most urgent queued job, or one whose worker stopped heartbeating (it died). A project's jobs of the
    `waits_for_embed` kinds wait while another worker is embedding that project (they need its features)."""
    now = utcnow()
    stale = now - timedelta(seconds=stale_after)
    claimable = or_(Job.state == "queued", and_(Job.state == "running", Job.heartbeat < stale))
    # A project's other jobs wait while a live worker embeds it: they would embed the whole pool a second time.
    embedding = aliased(Job)
    claimable = and_(claimable, or_(Job.kind.not_in(tuple(waits_for_embed)), ~exists().where(
        embedding.project_id == Job.project_id, embedding.kind == EMBED, embedding.state == "running",
        embedding.heartbeat >= stale, embedding.id != Job.id)))
    for _attempt in range(10):
        job_id = session.scalars(
            select(Job.id).where(claimable).order_by(Job.priority, Job.id).limit(1).with_for_update(skip_locked=True)
        ).first()
        if job_id is None:
            return None
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(
                state="running",
                worker=worker,
                heartbeat=now,
                started_at=now,
                attempts=Job.attempts + 1,
                message="started",
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            job = session.get(Job, job_id, populate_existing=True)
            if job.attempts > MAX_ATTEMPTS:
                job.state = "failed"
                job.error = (f"gave up after {MAX_ATTEMPTS} attempts: the worker running it stopped heartbeating "
                             f"each time (killed, out of memory, or its machine went away)")
                job.message = "failed"
                job.finished_at = now
                continue
            return job
    return None


def heartbeat(session: Session, job_id: int, worker: str, progress: float | None = None, message: str | None = None) -> bool:
    """Record liveness (and progress); False if the job was taken over by another worker."""
    values: dict = {"heartbeat": utcnow()}
    if progress is not None:
        values["progress"] = max(0.0, min(1.0, float(progress)))
    if message is not None:
        values["message"] = message
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.worker == worker, Job.state == "running").values(**values)
    )
    return result.rowcount == 1


def _owned(job_id: int, worker: str | None):
    """The job, and, when `worker` is given, only while that worker still holds it running (a worker that was
    presumed dead and whose job another worker took over must not overwrite the new run's outcome)."""
    if worker is None:
        return (Job.id == job_id,)
    return (Job.id == job_id, Job.worker == worker, Job.state == "running")


def finish(session: Session, job_id: int, message: str = "done", worker: str | None = None) -> bool:
    """Mark the job done; False when `worker` no longer holds it."""
    result = session.execute(
        update(Job).where(*_owned(job_id, worker)).values(state="done", progress=1.0, message=message, finished_at=utcnow())
    )
    return result.rowcount == 1


def fail(session: Session, job_id: int, error: str, worker: str | None = None) -> bool:
    """Mark the job failed; False when `worker` no longer holds it."""
    result = session.execute(
        update(Job)
        .where(*_owned(job_id, worker))
        .values(state="failed", error=error, message="failed", finished_at=utcnow())
    )
    return result.rowcount == 1


def active_jobs(session: Session, project_id: int) -> list[Job]:
    return list(
        session.scalars(
            select(Job).where(Job.project_id == project_id, Job.state.in_(("queued", "running"))).order_by(Job.id)
        )
    )


def recent_jobs(session: Session, project_id: int, limit: int = 20) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.project_id == project_id).order_by(Job.id.desc()).limit(limit)))


def failed_jobs(session: Session, project_id: int) -> list[Job]:
    """Failed jobs that no later job of the same kind and round has replaced (by a retry or a rerun)."""
    latest: dict[tuple[str, int | None], Job] = {}
    for job in session.scalars(select(Job).where(Job.project_id == project_id).order_by(Job.id)):
        latest[(job.kind, job.round_id)] = job
    return [job for job in latest.values() if job.state == "failed"]


def is_queued(session: Session, round_id: int, kind: str) -> bool:
    """Whether a job of `kind` for the round waits for a worker."""
    return session.scalar(select(Job.id).where(Job.round_id == round_id, Job.kind == kind, Job.state == "queued")
                          .limit(1)) is not None


def later_run(session: Session, job: Job) -> int | None:
    """The id of a later job of the same kind, project and round (the job was already run again), or None."""
    return session.scalar(select(Job.id).where(
        Job.project_id == job.project_id, Job.kind == job.kind, Job.round_id == job.round_id, Job.id > job.id
    ).limit(1))


def running_jobs(session: Session, kinds: Collection[str], stale_after: float, other_than: str) -> list[Job]:
    """Jobs of `kinds` that a live worker other than `other_than` runs (its heartbeat fresher than `stale_after`
    seconds), most urgent first: what an idle worker may help with."""
    fresh = utcnow() - timedelta(seconds=stale_after)
    return list(session.scalars(select(Job).where(
        Job.kind.in_(tuple(kinds)), Job.state == "running", Job.heartbeat >= fresh, Job.worker != other_than,
    ).order_by(Job.priority, Job.id)))
