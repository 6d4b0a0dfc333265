"""The model worker: one long-lived process that owns the model and the device and runs jobs from the database."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
import traceback

from app.settings import Settings
from storage import jobs
from storage.db import Database

HEARTBEAT_SECONDS = 2.0


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _Heartbeat(threading.Thread):
    """Writes the job's liveness and latest progress every few seconds while the job runs."""

    def __init__(self, db: Database, job_id: int, worker: str) -> None:
        super().__init__(daemon=True)
        self.db, self.job_id, self.worker = db, job_id, worker
        self.progress: float | None = 0.0
        self.message: str | None = None
        self._stop_event = threading.Event()
        self.lost = False

    def report(self, progress: float, message: str) -> None:
        self.progress, self.message = progress, message

    def run(self) -> None:
        while not self._stop_event.wait(HEARTBEAT_SECONDS):
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
        self, settings: Settings | None = None, name: str | None = None, device: str | None = None, quiet: bool = False
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.db = Database(self.settings.db_url)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.device = device or pick_device()
        self._stopping = False
        self.quiet = quiet

    def stop(self, *_args) -> None:
        self._stopping = True

    def run_once(self) -> bool:
        """Claim and run one job; False when there was nothing to do."""
        from app.tasks import TaskContext, run_job  # torch is imported here, inside the worker only

        with self.db.write() as s:
            job = jobs.claim(s, self.name)
        if job is None:
            return False
        beat = _Heartbeat(self.db, job.id, self.name)
        beat.start()
        ctx = TaskContext(db=self.db, home=self.settings.home, device=self.device, progress=beat.report)
        try:
            message = run_job(job, ctx)
        except Exception as exc:
            beat.stop()
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            with self.db.write() as s:
                jobs.fail(s, job.id, detail)
            self._say(f"job {job.id} ({job.kind}) failed: {detail}")
            return True
        beat.stop()
        with self.db.write() as s:
            jobs.finish(s, job.id, message)
        self._say(f"job {job.id} ({job.kind}) done: {message}")
        return True

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(f"[worker {self.name}] {text}", flush=True)

    def run_forever(self, idle_sleep: float = 0.5) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        print(f"[worker {self.name}] ready on {self.device}, database {self.settings.db_url}", flush=True)
        while not self._stopping:
            if not self.run_once():
                time.sleep(idle_sleep)
        print(f"[worker {self.name}] stopped", flush=True)
