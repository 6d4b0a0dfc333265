"""The job kinds the model worker runs: one row each. Torch-free, so the web process enqueues from it; only the
worker resolves a handler (and so imports torch).

The contract of a handler, `handler(job, ctx: JobContext) -> str` (the message shown when the job is done):

- It may be run again from the start: a worker that dies (kill -9, out of memory) stops heartbeating and another
  worker claims the job and runs it anew, possibly after the first attempt had already written its result. So a
  handler is idempotent: before writing, it checks whether the state it would produce is already there (the round
  moved on, the artifact this job writes exists, the cached file is current) and then writes nothing more.
- It reports progress through `ctx.progress(fraction, message)` often enough to be stopped: when the job was taken
  over by another worker, the next report raises `JobLost` and the handler's run ends without a result.

Adding a job kind: a handler module under app/jobs/ and a row here.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from sqlalchemy.orm import Session

from storage import jobs
from storage.models import Job


class JobLost(Exception):
    """Raised by a job's progress report once another worker has taken the job over: the handler stops there."""


@dataclass(frozen=True)
class JobKind:
    handler: str  # "module:function", imported by the worker only
    priority: int  # lower is claimed first
    waits_for_embed: bool  # waits while another worker embeds the job's project (it needs the features)
    doc: str
    # "module:function(job, ctx) -> bool | None": an idle worker's share of a running job; True: did some, False:
    # none left to take, None: none offered yet
    helper: str | None = None


JOB_KINDS: dict[str, JobKind] = {
    "select": JobKind("app.jobs.select:select_round", 0, True,
                      "fill a round's queue with the strategy's picks (a sequential strategy: its next picks)"),
    "train": JobKind("app.jobs.train:train", 5, True,
                     "train the head on the labels so far, evaluate it, close the round and open the next"),
    "embed": JobKind("app.jobs.features:embed", 10, False,
                     "compute and cache the project's features (and augmented views when its method needs them)",
                     helper="app.jobs.features:help_embed"),
    "simulate": JobKind("app.jobs.simulate:simulate", 15, True,
                        "run the loop with an oracle answering from gold labels, per strategy and seed"),
    "review": JobKind("app.jobs.review:review", 12, True,
                      "find labeled pool items whose label is likely wrong (out-of-fold probabilities, cleanlab)"),
    "map": JobKind("app.jobs.map:project_map", 13, True,
                   "project the cached features to 2-D for the Map page (UMAP, PCA for a small pool)"),
}


def enqueue(s: Session, kind: str, project_id: int | None, round_id: int | None = None,
            params: dict | None = None) -> Job:
    """Queue a job of a kind listed in JOB_KINDS."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(JOB_KINDS)}")
    return jobs.enqueue(s, kind, project_id, round_id, params, priority=JOB_KINDS[kind].priority)


def claim(s: Session, worker: str, stale_after: float) -> Job | None:
    """The next job for `worker` (storage.jobs.claim with the kinds that wait for an embedding)."""
    waiting = [kind for kind, row in JOB_KINDS.items() if row.waits_for_embed]
    return jobs.claim(s, worker, stale_after=stale_after, waits_for_embed=waiting)


def helper(kind: str):
    """The helper function of `kind`, or None when its jobs take no help (imports its module: worker only)."""
    path = JOB_KINDS[kind].helper
    if path is None:
        return None
    module, _, function = path.partition(":")
    return getattr(import_module(module), function)


def handler(kind: str):
    """The handler function of `kind` (imports its module: worker only)."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(JOB_KINDS)}")
    module, _, function = JOB_KINDS[kind].handler.partition(":")
    return getattr(import_module(module), function)
