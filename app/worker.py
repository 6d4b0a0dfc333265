"""The model worker: one long-lived process that owns the model and the device and runs jobs from the database.

A worker that dies (kill -9, out of memory) stops heartbeating; once its heartbeat is `Settings.stale_seconds` old
(WORKBENCH_STALE_SECONDS) another worker claims the job and runs it again from the start. A job that meets a damaged
cache file (features, augmented views) sets it aside and recomputes it instead of failing. A worker that was only
slow (its heartbeats did not reach the database in time) and finds its job taken over stops the job at its next
progress report (`JobLost`) and writes nothing: the new run's outcome is the job's.

A busy database (another process holding the SQLite write lock past the busy timeout, a PostgreSQL lock timeout:
`storage.db.is_busy`) never kills the worker: its poll backs off and polls again, a handler that meets it is run
again (handlers are idempotent), and the job's finish or failure is retried with backoff, the heartbeat still
beating, until it is written: a job is never left `running` because its outcome met a lock.

An idle worker helps with a job another worker runs when its kind has a helper (job_kinds): it embeds shards of a
running embed job (app.jobs.embed_shards), which that job's worker merges. It does so by default on a GPU (the
launcher starts one worker per GPU), on a CPU only with WORKBENCH_EMBED_HELP=1.
"""
from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Callable, TypeVar

from sqlalchemy import make_url

from app import job_kinds
from app.job_kinds import JobLost
from app.jobs.context import JobContext
from app.settings import Settings
from storage import files, jobs
from storage.db import Database, is_busy

HEARTBEAT_SECONDS = 2.0  # at most; a quarter of the stale timeout when that is shorter
MAX_SET_ASIDE = 3  # damaged cache files one job may set aside and recompute before it fails
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0  # seconds between tries while the database is busy (doubling)
T = TypeVar("T")


_frozen_modules = 0  # len(sys.modules) when the garbage collector's long-lived objects were last frozen


def freeze_after_imports() -> None:
    """Once a job has imported new modules (torch, timm, ... on the first job of a kind), collect and then freeze
    what lives: the garbage collector's full passes stop walking the hundreds of thousands of objects those
    libraries keep for the life of the process (measured: 25-40 ms of a simulated round on the digits). Frozen
    objects are still freed by reference counting; what a job leaves behind later is collected as before."""
    global _frozen_modules
    if len(sys.modules) > _frozen_modules:
        gc.collect()
        gc.freeze()
        _frozen_modules = len(sys.modules)


def heartbeat_interval(stale_seconds: float) -> float:
    """Seconds between heartbeats: several fit in the stale timeout, so a busy but live worker is never taken for dead."""
    return min(HEARTBEAT_SECONDS, stale_seconds / 4)


def pick_device() -> str:
    import torch  # here, not at the top: the CLI imports this module for every verb

    return "cuda" if torch.cuda.is_available() else "cpu"


class _Heartbeat(threading.Thread):
    """Writes the job's liveness and latest progress every few seconds while the job runs."""

    def __init__(self, db: Database, job_id: int, worker: str, interval: float = HEARTBEAT_SECONDS) -> None:
        super().__init__(daemon=True)
        self.db, self.job_id, self.worker, self.interval = db, job_id, worker, interval
        self.progress: float | None = 0.0
        self.message: str | None = None
        self._stop_event = threading.Event()
        self.lost = False

    def report(self, progress: float, message: str) -> None:
        """The job's progress callback; raises JobLost once a beat found the job taken over by another worker."""
        if self.lost:
            raise JobLost(f"job {self.job_id} was taken over by another worker")
        self.progress, self.message = progress, message

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        try:
            with self.db.write() as s:
                if not jobs.heartbeat(s, self.job_id, self.worker, self.progress, self.message):
                    self.lost = True
        except Exception:  # a busy database must not kill the job; the next beat tries again
            pass

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class Worker:
    def __init__(
        self, settings: Settings | None = None, name: str | None = None, device: str | None = None, quiet: bool = False,
        helps: bool | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.db = Database(self.settings.db_url)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.device = device or pick_device()
        # Whether an idle worker takes shards of another worker's embed job (job_kinds' helpers): by default on a
        # GPU; on a CPU only when asked (WORKBENCH_EMBED_HELP=1), since CPU workers share the same cores.
        self.helps = helps if helps is not None else _env_flag("WORKBENCH_EMBED_HELP", self.device != "cpu")
        self._stopping = False
        self._poll_pause = BACKOFF_FIRST  # the next wait after a poll that met a busy database
        self._next_look: dict[int, float] = {}  # job id -> when (time.monotonic) to look for a share of it again
        self.quiet = quiet

    def stop(self, *_args) -> None:
        self._stopping = True

    def run_once(self) -> bool:
        """Claim and run one job; False when there was nothing to do (or the database was too busy to ask)."""
        try:
            with self.db.write() as s:
                job = job_kinds.claim(s, self.name, stale_after=self.settings.stale_seconds)
        except Exception as exc:
            if not is_busy(exc):
                raise
            self._say(f"database busy (another process holds its lock); polling again in {self._poll_pause:.1f} s")
            time.sleep(self._poll_pause)
            self._poll_pause = min(BACKOFF_MAX, self._poll_pause * 2)
            return False
        self._poll_pause = BACKOFF_FIRST
        if job is None:
            return self._help()
        if job.attempts > 1:
            self._say(f"job {job.id} ({job.kind}) claimed again, attempt {job.attempts}: its last worker stopped heartbeating")
        beat = _Heartbeat(self.db, job.id, self.name, heartbeat_interval(self.settings.stale_seconds))
        beat.start()
        ctx = JobContext(db=self.db, home=self.settings.home, device=self.device, progress=beat.report)
        try:
            message = self._retrying(f"job {job.id} ({job.kind})", lambda: self._run(job, ctx))
        except JobLost:
            beat.stop()
            self._say(f"job {job.id} ({job.kind}) stopped: another worker had taken it over")
            return True
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            held = self._retrying(f"recording job {job.id}'s failure", lambda: self._write(
                lambda s: jobs.fail(s, job.id, detail, worker=self.name)))
            beat.stop()
            self._say(f"job {job.id} ({job.kind}) failed: {detail}" + ("" if held else " (another worker had taken it over)"))
            return True
        held = self._retrying(f"recording job {job.id} as done", lambda: self._write(
            lambda s: jobs.finish(s, job.id, message, worker=self.name)))
        beat.stop()  # only now: while the outcome waits for the lock, the job stays visibly alive
        freeze_after_imports()
        self._say(f"job {job.id} ({job.kind}) done: {message}" + ("" if held else " (another worker had taken it over)"))
        return True

    def _help(self) -> bool:
        """Take a share of a job another worker runs (an embed job's shards); True when it did some work. A helper
        writes no job row: its share is files the job's own worker collects, so its failure is only said here."""
        kinds = [kind for kind, row in job_kinds.JOB_KINDS.items() if row.helper]
        if not self.helps or not kinds:
            return False
        try:
            with self.db.read() as s:
                running = jobs.running_jobs(s, kinds, stale_after=self.settings.stale_seconds, other_than=self.name)
        except Exception as exc:
            if not is_busy(exc):
                raise
            return False
        for job in running:
            if time.monotonic() < self._next_look.get(job.id, 0.0):
                continue
            ctx = JobContext(db=self.db, home=self.settings.home, device=self.device, progress=lambda *_: None)
            try:
                helped = job_kinds.helper(job.kind)(job, ctx)
            except Exception as exc:
                self._say(f"helping job {job.id} ({job.kind}) failed: "
                          + "".join(traceback.format_exception_only(type(exc), exc)).strip())
                helped = False
            if helped:
                self._say(f"helped job {job.id} ({job.kind})")
                return True
            # Once none was left to take, a share frees up only when a claim goes stale; none offered yet (its
            # worker still planning): soon.
            wait = self.settings.stale_seconds if helped is False else heartbeat_interval(self.settings.stale_seconds)
            self._next_look[job.id] = time.monotonic() + wait
        return False

    def _write(self, change: Callable) -> bool:
        with self.db.write() as s:
            return change(s)

    def _retrying(self, what: str, action: Callable[[], T]) -> T:
        """`action()`, tried again with backoff while the database is busy (`is_busy`); other errors propagate, and
        so does a busy error once the worker is told to stop (the job is then claimed again after it goes stale)."""
        pause = BACKOFF_FIRST
        while True:
            try:
                return action()
            except Exception as exc:
                if not is_busy(exc) or self._stopping:
                    raise
                self._say(f"{what}: database busy (another process holds its lock); trying again in {pause:.1f} s")
                time.sleep(pause)
                pause = min(BACKOFF_MAX, pause * 2)

    def _run(self, job, ctx) -> str:
        """The job's handler; a damaged cache file it meets (features, views: files.RECOMPUTABLE_KINDS) is set aside
        and the handler runs again at once, so it recomputes the file. Any other damaged file (a head, predictions)
        fails the job with a message naming it: those cannot be rebuilt from the images."""
        handler = job_kinds.handler(job.kind)
        set_aside: list[str] = []
        while True:
            try:
                message = handler(job, ctx)
            except files.DamagedFile as exc:
                if exc.artifact_id is None or len(set_aside) >= MAX_SET_ASIDE:
                    raise
                with self.db.write() as s:
                    retired = files.set_aside(s, exc.artifact_id, str(exc)) is not None
                if not retired:
                    raise
                set_aside.append(str(exc.path))
                self._say(f"job {job.id} ({job.kind}): {exc}; set aside, recomputing")
                ctx.progress(0.0, f"damaged {exc.kind} file set aside; recomputing")
                continue
            if set_aside:
                message += f" (recomputed after setting aside damaged {', '.join(set_aside)})"
            return message

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(f"[worker {self.name}] {text}", flush=True)

    def run_forever(self, idle_sleep: float = 0.5) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        shown = make_url(self.settings.db_url).render_as_string(hide_password=True)
        print(f"[worker {self.name}] ready on {self.device}, database {shown}", flush=True)
        while not self._stopping:
            if not self.run_once():
                time.sleep(idle_sleep)
        print(f"[worker {self.name}] stopped", flush=True)


def _env_flag(variable: str, default: bool) -> bool:
    value = (os.environ.get(variable) or "").strip().lower()
    return default if not value else value in ("1", "true", "yes", "on")


def job_runner(device: str):
    """The job runner app.simulation takes: a quiet worker on `device` for each simulated database."""
    def runner(settings: Settings, name: str):
        return Worker(settings, name=name, device=device, quiet=True).run_once

    return runner
