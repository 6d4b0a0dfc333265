"""Several annotators on the same items (project settings overlap, overlap_eval, overlap_k; storage.queue): an
overlap item's copies go to different annotators and never two to one (not through skip, undo, an expired lease,
two tabs or two processes of one annotator at once, nor claims ahead), and a round closes once every copy is
answered. On SQLite and on a real PostgreSQL server (tests/pg_server.py) wherever the queue is involved; the
8-annotator load run of tests/test_load.py with overlap copies.
"""
from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from app import cli, labeling
from app.project_admin import SettingsChange
from app.workbench import ProjectConfig, Workbench, WorkbenchError
from storage import answers, queue
from storage.db import _WRITE, Database, _alembic_config, make_engine, sqlite_url
from storage.labels import current_labels
from storage.models import Annotation, Item, Job, Project, QueueEntry, Round, utcnow
from tests.pg_server import pg_server, pg_url  # noqa: F401  (fixtures)
from tests.test_load import run_annotators


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "overlap.sqlite")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def odb(backend_url: str) -> Database:
    database = Database(backend_url)
    yield database
    database.dispose()


def overlap_round(db: Database, pool: int, evals: int = 0, overlap: float = 1.0, overlap_eval: bool = False,
                  k: int = 2, name: str = "p") -> tuple[int, int]:
    """A project with `pool` pool and `evals` evaluation items, all queued (copy 0) in one labeling round, and the
    copies its overlap settings call for (storage.queue.add_copies); returns (project id, round id)."""
    with db.write() as s:
        project = Project(name=name, classes=["a", "b", "c"], data_root="/nonexistent", backbone={"name": "pixels"},
                          head={"kind": "linear"}, training={}, strategy="random", strategy_params={},
                          overlap=overlap, overlap_eval=overlap_eval, overlap_k=k, pick_ahead=0)
        s.add(project)
        s.flush()
        s.execute(insert(Item), [{"project_id": project.id, "key": f"{i}.png", "content_hash": "x",
                                  "split": "eval" if i < evals else "pool"} for i in range(evals + pool)])
        round_ = Round(project_id=project.id, index=0, strategy="random", strategy_params={}, state="labeling")
        s.add(round_)
        s.flush()
        ids = s.scalars(select(Item.id).where(Item.project_id == project.id).order_by(Item.id)).all()
        s.execute(insert(QueueEntry), [{"round_id": round_.id, "item_id": item_id, "position": pos,
                                        "arm": "eval" if pos < evals else "random", "state": "pending"}
                                       for pos, item_id in enumerate(ids)])
        queue.add_copies(s, round_, project)
        return project.id, round_.id


def held(db: Database, round_id: int, annotator: str) -> list[tuple[int, int]]:
    """(item id, copy index) of every entry `annotator` holds or answered in the round."""
    with db.read() as s:
        return [tuple(r) for r in s.execute(
            select(QueueEntry.item_id, QueueEntry.copy_index).where(
                QueueEntry.round_id == round_id, QueueEntry.claimed_by == annotator,
                QueueEntry.state.in_(queue.HOLDING_STATES)))]


def no_item_twice(db: Database, round_id: int, annotators: list[str]) -> None:
    for name in annotators:
        items = Counter(item for item, _ in held(db, round_id, name))
        assert all(n == 1 for n in items.values()), f"{name} holds two copies of {[i for i, n in items.items() if n > 1]}"


def batch(client: str, *answered: tuple) -> dict:
    """A label surface batch: (seq, kind, entry id, value) answers."""
    return {"client_id": client, "held": [],
            "answers": [{"seq": seq, "kind": kind, "entry_id": entry, "value": value, "seconds": 1.0}
                        for seq, kind, entry, value in answered]}


# ----- the schema ------------------------------------------------------------------------------------------------------
def test_migration_0005_keeps_every_row_and_allows_copies(backend_url: str) -> None:
    """A database at 0004 with a labeled entry: after 0005 every row is there, the annotation still points at its
    entry, a second copy of an item may be queued and the same copy twice may not; down to 0004 and back works."""
    engine = make_engine(backend_url)
    cfg = _alembic_config()
    token = _WRITE.set(True)
    try:
        def migrate(where: str, down: bool = False) -> None:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                (command.downgrade if down else command.upgrade)(cfg, where)

        migrate("0004")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO projects (id, name, task, classes, data_root, backbone, head, training, strategy, "
                "strategy_params, round_size, eval_size, auto_next_round, pick_ahead, seed, created_at) VALUES (1, 'p', "
                "'single_label', '[\"a\", \"b\"]', '/x', '{}', '{}', '{}', 'random', '{}', 10, 0, true, 5, 0, "
                "'2026-01-01')"))
            conn.execute(text("INSERT INTO items (id, project_id, key, content_hash, split) VALUES "
                              "(1, 1, 'a.png', 'h', 'pool'), (2, 1, 'b.png', 'h', 'pool')"))
            conn.execute(text(
                "INSERT INTO rounds (id, project_id, \"index\", strategy, strategy_params, state, note, "
                "labels_at_start, started_at, picked_ahead, awaiting_selection) VALUES (1, 1, 0, 'random', '{}', "
                "'labeling', '', 0, '2026-01-01', 0, false)"))
            conn.execute(text("INSERT INTO queue_entries (id, round_id, item_id, position, arm, state, claimed_by) "
                              "VALUES (7, 1, 1, 0, 'random', 'labeled', 'ann'), (8, 1, 2, 1, 'random', 'pending', NULL)"))
            conn.execute(text("INSERT INTO annotations (id, project_id, item_id, annotator, kind, value, round_id, "
                              "queue_entry_id, created_at) VALUES (1, 1, 1, 'ann', 'label', '[0]', 1, 7, '2026-01-01')"))
        migrate("head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, queue_entry_id FROM annotations")).all() == [(1, 7)]
            assert sorted(conn.execute(text("SELECT id, item_id, copy_index, state FROM queue_entries")).all()) == [
                (7, 1, 0, "labeled"), (8, 2, 0, "pending")]
            assert conn.execute(text("SELECT overlap, overlap_eval, overlap_k FROM projects")).one() == (0, False, 2)
            uniques = inspect(conn).get_unique_constraints("queue_entries")
            assert [u["column_names"] for u in uniques] == [["round_id", "item_id", "copy_index"]]
        insert_copy = text("INSERT INTO queue_entries (round_id, item_id, position, arm, state, copy_index) "
                           "VALUES (1, 1, 0, 'random', 'pending', 1)")
        with engine.begin() as conn:
            conn.execute(insert_copy)
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert_copy)
        migrate("0004", down=True)
        migrate("head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, queue_entry_id FROM annotations")).all() == [(1, 7)]
            assert conn.execute(text("SELECT count(*) FROM queue_entries")).scalar() == 2  # the copy went with 0005
    finally:
        _WRITE.reset(token)
        engine.dispose()


# ----- which items overlap -----------------------------------------------------------------------------------------------
def test_a_share_of_the_pool_and_every_eval_item_get_their_copies(db: Database) -> None:
    pid, rid = overlap_round(db, pool=20, evals=4, overlap=0.1, overlap_eval=True, k=3)
    with db.read() as s:
        copies = Counter(s.scalars(select(QueueEntry.item_id).where(QueueEntry.round_id == rid)))
        split = dict(s.execute(select(Item.id, Item.split).where(Item.project_id == pid)).all())
        positions = {(e.item_id, e.copy_index): e.position for e in s.scalars(select(QueueEntry))}
    assert sorted(n for i, n in copies.items() if split[i] == "eval") == [3] * 4  # every eval item, 3 annotators
    assert sorted(n for i, n in copies.items() if split[i] == "pool") == [1] * 18 + [3] * 2  # 10% of 20 pool picks
    assert all(positions[(i, c)] == positions[(i, 0)] for i, c in positions)  # a copy sits where its item does
    with db.write() as s:
        round_, project = s.get(Round, rid), s.get(Project, pid)
        assert queue.add_copies(s, round_, project) == 0  # idempotent
        project.overlap = 0.25  # a round filled in steps: only the missing part of the share is drawn
        assert queue.add_copies(s, round_, project) == 2 * 3
        assert queue.add_copies(s, round_, project, pool=False) == 0


def test_no_overlap_queues_no_copies(db: Database) -> None:
    _, rid = overlap_round(db, pool=10, evals=2, overlap=0.0)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(QueueEntry).where(QueueEntry.copy_index > 0)) == 0


# ----- claims ----------------------------------------------------------------------------------------------------------
def test_an_overlap_item_goes_to_two_different_annotators(odb: Database) -> None:
    """A claims ahead more than the round has: one copy of each item, never two; B then gets the other copies."""
    pid, rid = overlap_round(odb, pool=6, overlap=0.5)
    with odb.write() as s:
        a = answers.claim_ahead(s, pid, "ann-a", k=100)
    assert len(a) == 6 and len({c.item_id for c in a}) == 6
    with odb.write() as s:
        b = answers.claim_ahead(s, pid, "ann-b", k=100)
    assert len(b) == 3 and {c.item_id for c in b} < {c.item_id for c in a}  # the three overlap items' copies
    with odb.write() as s:
        assert answers.claim_ahead(s, pid, "ann-c", k=100) == []
        assert queue.waiting_for_others(s, rid, "ann-a") == 0  # everything is held
    no_item_twice(odb, rid, ["ann-a", "ann-b"])


def test_never_twice_to_one_annotator_through_skip_undo_lease_expiry_and_two_tabs(odb: Database) -> None:
    """One overlap item, two copies, answered through the label surface's path (storage.answers)."""
    pid, rid = overlap_round(odb, pool=1, overlap=1.0)
    with odb.read() as s:
        first, second = s.scalars(select(QueueEntry.id).where(QueueEntry.round_id == rid)
                                  .order_by(QueueEntry.copy_index)).all()

    def claim(name: str, k: int = 5) -> list[int]:
        with odb.write() as s:
            return [c.entry_id for c in answers.claim_ahead(s, pid, name, k=k)]

    def apply(name: str, client: str, *answered: tuple) -> list[str]:
        with odb.write() as s:
            result = answers.apply_answers(s, pid, name, client, batch(client, *answered)["answers"])
        return [o.status for o in result.outcomes]

    # two tabs of A claim ahead: both are given copy 0, neither copy 1
    assert claim("A") == [first] and claim("A") == [first]
    # the lease runs out: A claims again and gets copy 0 back, never copy 1 besides it
    with odb.write() as s:
        s.execute(update(QueueEntry).where(QueueEntry.id == first).values(lease_expires=utcnow() - timedelta(seconds=5)))
    assert claim("A") == [first]
    # skip in tab 1; tab 2 labels the same entry (refused: answered); A cannot take copy 1 after the skip
    assert apply("A", "tab-1", (1, "skip", first, None)) == ["applied"]
    assert apply("A", "tab-2", (1, "label", first, [0])) == ["refused"]
    assert claim("A") == []
    with odb.read() as s:
        assert answers.can_claim(s, pid, "A") is False
        assert queue.waiting_for_others(s, rid, "A") == 1
    # the undo hands copy 0 back to A (never copy 1); A labels it
    assert apply("A", "tab-1", (2, "undo", first, None)) == ["applied"]
    assert claim("A") == [first]
    assert apply("A", "tab-1", (3, "label", first, [1])) == ["applied"]
    assert claim("A") == []
    # B takes copy 1; A's stale tab answering copy 1 is refused
    assert claim("B") == [second]
    assert apply("A", "tab-2", (2, "label", second, [1])) == ["refused"]
    assert apply("B", "tab-b", (1, "label", second, [1])) == ["applied"]
    no_item_twice(odb, rid, ["A", "B"])
    with odb.read() as s:
        live = list(s.scalars(select(Annotation).where(Annotation.kind == "label")))
        assert sorted((a.annotator, a.queue_entry_id) for a in live) == [("A", first), ("B", second)]
        assert current_labels(s, pid)[live[0].item_id].value == [1]  # two agreeing answers: the label
        assert s.get(Round, rid).state == "labeling"  # no after_answer here (app.rounds is tested below)


def test_an_expired_copy_taken_over_frees_the_other_copy_for_its_first_holder(odb: Database) -> None:
    """A's lease on copy 0 runs out and B takes copy 0 over: A has no copy any more and may take copy 1."""
    pid, rid = overlap_round(odb, pool=1, overlap=1.0)
    with odb.write() as s:
        first = queue.claim_next(s, rid, "A").entry_id
        s.execute(update(QueueEntry).where(QueueEntry.id == first).values(lease_expires=utcnow() - timedelta(seconds=5)))
    with odb.write() as s:
        assert queue.claim_next(s, rid, "B").entry_id == first  # the expired copy 0 (the first position)
    with odb.write() as s:
        second = queue.claim_next(s, rid, "A")
    assert second is not None and second.entry_id != first
    with odb.write() as s:
        assert queue.claim_next(s, rid, "C") is None
    no_item_twice(odb, rid, ["A", "B"])


def test_two_claims_of_one_annotator_at_once_never_take_two_copies(odb: Database) -> None:
    """Two tabs (here two threads, two sessions) of one annotator claim ahead at the same moment, many times: on
    PostgreSQL their transactions interleave, and each would take the copy the other's uncommitted claim skipped
    but for the advisory lock on the annotator (storage.queue._lock_annotator)."""
    for attempt in range(6):
        pid, rid = overlap_round(odb, pool=12, overlap=1.0, name=f"p{attempt}")
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def tab() -> None:
            try:
                barrier.wait(timeout=30)
                with odb.write() as s:
                    answers.claim_ahead(s, pid, "A", k=30)
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=tab) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert len(held(odb, rid, "A")) == 12
        no_item_twice(odb, rid, ["A"])


# ----- the round -------------------------------------------------------------------------------------------------------
def test_the_round_closes_only_when_every_copy_is_answered(odb: Database) -> None:
    """Through the label surface's receive (the round state machine after each answer): A answers every item once,
    the round stays open for the copies; B answers them and the round goes to training, with one train job."""
    pid, rid = overlap_round(odb, pool=4, evals=2, overlap=0.5, overlap_eval=True)
    seq = {"A": 0, "B": 0}

    def answer_all(name: str) -> int:
        """Answer what the surface holds for `name` (5 ahead) until it holds nothing; how many were answered."""
        done = 0
        while items := labeling.surface_data(odb, pid, name, client_id=f"tab-{name}")["items"]:
            for item in items:
                seq[name] += 1
                result = labeling.receive(odb, pid, name,
                                          batch(f"tab-{name}", (seq[name], "label", item["entry_id"], [0])))
                assert result["outcomes"][-1]["status"] == "applied", result
                done += 1
        return done

    assert answer_all("A") == 6
    with odb.read() as s:
        assert s.get(Round, rid).state == "labeling"
        assert queue.open_entries(s, rid) == 4  # 2 pool and 2 eval copies wait for another annotator
    assert answer_all("A") == 0
    assert "for other annotators" in labeling.surface_data(odb, pid, "A")["empty_reason"]
    assert answer_all("B") == 4
    with odb.read() as s:
        assert s.get(Round, rid).state == "training"
        assert s.scalar(select(func.count()).select_from(Job).where(Job.round_id == rid, Job.kind == "train")) == 1
        assert len(current_labels(s, pid)) == 6  # every answer agreed
    no_item_twice(odb, rid, ["A", "B"])


# ----- eight annotator processes ---------------------------------------------------------------------------------------
LOAD_ITEMS = 240
LOAD_OVERLAP = 0.25


def test_eight_annotator_processes_with_overlap_never_take_one_item_twice(backend_url: str, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """tests/test_load.py's run (8 processes, Workbench verbs, skips and undos) on a round where a quarter of the
    items have two copies: every copy answered once, no annotator handed two copies of one item, every answer a
    row, the round sent to training exactly once."""
    db = Database(backend_url)
    pid, rid = overlap_round(db, pool=LOAD_ITEMS, overlap=LOAD_OVERLAP)
    with db.read() as s:
        queued = s.scalar(select(func.count()).select_from(QueueEntry).where(QueueEntry.round_id == rid))
        item_of = dict(s.execute(select(QueueEntry.id, QueueEntry.item_id).where(QueueEntry.round_id == rid)).all())
    assert queued == LOAD_ITEMS + int(LOAD_ITEMS * LOAD_OVERLAP)
    run = run_annotators(backend_url, tmp_path, pid, timeout=240)
    answered: dict[int, list[str]] = defaultdict(list)  # entry -> annotators whose answer on it stands
    for r in run.reports:
        hands: dict[int, set[int]] = defaultdict(set)  # item -> entries this annotator was handed
        stack: list[tuple] = []
        for e in r["events"]:
            if e[0] == "hand":
                hands[e[2]].add(e[1])
            elif e[0] in ("label", "skip"):
                stack.append(e)
                answered[e[1]].append(r["name"])
            elif e[0] == "undo":
                answered[stack.pop()[1]].remove(r["name"])
        twice = {item: entries for item, entries in hands.items() if len(entries) > 1}
        assert not twice, f"{r['name']} was handed two copies of items {twice}"
    assert sorted(answered) == sorted(item_of) and all(len(names) == 1 for names in answered.values())
    for item in set(item_of.values()):  # the copies of an item: answered by as many different annotators
        names = [answered[entry][0] for entry, i in item_of.items() if i == item]
        assert len(names) == len(set(names)), (item, names)
    with db.read() as s:
        rows = Counter((a.kind, a.queue_entry_id, a.annotator) for a in s.scalars(select(Annotation).where(
            Annotation.project_id == pid, Annotation.kind.in_(("label", "skip")))))
        counts = queue.round_counts(s, rid)
        state = s.get(Round, rid).state
        trains = s.scalar(select(func.count()).select_from(Job).where(Job.round_id == rid, Job.kind == "train"))
    assert sum(rows.values()) == run.answers and counts["pending"] + counts["claimed"] == 0
    assert counts["labeled"] + counts["skipped"] == queued
    assert state == "training" and trains == 1
    with capsys.disabled():
        lat = sorted(run.latencies)
        print(f"\n[overlap load {db.dialect}] 8 processes, {queued} entries ({queued - LOAD_ITEMS} copies): "
              f"{run.labels} labels in {run.seconds:.2f} s; submit+next p50 {1000 * lat[len(lat) // 2]:.1f} ms, "
              f"p95 {1000 * lat[int(len(lat) * 0.95)]:.1f} ms")
    db.dispose()


# ----- settings ----------------------------------------------------------------------------------------------------------
def test_overlap_is_set_at_creation_and_changed_later(settings, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    wb = Workbench(settings)
    for bad in ({"overlap": 1.5}, {"overlap": -0.1}, {"overlap_k": 1}, {"overlap_eval": "yes"}):
        with pytest.raises(WorkbenchError, match="overlap"):
            wb.create_project(ProjectConfig(name="bad", **bad), "demo")
    pid = wb.create_project(ProjectConfig(name="Overlap", round_size=8, eval_size=4, overlap=0.25, overlap_eval=True,
                                          overlap_k=3), "demo")
    project = wb.project(pid)
    assert (project.overlap, project.overlap_eval, project.overlap_k) == (0.25, True, 3)
    plan = wb.settings_plan(pid, SettingsChange(overlap=0.5))
    assert len(plan) == 1 and "overlap: 25% of each round's pool items and every evaluation item to 3" in plan[0]
    with pytest.raises(WorkbenchError, match="overlap_k"):
        wb.change_settings(pid, SettingsChange(overlap_k=0))
    assert cli.main(["project", "set", "Overlap", "--overlap", "0.1", "--no-overlap-eval", "--overlap-k", "2"]) == 0
    assert "overlap: 25% of each round's pool items and every evaluation item to 3 annotators each -> 10% of each " \
           "round's pool items to 2 annotators each" in capsys.readouterr().out
    project = wb.project(pid)
    assert (project.overlap, project.overlap_eval, project.overlap_k) == (0.1, False, 2)
    assert wb.change_settings(pid, SettingsChange(overlap=0.1, overlap_eval=False, overlap_k=2)) == []
    assert cli.main(["project", "show", "Overlap"]) == 0
    assert "  overlap_k: 2" in capsys.readouterr().out
    wb.db.dispose()


def test_a_loop_with_the_worker_queues_the_copies_when_a_round_starts(settings) -> None:  # noqa: ANN001
    """The demo with a real selection (the in-process worker): round 0 gets copies of a quarter of its picks and of
    every evaluation item; a single annotator answers one copy of each and then waits for another."""
    from app.worker import Worker

    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Loop", round_size=8, eval_size=4, overlap=0.25, overlap_eval=True,
                                          pick_ahead=0), "demo")
    worker = Worker(settings, device="cpu", quiet=True)
    while worker.run_once():
        pass
    round_ = wb.rounds(pid)[0]
    assert round_.state == "labeling"
    with wb.db.read() as s:
        entries = list(s.scalars(select(QueueEntry).where(QueueEntry.round_id == round_.id)))
    copies = Counter(e.item_id for e in entries)
    assert len(copies) == 12 and sorted(copies.values()) == [1] * 6 + [2] * 6  # 2 of 8 picks, all 4 eval items
    seen = []
    while (task := wb.next_assignment(pid, "solo")) is not None:
        seen.append(task.item_id)
        wb.submit(pid, task.entry_id, "solo", [0])
    assert sorted(seen) == sorted(copies) and wb.rounds(pid)[0].state == "labeling"
    while (task := wb.next_assignment(pid, "second")) is not None:
        wb.submit(pid, task.entry_id, "second", [0])
    assert wb.rounds(pid)[0].state == "training"
    wb.db.dispose()
