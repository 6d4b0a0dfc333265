"""Database faults (issue 13, items 1, 3, 16): a held write lock, the file deleted under a running process, a
read-only file. Real SQLite files, the lock held by a real second process; nothing acknowledged may be lost.

| fault | what happens |
|---|---|
| another process holds BEGIN IMMEDIATE past the busy timeout | the worker's poll backs off and returns (no exception); a job whose handler ran during the lock keeps retrying its finish and is `done` after release; an answer batch is refused (nothing acknowledged, nothing written) and applies when resent |
| workbench.sqlite (and -wal/-shm) deleted, or the whole home | every write is refused before it commits: DatabaseReplaced naming the path; Workbench.submit raises it |
| read-only database (chmod 444, or a `mode=ro` URI) | DatabaseReadOnly naming the path, not `disk I/O error` with SQL |
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from app import job_kinds, labeling
from app.job_kinds import JobKind
from app.settings import Settings
from app.workbench import Workbench
from app.worker import Worker
from storage import jobs
from storage.db import Database, DatabaseReadOnly, DatabaseReplaced, is_busy, sqlite_url
from storage.models import Annotation, Job
from tests.conftest import make_round
from tests.pg_server import pg_server, pg_url  # noqa: F401  (fixtures)

BUSY_MS = 200
HOLD_SECONDS = 2.0  # ten times the busy timeout
HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.rollback()
print("released", flush=True)
"""


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the SQLite write lock for `seconds`; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def busy_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("WORKBENCH_BUSY_TIMEOUT_MS", str(BUSY_MS))
    return settings


LOCK_TAKEN = threading.Event()
HANDLER_RAN = threading.Event()


def _wait_for_the_lock(job, ctx) -> str:
    """A job whose work ends while another process holds the lock: its finish meets the lock."""
    HANDLER_RAN.set()
    assert LOCK_TAKEN.wait(10)
    return "finished under a held lock"


def _one_answer(wb: Workbench) -> tuple[int, int, dict]:
    """A project with a labeling round, and the batch a tab would send to label its first held item:
    (project id, item id, batch)."""
    pid, _ = make_round(wb.db, 4)
    data = labeling.surface_data(wb.db, pid, "ann", client_id="tab")
    entry, item = data["items"][0]["entry_id"], data["items"][0]["item_id"]
    batch = {"client_id": "tab", "held": [i["entry_id"] for i in data["items"]],
             "answers": [{"seq": 1, "entry_id": entry, "kind": "label", "value": [1], "seconds": 1.0,
                          "project_id": pid, "annotator": "ann"}]}
    return pid, item, batch


def _db_path(settings: Settings) -> Path:
    return Path(settings.db_url.removeprefix("sqlite:///"))


def test_a_held_write_lock_neither_kills_the_worker_nor_loses_a_job_or_an_answer(
        busy_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(job_kinds.JOB_KINDS, "wait_lock", JobKind(f"{__name__}:_wait_for_the_lock", 0, False, "test"))
    wb = Workbench(busy_settings)
    path = _db_path(busy_settings)
    pid, item, batch = _one_answer(wb)
    worker = Worker(busy_settings, name="w1", device="cpu", quiet=True)

    # the poll meets the lock: it backs off and says so, it does not raise
    holder = _hold_lock(path, 1.0)
    try:
        started = time.monotonic()
        assert worker.run_once() is False
        assert time.monotonic() - started < 5
    finally:
        holder.wait(10)

    with wb.db.write() as s:
        job_id = jobs.enqueue(s, "wait_lock", pid, priority=0).id
    LOCK_TAKEN.clear()
    HANDLER_RAN.clear()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("ran", worker.run_once()), daemon=True)
    thread.start()
    assert HANDLER_RAN.wait(10)
    holder = _hold_lock(path, HOLD_SECONDS)
    LOCK_TAKEN.set()
    try:
        # an answer batch while the lock is held: refused, nothing acknowledged, nothing written
        with pytest.raises(OperationalError) as refused:
            labeling.receive(wb.db, pid, "ann", batch)
        assert is_busy(refused.value)
        time.sleep(0.5)
        with wb.db.read() as s:
            assert s.get(Job, job_id).state == "running"  # its finish waits for the lock
    finally:
        holder.wait(10)
    thread.join(15)
    assert not thread.is_alive() and result["ran"] is True
    with wb.db.read() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.message) == ("done", "finished under a held lock")
        assert s.scalars(select(Annotation).where(Annotation.item_id == item)).all() == []
    assert labeling.surface_data(wb.db, pid, "ann", client_id="tab")["acked_seq"] == 0
    resent = labeling.receive(wb.db, pid, "ann", batch)  # the tab sends the same batch again
    assert resent["acked_seq"] == 1 and resent["outcomes"][0]["status"] == "applied"
    with wb.db.read() as s:
        assert len(s.scalars(select(Annotation).where(Annotation.item_id == item)).all()) == 1
    worker.db.dispose()
    wb.db.dispose()


PG_HOLDER = """
import sys, time
import psycopg
conn = psycopg.connect(sys.argv[1])
conn.execute("LOCK TABLE jobs, queue_entries, answer_receipts IN ACCESS EXCLUSIVE MODE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.rollback()
print("released", flush=True)
"""


def test_a_held_lock_on_postgresql_neither_kills_the_worker_nor_loses_an_answer(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same fault on PostgreSQL: another session holds the tables' locks past lock_timeout. The worker's poll
    backs off without raising; an answer batch is refused (is_busy), nothing acknowledged, and applies when resent."""
    monkeypatch.setenv("WORKBENCH_BUSY_TIMEOUT_MS", str(BUSY_MS))
    settings = Settings(home=tmp_path / "home", db_url=pg_url)
    wb = Workbench(settings)
    pid, item, batch = _one_answer(wb)
    worker = Worker(settings, name="w1", device="cpu", quiet=True)
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    holder = subprocess.Popen([sys.executable, "-c", PG_HOLDER, plain, str(HOLD_SECONDS)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        started = time.monotonic()
        assert worker.run_once() is False
        assert time.monotonic() - started < 5
        with pytest.raises(OperationalError) as refused:
            labeling.receive(wb.db, pid, "ann", batch)
        assert is_busy(refused.value)
    finally:
        holder.wait(15)
    with wb.db.read() as s:
        assert s.scalars(select(Annotation).where(Annotation.item_id == item)).all() == []
    resent = labeling.receive(wb.db, pid, "ann", batch)
    assert resent["acked_seq"] == 1 and resent["outcomes"][0]["status"] == "applied"
    with wb.db.read() as s:
        assert len(s.scalars(select(Annotation).where(Annotation.item_id == item)).all()) == 1
    worker.db.dispose()
    wb.db.dispose()


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_a_deleted_database_file_refuses_every_write_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    db = Database(sqlite_url(path))
    pid, _ = make_round(db, 2)
    _remove_db(path)
    with pytest.raises(DatabaseReplaced) as refused:
        with db.write() as s:
            s.execute(text("UPDATE projects SET name = 'renamed'"))
    message = str(refused.value)
    assert f"the database file {path.resolve()} was deleted or replaced while the workbench was running" in message
    assert "nothing was saved" in message and "restart the workbench" in message
    assert "SQL" not in message
    # a file put back in its place (a new inode) is not the one this process opened either
    Database(sqlite_url(path)).dispose()
    with pytest.raises(DatabaseReplaced):
        with db.write() as s:
            s.execute(text("SELECT 1"))
    db.dispose()


def test_a_label_submitted_after_the_home_was_removed_is_refused_not_acknowledged(settings: Settings) -> None:
    wb = Workbench(settings)
    pid, _ = make_round(wb.db, 2)
    assignment = wb.next_assignment(pid, "ann")
    shutil.rmtree(settings.home)  # rm -rf of the workbench home (or git clean -dX of the checkout)
    with pytest.raises(DatabaseReplaced) as refused:
        wb.submit(pid, assignment.entry_id, "ann", [0])
    assert str(_db_path(settings).resolve()) in str(refused.value)
    wb.db.dispose()


def test_a_read_only_database_is_said_to_be_read_only(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    Database(sqlite_url(path)).dispose()
    db = Database(f"sqlite:///file:{path}?mode=ro&uri=true", migrate=False)
    with pytest.raises(DatabaseReadOnly) as refused:
        with db.write() as s:
            s.execute(text("UPDATE projects SET name = 'x'"))
    assert f"the database file {path.resolve()} is read-only" in str(refused.value)
    assert "disk I/O" not in str(refused.value) and "SQL" not in str(refused.value)
    db.dispose()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes through chmod 444; the mode=ro test above covers the wording")
def test_a_chmod_read_only_file_and_folder_is_said_to_be_read_only(tmp_path: Path) -> None:
    folder = tmp_path / "home"
    folder.mkdir()
    path = folder / "db.sqlite"
    db = Database(sqlite_url(path))
    db.dispose()
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(DatabaseReadOnly) as refused:
            with Database(sqlite_url(path), migrate=False).write() as s:
                s.execute(text("UPDATE projects SET name = 'x'"))
        assert f"the database file {path.resolve()} is read-only" in str(refused.value)
    finally:
        folder.chmod(stat.S_IRWXU)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
