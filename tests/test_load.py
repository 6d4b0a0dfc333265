"""Many annotators at once, nothing lost: 8 annotator processes label one round through the workbench's verbs
(next_assignment / submit, a few skips and undos) on SQLite and on a real PostgreSQL server, and every hand-out, label,
skip and undo is checked against the database afterwards. Also on PostgreSQL: a first start from several processes
at once, tests/test_storage.py's tests that take `db` and tests/test_loop.py's whole-loop tests that take `settings`.

The harness (`run_annotators`, `check_run`) is shared with benchmarks/bench_annotators.py.
"""
from __future__ import annotations

import inspect as pyinspect
import multiprocessing as mp
import queue as queue_module
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from storage.db import Database, head_revision, sqlite_url
from storage.labels import current_labels
from storage.models import Annotation, Job, QueueEntry, Round
from tests.conftest import make_round
from tests.pg_server import pg_server, pg_url  # noqa: F401  (fixtures)

ANNOTATORS = 8
ITEMS = 320
LEASE_SECONDS = 600
SKIP_EVERY = 11  # every 11th task an annotator gets is skipped
UNDO_EVERY = 9  # every 9th task is labeled, undone, and labeled again (the undone item comes straight back)
BACKENDS = ["sqlite", "postgresql"]


# ----- one annotator process -------------------------------------------------------------------------------------
def annotate(url: str, home: str, project_id: int, name: str, lease_seconds: int, skip_every: int, undo_every: int,
             barrier, out) -> None:  # noqa: ANN001
    """Label through app.workbench.Workbench until the queue gives nothing more; report every event.

    events: ("hand", entry, item, wall time), ("label", entry, item, value), ("skip", entry, item),
    ("undo", retracted annotation id, its entry, its kind). latencies: seconds of each answer + next_assignment.
    """
    try:
        from app.settings import Settings
        from app.workbench import Workbench

        wb = Workbench(Settings(home=Path(home), db_url=url, lease_seconds=lease_seconds))
    except BaseException:
        barrier.abort()
        out.put({"name": name, "error": traceback.format_exc()})
        return
    events: list[tuple] = []
    latencies: list[float] = []
    try:
        barrier.wait(timeout=120)
        start = time.time()
        task = wb.next_assignment(project_id, name)
        n = 0
        while task is not None:
            events.append(("hand", task.entry_id, task.item_id, time.time()))
            n += 1
            t0 = time.perf_counter()
            if n % skip_every == 0:
                wb.skip(project_id, task.entry_id, name, seconds=0.1)
                events.append(("skip", task.entry_id, task.item_id))
            else:
                value = [task.item_id % 3]
                wb.submit(project_id, task.entry_id, name, value, seconds=0.1)
                events.append(("label", task.entry_id, task.item_id, value))
                if n % undo_every == 0:
                    undone = wb.undo(project_id, name)
                    events.append(("undo", undone.id, undone.queue_entry_id, undone.kind))
            task = wb.next_assignment(project_id, name)
            latencies.append(time.perf_counter() - t0)
        out.put({"name": name, "events": events, "latencies": latencies, "start": start, "end": time.time()})
    except BaseException:
        out.put({"name": name, "error": traceback.format_exc(), "events": events})
    finally:
        wb.db.dispose()


def _context():  # noqa: ANN202
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["app.workbench", "app.settings", "alembic.command", "alembic.config", __name__])
    return ctx


@dataclass
class LoadRun:
    annotators: int
    seconds: float  # from the moment all annotators were ready to the last one's end
    reports: list[dict] = field(default_factory=list)

    @property
    def labels(self) -> int:
        return sum(1 for r in self.reports for e in r["events"] if e[0] == "label")

    @property
    def answers(self) -> int:
        return sum(1 for r in self.reports for e in r["events"] if e[0] in ("label", "skip"))

    @property
    def labels_per_second(self) -> float:
        return self.labels / self.seconds

    @property
    def latencies(self) -> list[float]:
        return [x for r in self.reports for x in r["latencies"]]


def run_annotators(url: str, home: Path, project_id: int, annotators: int = ANNOTATORS, lease_seconds: int = LEASE_SECONDS,
                   skip_every: int = SKIP_EVERY, undo_every: int = UNDO_EVERY, timeout: float = 120) -> LoadRun:
    """Start `annotators` processes on the project's labeling round at the same moment; wait for all to finish.

    The processes are forked from multiprocessing's fork server, a clean process that imported app.workbench once
    (not from pytest, and without paying the imports eight times over on a small machine); each opens its own
    Workbench and database engine.
    """
    ctx = _context()
    barrier = ctx.Barrier(annotators + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=annotate, args=(url, str(home), project_id, f"ann{i}", lease_seconds, skip_every, undo_every,
                                           barrier, out), daemon=True)
        for i in range(annotators)
    ]
    for p in procs:
        p.start()
    reports: list[dict] = []
    try:
        try:
            barrier.wait(timeout=timeout)
        except Exception:  # noqa: BLE001  a process failed to start: report why
            pass
        start = time.time()
        deadline = time.monotonic() + timeout
        while len(reports) < annotators:
            try:
                reports.append(out.get(timeout=max(1.0, deadline - time.monotonic())))
            except queue_module.Empty:
                codes = [p.exitcode for p in procs]
                raise AssertionError(f"{annotators - len(reports)} annotator processes gave no report within {timeout} s "
                                     f"(exit codes {codes})") from None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    errors = [f"{r['name']}:\n{r['error']}" for r in reports if "error" in r]
    if errors:
        raise AssertionError("annotator processes failed:\n" + "\n".join(errors))
    end = max(r["end"] for r in reports)
    return LoadRun(annotators, end - min(start, min(r["start"] for r in reports)), reports)


# ----- the checks ------------------------------------------------------------------------------------------------
def check_run(db: Database, project_id: int, round_id: int, run: LoadRun, queued: int,
              lease_seconds: int = LEASE_SECONDS) -> dict[str, int]:
    """Assert nothing was handed out twice within a lease and nothing was lost; returns the round's queue counts."""
    from storage import queue

    # 1. no item handed to two annotators within a lease
    hands: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for r in run.reports:
        for e in r["events"]:
            if e[0] == "hand":
                hands[e[2]].append((e[3], r["name"]))
    twice = []
    for item, given in hands.items():
        given.sort()
        for (t1, a1), (t2, a2) in zip(given, given[1:]):
            if a1 != a2 and t2 - t1 < lease_seconds:
                twice.append((item, a1, a2, round(t2 - t1, 3)))
    assert not twice, f"{len(twice)} items handed to two annotators within a lease: {twice[:10]}"

    # what the processes were told, replayed in each one's order
    expected_rows: Counter = Counter()
    expected_live: dict[int, list[int]] = {}
    last_answer: dict[int, str] = {}
    undone_ids: list[int] = []
    for r in run.reports:
        answered: list[tuple] = []
        events = r["events"]
        for i, e in enumerate(events):
            if e[0] in ("label", "skip"):
                expected_rows[(e[0], e[1], r["name"], tuple(e[3]) if e[0] == "label" else None)] += 1
                last_answer[e[1]] = e[0]
                answered.append(e)
                if e[0] == "label":
                    expected_live[e[2]] = e[3]
            elif e[0] == "undo":
                prev = answered.pop()
                assert (e[2], e[3]) == (prev[1], prev[0]), f"{r['name']}'s undo retracted {e[2:]} instead of its last answer {prev[:2]}"
                undone_ids.append(e[1])
                expected_live.pop(prev[2], None)
                following = events[i + 1] if i + 1 < len(events) else None
                if following is not None:  # the undone item comes straight back to the same annotator
                    assert following[0] == "hand" and following[1] == e[2], f"{r['name']} got {following} after undoing entry {e[2]}"

    with db.read() as s:
        rows = list(s.scalars(select(Annotation).where(Annotation.project_id == project_id)))
        entries = {e.id: e for e in s.scalars(select(QueueEntry).where(QueueEntry.round_id == round_id))}
        live = {item: lab.value for item, lab in current_labels(s, project_id).items()}
        counts = queue.round_counts(s, round_id)
        round_state = s.get(Round, round_id).state
        train_jobs = s.scalar(select(func.count()).select_from(Job).where(Job.round_id == round_id, Job.kind == "train"))

    # 2. every label and skip that returned OK is a row, with its annotator and value; nothing else was written
    stored = Counter(
        (a.kind, a.queue_entry_id, a.annotator, tuple(a.value) if a.kind == "label" else None)
        for a in rows if a.kind in ("label", "skip")
    )
    assert stored == expected_rows, f"annotation rows differ: missing {expected_rows - stored}, extra {stored - expected_rows}"
    retractions = sorted(a.replaces_id for a in rows if a.kind == "retract")
    assert retractions == sorted(undone_ids), "every undo is one retraction row of the annotation it undid"
    assert sum(1 for a in rows if a.kind == "label") == run.labels

    # 3. the current labels are exactly the labels given and not undone
    assert live == expected_live, f"{len(set(expected_live) - set(live))} labels lost, {len(set(live) - set(expected_live))} unexpected"

    # 4. every queued item accounted for: labeled + skipped + open = queued, entry by entry
    assert counts["dropped"] == 0
    assert counts["labeled"] + counts["skipped"] + counts["pending"] + counts["claimed"] == queued == len(entries)
    wrong = [(eid, e.state, last_answer.get(eid)) for eid, e in entries.items()
             if e.state in ("labeled", "skipped") and last_answer.get(eid) != ("label" if e.state == "labeled" else "skip")
             or e.state in queue.OPEN_STATES and eid in last_answer]
    assert not wrong, f"queue states that do not match the answers given: {wrong[:10]}"
    assert counts["labeled"] == sum(1 for k in last_answer.values() if k == "label")
    assert counts["skipped"] == sum(1 for k in last_answer.values() if k == "skip")

    # 5. every annotator ran until the queue was empty: the round went to training, exactly once
    assert counts["pending"] + counts["claimed"] == 0, f"open entries left: {counts}"
    assert round_state == "training" and train_jobs == 1, f"round {round_state} with {train_jobs} train jobs"
    return counts


# ----- tests -----------------------------------------------------------------------------------------------------
@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "load.sqlite")
    return request.getfixturevalue("pg_url")


def test_eight_annotator_processes_lose_nothing_and_never_share_an_item(backend_url: str, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    db = Database(backend_url)
    project_id, round_id = make_round(db, ITEMS)
    t0 = time.monotonic()
    run = run_annotators(backend_url, tmp_path, project_id)
    counts = check_run(db, project_id, round_id, run, queued=ITEMS)
    elapsed = time.monotonic() - t0
    db.dispose()
    lat = sorted(run.latencies)
    with capsys.disabled():
        print(f"\n[load {db.dialect}] {ANNOTATORS} annotator processes: {run.labels} labels, {counts['skipped']} skips, "
              f"{sum(1 for r in run.reports for e in r['events'] if e[0] == 'undo')} undos in {run.seconds:.2f} s = "
              f"{run.labels_per_second:.0f} labels/s; submit+next p50 {1000 * lat[len(lat) // 2]:.1f} ms, "
              f"p95 {1000 * lat[int(len(lat) * 0.95)]:.1f} ms")
    assert elapsed < 60, f"the {db.dialect} load run took {elapsed:.0f} s"


def _start_database(url: str, barrier, out) -> None:  # noqa: ANN001
    try:
        barrier.wait(timeout=120)
        Database(url).dispose()
        out.put("ok")
    except BaseException:
        out.put(traceback.format_exc())


def test_several_processes_starting_on_an_empty_database_migrate_it_once(backend_url: str) -> None:
    ctx = _context()
    barrier = ctx.Barrier(4)
    out = ctx.Queue()
    procs = [ctx.Process(target=_start_database, args=(backend_url, barrier, out), daemon=True) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    assert results == ["ok"] * 4, "\n".join(r for r in results if r != "ok")
    db = Database(backend_url, migrate=False)
    with db.read() as s:
        assert s.connection().exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [head_revision()]
    assert {"projects", "items", "annotations", "rounds", "queue_entries", "jobs"} <= set(inspect(db.engine).get_table_names())
    db.dispose()


# ----- the storage suite on PostgreSQL ---------------------------------------------------------------------------
def _storage_tests_taking_db() -> list:
    import tests.test_storage as suite

    return [
        pytest.param(fn, id=name)
        for name, fn in sorted(vars(suite).items())
        if name.startswith("test_") and callable(fn) and "db" in pyinspect.signature(fn).parameters
    ]


@pytest.mark.parametrize("storage_test", _storage_tests_taking_db())
def test_storage_suite_on_postgresql(storage_test, pg_url: str, tmp_path: Path) -> None:  # noqa: ANN001
    """tests/test_storage.py's tests that take the `db` fixture, run on a fresh PostgreSQL database each."""
    db = Database(pg_url)
    try:
        kwargs = {"db": db}
        if "tmp_path" in pyinspect.signature(storage_test).parameters:
            kwargs["tmp_path"] = tmp_path
        storage_test(**kwargs)
    finally:
        db.dispose()


def _loop_tests_taking_settings() -> list:
    import tests.test_loop as suite

    return [
        pytest.param(fn, id=name)
        for name, fn in sorted(vars(suite).items())
        if name.startswith("test_") and callable(fn) and "settings" in pyinspect.signature(fn).parameters
        and set(pyinspect.signature(fn).parameters) <= {"settings", "tmp_path"}
    ]


@pytest.mark.parametrize("loop_test", _loop_tests_taking_settings())
def test_loop_on_postgresql(loop_test, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """tests/test_loop.py's whole-loop tests (verbs, worker jobs, a real worker process) with WORKBENCH_DB_URL
    set to a fresh PostgreSQL database."""
    from app.settings import Settings

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_DB_URL", pg_url)
    kwargs = {"settings": Settings.from_env()}
    if "tmp_path" in pyinspect.signature(loop_test).parameters:
        kwargs["tmp_path"] = tmp_path
    loop_test(**kwargs)


def test_postgresql_sessions_are_read_committed_and_migrated(pg_url: str) -> None:
    db = Database(pg_url)
    assert db.dialect == "postgresql"
    tables = set(inspect(db.engine).get_table_names())
    assert {"projects", "items", "annotations", "rounds", "queue_entries", "jobs", "strategy_states", "artifacts", "alembic_version"} <= tables
    with db.write() as s:
        assert s.connection().exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
        assert s.connection().exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
    db.dispose()
    Database(pg_url).dispose()  # applying again is a no-op
    bare = pg_url.replace("postgresql+psycopg://", "postgresql://")
    db = Database(bare, migrate=False)  # a driver-less URL uses psycopg 3, the installed driver
    assert db.engine.dialect.driver == "psycopg"
    db.dispose()
