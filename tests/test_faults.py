"""Faults: nothing lost. Real processes killed with SIGKILL, real files damaged, a real full disk; loopback only.

| fault | what happened |
|---|---|
| worker kill -9 while it embeds the pool (seen in the database at 256 of 600 images: the 301st is a named pipe nobody writes, like a read stalled on a network share) | the job stays 'running' with a heartbeat that goes stale, nothing is registered; a restarted worker claims it only once the heartbeat is WORKBENCH_STALE_SECONDS old (attempt 2) and embeds from the start; exactly one features file is registered and it passes its sha256 check |
| worker kill -9 while it trains a round's head (seen at epoch n of 1500) | the round stays 'training', nothing is registered; a second worker, started while the first trained, takes the job only once its heartbeat is stale and retrains (attempt 2), the round is done with the labels it had, round 1 opens once (one select job), one head and one predictions file |
| a process killed between writing a file and renaming it into place | the registered file is untouched and still loads; the leftover `.tmp` is never registered, so never read |
| features file truncated on disk | reading it raises DamagedFile naming it; the next job that needs it sets it aside (kept as kind 'damaged', with the reason) and recomputes in the same run: the job succeeds once, it does not fail three times |
| predictions file corrupted (same size, bytes flipped) | model outputs are not silently replaced: the select job fails once with DamagedFile naming the file; labels are kept; Retrain then Retry recovers and the round opens |
| web server kill -9 while annotators label (the `python -m app start` process group: launcher, worker, Streamlit, and bob's labeling session, which runs in that group; alice labels from another process) | every label whose submit returned is in the database; the dead session's claim is not handed out during its lease, then returns to the queue; after a restart on the same port labeling continues, the round trains and the next round opens once |
| the launcher alone kill -9 | its worker and web server stop by themselves (PR_SET_PDEATHSIG), so nothing is left holding the port |
| disk full under the project's models folder (a 64 KiB tmpfs; a file in the folder's place where mounting is not permitted) | the train job fails once with an OSError naming the file that could not be written; no head or predictions row is registered and the head file already written is removed with the rolled-back transaction; the labels are kept; once space is back, Retry succeeds and round 1 opens |
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from app import job_kinds
from app.job_kinds import JobKind
from app.jobs.context import JobContext
from app.settings import Settings
from app.workbench import DEMO_PROJECT, ProjectConfig, Workbench
from app.worker import Worker
from storage.demo import write_demo
from storage.files import DamagedFile, latest_artifact, load_matrix, load_tensors, project_dir
from storage.labels import current_labels
from storage.models import Annotation, Artifact, Item, Job, QueueEntry, utcnow
from tests.test_browser import _free_port, _http_ok

ROOT = Path(__file__).resolve().parent.parent
STALE_SECONDS = 3
TRAIN_EPOCHS = 1500  # an MLP head trained this long takes seconds on a CPU: long enough to be seen and killed


# ----- helpers ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo digits written once for the module (a folder per class), plus `subset.csv` with 600 of them."""
    root = write_demo(tmp_path_factory.mktemp("digits") / "digits")
    paths = sorted(root.rglob("*.png"))[::2][:600]
    with open(root / "subset.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows([p.relative_to(root).as_posix(), p.parent.name] for p in paths)
    return root


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{tmp_path / 'home' / 'wb.sqlite'}")
    monkeypatch.setenv("WORKBENCH_STALE_SECONDS", str(STALE_SECONDS))
    return Settings.from_env()


def _env(settings: Settings, **extra: str) -> dict:
    return {**os.environ, "WORKBENCH_HOME": str(settings.home), "WORKBENCH_DB_URL": settings.db_url,
            "WORKBENCH_STALE_SECONDS": str(settings.stale_seconds), **extra}


def _wait(predicate, timeout: float, what: str, every: float = 0.1, state=None):
    """Poll `predicate` until it returns something true; on timeout, say what `state()` shows."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"; now: {state()}" if state else ""))


def _job_states(wb: Workbench, pid: int) -> list[tuple]:
    with wb.db.read() as s:
        return [(j.id, j.kind, j.state, j.attempts, round(j.progress, 2), j.message, j.error)
                for j in s.scalars(select(Job).where(Job.project_id == pid).order_by(Job.id))]


def _start_worker(settings: Settings, log: Path) -> subprocess.Popen:
    """`python -m app worker` in its own process group (so kill -9 takes anything it started with it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "app", "worker", "--device", "cpu"], cwd=ROOT, env=_env(settings),
        stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def _kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(entry.name))
    return alive


def _jobs(wb: Workbench, pid: int, kind: str, round_id: int | None = None) -> list[Job]:
    with wb.db.read() as s:
        query = select(Job).where(Job.project_id == pid, Job.kind == kind).order_by(Job.id)
        if round_id is not None:
            query = query.where(Job.round_id == round_id)
        return list(s.scalars(query))


def _artifacts(wb: Workbench, pid: int, kind: str) -> list[Artifact]:
    with wb.db.read() as s:
        return list(s.scalars(select(Artifact).where(Artifact.project_id == pid, Artifact.kind == kind).order_by(Artifact.id)))


def _gold(wb: Workbench, pid: int) -> dict[int, int]:
    with wb.db.read() as s:
        return {i.id: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == pid))}


def _label_round(wb: Workbench, pid: int, gold: dict[int, int], annotator: str = "ann") -> int:
    n = 0
    while (task := wb.next_assignment(pid, annotator)) is not None:
        wb.submit(pid, task.entry_id, annotator, [gold[task.item_id]])
        n += 1
    return n


def _drain(worker: Worker) -> None:
    while worker.run_once():
        pass


def _round_states(wb: Workbench, pid: int) -> list[str]:
    return [r.state for r in wb.rounds(pid)]


def _only_registered_files(wb: Workbench, pid: int, folder: Path) -> None:
    """Every file in `folder` is registered (sha256 checked on load); a `.tmp` never is."""
    with wb.db.read() as s:
        rows = list(s.scalars(select(Artifact).where(Artifact.project_id == pid)))
    registered = {Path(a.path) for a in rows} | {Path(a.meta["ids_path"]) for a in rows if "ids_path" in a.meta}
    for path in folder.iterdir():
        assert path in registered or path.name.endswith(".tmp"), f"{path} is on disk but not registered"
        assert not (path.name.endswith(".tmp") and path in registered)
    for a in rows:
        if Path(a.path).parent == folder and a.kind in ("features", "predictions"):
            load_matrix(a)
        elif Path(a.path).parent == folder and a.kind == "head":
            load_tensors(a)


# ----- 1. the model worker killed -------------------------------------------------------------------------------
def test_worker_killed_while_embedding_the_job_is_claimed_again_and_embeds_once(settings: Settings, digits: Path, tmp_path: Path) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="stopped embed", round_size=10, eval_size=10), digits / "subset.csv")
    first = _start_worker(settings, tmp_path / "worker.log")
    try:
        # Frozen (SIGSTOP) the moment it runs the embed job: its first attempt is then still loading the backbone
        # or embedding (the worker imports torch for it), and stops heartbeating as a dead worker would.
        seen = _wait(lambda: (j := _jobs(wb, pid, "embed")[0]).state == "running" and j, 120,
                     "the embed job to be claimed", state=lambda: _job_states(wb, pid), every=0.02)
        os.kill(first.pid, signal.SIGSTOP)
    finally:
        _kill9(first)
    killed_at = time.time()
    job = _jobs(wb, pid, "embed")[0]
    assert job.state == "running" and job.attempts == 1 and job.worker.endswith(f":{first.pid}")
    assert _artifacts(wb, pid, "features") == []  # nothing half-done was registered
    second = _start_worker(settings, tmp_path / "worker.log")
    try:
        job = _wait(lambda: (j := _jobs(wb, pid, "embed")[0]).state in ("done", "failed") and j, 120,
                    "the embed job to finish", state=lambda: _job_states(wb, pid))
    finally:
        _stop(second)
    assert job.state == "done" and job.attempts == 2 and job.worker.endswith(f":{second.pid}"), job.error
    assert (job.started_at - seen.heartbeat).total_seconds() >= STALE_SECONDS - 0.5  # taken over only once stale
    assert time.time() - killed_at < 120
    (features,) = _artifacts(wb, pid, "features")
    matrix, ids = load_matrix(features)
    assert matrix.shape == (600, 256) and len(ids) == 600
    _only_registered_files(wb, pid, project_dir(settings.home, pid) / "features")
    assert _round_states(wb, pid) == ["labeling"]
    assert "claimed again, attempt 2" in (tmp_path / "worker.log").read_text()


def test_worker_killed_while_training_the_round_trains_once_and_the_next_round_opens_once(settings: Settings, digits: Path, tmp_path: Path) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="slow train", head={"kind": "mlp", "solver": "adam", "epochs": TRAIN_EPOCHS}, round_size=10,
                                          eval_size=10, pick_ahead=0), digits / "subset.csv")
    # counts per round as without pick-ahead (test_round_boundary.py)
    _drain(Worker(settings, device="cpu", quiet=True))  # round 0 selected, the pool embedded
    assert _label_round(wb, pid, _gold(wb, pid)) == 20
    assert _round_states(wb, pid) == ["training"]
    first = _start_worker(settings, tmp_path / "worker.log")
    try:

        def training():
            jobs = _jobs(wb, pid, "train")
            return jobs and jobs[0].state == "running" and jobs[0].message.startswith("epoch") and 0.1 < jobs[0].progress < 0.7

        _wait(training, 120, "the train job to be seen in progress", state=lambda: _job_states(wb, pid))
        second = _start_worker(settings, tmp_path / "worker.log")  # a restarted (or standby) worker
    finally:
        _kill9(first)
    assert _round_states(wb, pid) == ["training"] and _artifacts(wb, pid, "head") == []
    try:
        _wait(lambda: _round_states(wb, pid) == ["done", "labeling"], 120, "training and round 1",
              state=lambda: _job_states(wb, pid))
        time.sleep(1.0)  # a second opening, if there were one, would show up now
    finally:
        _stop(second)
    (train,) = _jobs(wb, pid, "train")
    assert train.state == "done" and train.attempts == 2 and train.worker.endswith(f":{second.pid}")
    rounds = wb.rounds(pid)
    assert [r.state for r in rounds] == ["done", "labeling"]
    assert len(_jobs(wb, pid, "select", rounds[1].id)) == 1
    assert rounds[0].metrics["labels"] == 10 and len(wb.labels(pid)) == 20
    heads, predictions = _artifacts(wb, pid, "head"), _artifacts(wb, pid, "predictions")
    assert len(heads) == 1 and len(predictions) == 1 and heads[0].round_id == rounds[0].id
    _only_registered_files(wb, pid, project_dir(settings.home, pid) / "models")


# ----- a job run again, or taken over ------------------------------------------------------------------------
def _queue_sizes(wb: Workbench, pid: int) -> list[int]:
    """Queue entries per round, in round order."""
    rounds = wb.rounds(pid)
    with wb.db.read() as s:
        return [s.scalar(select(func.count()).select_from(QueueEntry).where(QueueEntry.round_id == r.id)) for r in rounds]


def test_every_handler_run_again_from_the_start_writes_nothing_twice(settings: Settings, digits: Path) -> None:
    """The job kinds' contract: a worker may die after a handler committed its result and before the job was
    marked done; the next worker runs the handler again from the start, and it must add nothing."""
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="rerun", round_size=10, eval_size=10), digits / "subset.csv")
    worker = Worker(settings, device="cpu", quiet=True)
    ctx = JobContext(db=wb.db, home=settings.home, device="cpu", progress=lambda fraction, message: None)

    def again(job: Job) -> str:
        return job_kinds.handler(job.kind)(job, ctx)

    _drain(worker)  # embed, select round 0
    (embed,) = _jobs(wb, pid, "embed")
    (select_0,) = _jobs(wb, pid, "select")
    assert again(embed).endswith("256 features each")
    assert again(select_0) == "round 0 is labeling; nothing to select"
    assert len(_artifacts(wb, pid, "features")) == 1 and _queue_sizes(wb, pid) == [20]

    _label_round(wb, pid, _gold(wb, pid))
    _drain(worker)  # train round 0, select round 1
    (train,) = _jobs(wb, pid, "train")
    assert "already trained" in again(train)
    assert again(_jobs(wb, pid, "select")[-1]) == "round 1 is labeling; nothing to select"
    assert _round_states(wb, pid) == ["done", "labeling"] and _queue_sizes(wb, pid) == [20, 10]
    assert len(_artifacts(wb, pid, "head")) == 1 and len(_jobs(wb, pid, "select")) == 2

    wb.retrain(pid)  # on demand: no round to move on, its predictions mark it done
    _drain(worker)
    assert "already trained" in again(_jobs(wb, pid, "train")[-1])
    assert len(_artifacts(wb, pid, "head")) == 2 and len(_artifacts(wb, pid, "predictions")) == 2

    wb.start_simulation(pid, ["random"], [0], 5, 1)
    _drain(worker)
    (simulate,) = _jobs(wb, pid, "simulate")
    assert "already stored" in again(simulate)
    assert len(_artifacts(wb, pid, "simulation")) == 1


_reports: list[float] = []


def _report_for_a_while(job: Job, ctx: JobContext) -> str:
    """A job kind for the test below: reports progress for up to 60 s."""
    deadline = time.time() + 60
    while time.time() < deadline:
        ctx.progress(0.5, "working")
        _reports.append(time.time())
        time.sleep(0.02)
    return "finished"


def test_a_worker_whose_job_was_taken_over_stops_it_without_a_result(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(job_kinds.JOB_KINDS, "report", JobKind(f"{__name__}:_report_for_a_while", 0, False, "test"))
    wb = Workbench(settings)
    with wb.db.write() as s:
        job_id = job_kinds.enqueue(s, "report", None).id
    worker = Worker(settings, name="slow-worker", device="cpu")
    run = threading.Thread(target=worker.run_once)
    run.start()
    _wait(lambda: len(_reports) > 5, 30, "the job to report progress")
    with wb.db.write() as s:  # the job is taken over, as when this worker's heartbeats had gone stale
        s.execute(update(Job).where(Job.id == job_id).values(worker="other-worker", heartbeat=utcnow(), attempts=2))
    taken_over_at = time.time()
    run.join(timeout=30)
    assert not run.is_alive()
    assert _reports[-1] < taken_over_at + 3 * settings.stale_seconds  # stopped at a report soon after a beat
    with wb.db.read() as s:
        job = s.get(Job, job_id)
    assert (job.state, job.worker, job.attempts, job.finished_at) == ("running", "other-worker", 2, None)
    assert job.message != "finished"
    assert f"job {job_id} (report) stopped: another worker had taken it over" in capsys.readouterr().out


# ----- damaged files ----------------------------------------------------------------------------------------------
_HANG_BEFORE_RENAME = """
import os, signal, sys
from pathlib import Path
from storage import files
real_fsync = os.fsync
def fsync_then_hang(fd):
    real_fsync(fd)
    Path(sys.argv[2]).write_text("written, not renamed")
    signal.pause()
os.fsync = fsync_then_hang
files.atomic_write_bytes(Path(sys.argv[1]), os.urandom(1 << 20))
"""


def test_a_damaged_features_file_is_refused_then_recomputed_not_failed(settings: Settings, digits: Path, tmp_path: Path) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="damaged", round_size=10, eval_size=10, pick_ahead=0), digits)
    # counts per round as without pick-ahead (test_round_boundary.py)
    worker = Worker(settings, device="cpu", quiet=True)
    _drain(worker)
    (features,) = _artifacts(wb, pid, "features")
    path = Path(features.path)
    good = path.read_bytes()

    # A writer killed after writing but before renaming: the registered file is untouched, the .tmp never read.
    marker = tmp_path / "written"
    writer = subprocess.Popen([sys.executable, "-c", _HANG_BEFORE_RENAME, str(path), str(marker)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait(marker.exists, 60, "the writer to have written its temporary file")
    finally:
        writer.kill()
        writer.wait(timeout=10)
    assert path.read_bytes() == good and load_matrix(features)[0].shape == (1797, 256)
    assert len(list(path.parent.glob(f".{path.name}.*.tmp"))) == 1
    _only_registered_files(wb, pid, path.parent)

    path.write_bytes(good[: len(good) // 2])  # truncated, as by a crash or a full disk outside the workbench
    with pytest.raises(DamagedFile, match=re.escape(str(path))):
        load_matrix(features)
    assert _label_round(wb, pid, _gold(wb, pid)) == 20
    _drain(worker)
    (train,) = _jobs(wb, pid, "train")
    assert train.state == "done" and train.attempts == 1, train.error
    assert "recomputed after setting aside damaged" in train.message and str(path) in train.message
    assert _round_states(wb, pid) == ["done", "labeling"]
    (set_aside,) = _artifacts(wb, pid, "damaged")
    assert set_aside.id == features.id and set_aside.meta["former_kind"] == "features"
    assert "checksum" in set_aside.meta["damaged"]
    (fresh,) = _artifacts(wb, pid, "features")
    assert load_matrix(fresh)[0].shape == (1797, 256)
    with wb.db.read() as s:
        assert latest_artifact(s, pid, "features").id == fresh.id


def test_a_damaged_predictions_file_fails_the_job_once_naming_it_and_retrain_recovers(settings: Settings, digits: Path) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="damaged model", round_size=10, eval_size=10, pick_ahead=0), digits)
    # counts per round as without pick-ahead (test_round_boundary.py)
    worker = Worker(settings, device="cpu", quiet=True)
    gold = _gold(wb, pid)
    _drain(worker)
    _label_round(wb, pid, gold)
    assert worker.run_once()  # the train job: round 0 done, round 1's select job queued
    assert _round_states(wb, pid) == ["done", "selecting"]
    (predictions,) = _artifacts(wb, pid, "predictions")
    path = Path(predictions.path)
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(255 - b for b in data[-64:])  # same size, different bytes
    path.write_bytes(bytes(data))
    _drain(worker)
    (select_job,) = _jobs(wb, pid, "select", wb.rounds(pid)[1].id)
    assert select_job.state == "failed" and select_job.attempts == 1
    assert "DamagedFile" in select_job.error and str(path) in select_job.error
    assert [j.id for j in wb.failed_jobs(pid)] == [select_job.id]
    assert len(wb.labels(pid)) == 20  # labels are never touched by a model fault
    wb.retrain(pid)
    _drain(worker)
    wb.retry_job(select_job.id)
    _drain(worker)
    assert _round_states(wb, pid) == ["done", "labeling"]
    task = wb.next_assignment(pid, "ann")
    assert task is not None and task.guess is not None


# ----- 2. the web server killed -------------------------------------------------------------------------------------
_ANNOTATOR = """
import sys, time
from pathlib import Path
from sqlalchemy import select
from app.workbench import DEMO_PROJECT, Workbench
from storage.models import Item
wb = Workbench()
pid = wb.project_id(DEMO_PROJECT)
with wb.db.read() as s:
    gold = {i.id: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == pid))}
log = open(sys.argv[1], "a")
while True:
    task = wb.next_assignment(pid, "bob")
    if task is None:
        time.sleep(0.2)
        continue
    time.sleep(0.4)  # looking at the image, holding the claim
    wb.submit(pid, task.entry_id, "bob", [gold[task.item_id]])
    print(task.item_id, file=log, flush=True)  # written only once the label is committed
"""


def test_web_server_killed_while_annotators_label_loses_no_label_and_labeling_continues(tmp_path: Path) -> None:
    home = tmp_path / "home"
    lease = 8
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'wb.sqlite'}", lease_seconds=lease,
                        stale_seconds=STALE_SECONDS)
    env = _env(settings, WORKBENCH_LEASE_SECONDS=str(lease), PYTHONPATH=str(ROOT))
    port = _free_port()
    log = open(tmp_path / "server.log", "a")

    def start_server() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "app", "start", "--port", str(port), "--workers", "1"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        _wait(lambda: _http_ok(f"http://127.0.0.1:{port}/_stcore/health") or proc.poll() is not None, 120,
              "the Streamlit server", every=0.3)
        assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        return proc

    server = start_server()
    try:
        wb = Workbench(settings)
        pid = wb.project_id(DEMO_PROJECT)
        gold = _gold(wb, pid)
        _wait(lambda: _round_states(wb, pid) == ["labeling"], 120, "round 0", every=0.3)
        # bob's labeling session runs in the server's process group: it dies with the server
        bob_log = tmp_path / "bob.log"
        bob_log.touch()
        bob = subprocess.Popen([sys.executable, "-c", _ANNOTATOR, str(bob_log)], cwd=ROOT, env=env,
                               process_group=server.pid)
        alice_done = 0
        for _ in range(3):  # alice labels from her own session meanwhile
            task = wb.next_assignment(pid, "alice")
            wb.submit(pid, task.entry_id, "alice", [gold[task.item_id]])
            alice_done += 1

        def bob_holds_after_labels():
            if len(bob_log.read_text().split()) < 4:
                return None
            with wb.db.read() as s:
                return s.scalars(select(QueueEntry).where(QueueEntry.claimed_by == "bob", QueueEntry.state == "claimed")).first()

        _wait(bob_holds_after_labels, 60, "bob to have labeled 4 items and hold a fifth")
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=20)
        bob.wait(timeout=20)
        _wait(lambda: not _group_alive(server.pid), 20, "every process of the server to be gone")

        logged = [int(x) for x in bob_log.read_text().split()]
        with wb.db.read() as s:
            labels = current_labels(s, pid)
            held = s.scalars(select(QueueEntry).where(QueueEntry.claimed_by == "bob", QueueEntry.state == "claimed")).first()
            bob_rows = s.scalar(select(func.count()).select_from(Annotation).where(Annotation.annotator == "bob"))
        assert logged and all(labels[i].annotator == "bob" and labels[i].value == [gold[i]] for i in logged)
        assert bob_rows in (len(logged), len(logged) + 1)  # at most one committed just before the kill, unlogged
        assert held is not None
        held_item, held_until = held.item_id, held.lease_expires
        task = wb.next_assignment(pid, "alice")  # during the lease the dead session's item is not handed out
        assert utcnow() < held_until and task.item_id != held_item
        wb.release(task.entry_id, "alice")

        server = start_server()  # same home, same port
        labeled_by_alice = set()

        def label_until_training():
            if wb.rounds(pid)[0].state != "labeling":
                return True
            task = wb.next_assignment(pid, "alice")
            if task is None:  # only the dead session's item is left, under its lease
                return False
            wb.submit(pid, task.entry_id, "alice", [gold[task.item_id]])
            labeled_by_alice.add(task.item_id)
            return False

        _wait(label_until_training, lease + 60, "the round to be labeled to the end", every=0.05)
        assert held_item in labeled_by_alice  # the claim came back after its lease
        _wait(lambda: _round_states(wb, pid) == ["done", "labeling"], 120, "training and round 1", every=0.3)
        rounds = wb.rounds(pid)
        assert len(_jobs(wb, pid, "select", rounds[1].id)) == 1
        labels = wb.labels(pid)
        round0 = wb.project(pid).eval_size + wb.project(pid).round_size  # the demo's eval set, then round 0
        assert len(labels) == round0 and all(labels[i] == [gold[i]] for i in logged)
        task = wb.next_assignment(pid, "alice")  # labeling continues in the new round
        wb.submit(pid, task.entry_id, "alice", [gold[task.item_id]])
        assert len(wb.labels(pid)) == round0 + 1

        # The launcher alone killed: its worker and web server stop by themselves, nothing holds the port.
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=20)
        _wait(lambda: not _group_alive(server.pid), 30, "the launcher's children to stop after it died", every=0.3)
        assert not _http_ok(f"http://127.0.0.1:{port}/_stcore/health")
    finally:
        if server.poll() is None or _group_alive(server.pid):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait(timeout=20)
        log.close()


# ----- 3. the disk full ---------------------------------------------------------------------------------------------
def _mount_tiny_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    return result.returncode == 0


def test_disk_full_fails_the_job_naming_the_file_keeps_labels_and_a_retry_succeeds(settings: Settings, digits: Path) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="full disk", round_size=10, eval_size=10, pick_ahead=0), digits)
    # counts per round as without pick-ahead (test_round_boundary.py)
    worker = Worker(settings, device="cpu", quiet=True)
    gold = _gold(wb, pid)
    _drain(worker)
    models = project_dir(settings.home, pid) / "models"
    models.mkdir()
    mounted = _mount_tiny_tmpfs(models)  # room for the head (~13 KiB), not for the predictions (~86 KiB)
    if not mounted:  # no permission to mount: a file where the folder should be is also a real write error
        models.rmdir()
        models.write_text("not a folder")
    try:
        assert _label_round(wb, pid, gold) == 20
        _drain(worker)
        (train,) = _jobs(wb, pid, "train")
        assert train.state == "failed" and train.attempts == 1
        assert str(models) in train.error and "retry the job" in train.error
        if mounted:
            assert "No space left on device" in train.error and "is full" in train.error
            assert list(models.iterdir()) == []  # the head written before the failure went with the rollback
        assert _artifacts(wb, pid, "head") == [] and _artifacts(wb, pid, "predictions") == []
        assert _round_states(wb, pid) == ["training"]
        with wb.db.read() as s:
            assert len(current_labels(s, pid)) == 20
            assert s.scalar(select(func.count()).select_from(Annotation).where(Annotation.project_id == pid)) == 20

        if mounted:  # space is back
            subprocess.run(["mount", "-o", "remount,size=16m", str(models)], check=True)
        else:
            models.unlink()
        wb.retry_job(train.id)
        _drain(worker)
        assert _round_states(wb, pid) == ["done", "labeling"]
        assert wb.rounds(pid)[0].metrics["labels"] == 10 and len(wb.labels(pid)) == 20
        (head,) = _artifacts(wb, pid, "head")
        load_tensors(head)
        _only_registered_files(wb, pid, models)
    finally:
        if mounted:
            subprocess.run(["umount", str(models)], check=False)
