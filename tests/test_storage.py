"""Storage: migrations, atomic claims from threads and processes, label/skip/undo, job claims, atomic files."""
from __future__ import annotations

import multiprocessing as mp
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import inspect, select, update

from storage import jobs, queue
from storage.db import Database, head_revision, sqlite_url
from storage.files import DamagedFile, latest_artifact, load_matrix, save_matrix
from storage.labels import current_labels
from storage.models import Annotation, Job, QueueEntry, utcnow
from tests.conftest import make_round


def test_migrations_create_every_table_on_empty_database(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "empty.sqlite"))
    tables = set(inspect(db.engine).get_table_names())
    assert {"projects", "items", "annotations", "rounds", "queue_entries", "jobs", "strategy_states", "artifacts", "alembic_version"} <= tables
    with db.read() as s:
        assert s.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert s.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert s.connection().exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
    db.dispose()
    Database(sqlite_url(tmp_path / "empty.sqlite")).dispose()  # applying again is a no-op


def _label_all_in_threads(db: Database, project_id: int, round_id: int, n_threads: int) -> list[int]:
    given: list[int] = []
    lock = threading.Lock()

    def annotate(name: str) -> None:
        while True:
            with db.write() as s:
                claim = queue.claim_next(s, round_id, name)
            if claim is None:
                return
            with lock:
                given.append(claim.item_id)
            with db.write() as s:
                queue.submit_label(s, project_id, claim.entry_id, name, [claim.item_id % 3])

    threads = [threading.Thread(target=annotate, args=(f"t{i}",)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return given


def test_concurrent_claims_from_threads_never_hand_an_item_twice(db: Database) -> None:
    project_id, round_id = make_round(db, 120)
    given = _label_all_in_threads(db, project_id, round_id, 6)
    assert len(given) == 120 and len(set(given)) == 120
    with db.read() as s:
        assert len(current_labels(s, project_id)) == 120
        assert queue.round_counts(s, round_id)["labeled"] == 120


def _process_annotator(url: str, project_id: int, round_id: int, name: str, out: mp.Queue) -> None:
    db = Database(url, migrate=False)
    got = []
    while True:
        with db.write() as s:
            claim = queue.claim_next(s, round_id, name)
        if claim is None:
            break
        got.append(claim.item_id)
        with db.write() as s:
            queue.submit_label(s, project_id, claim.entry_id, name, [0])
    out.put(got)


def test_concurrent_claims_from_processes_never_hand_an_item_twice(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "db.sqlite")
    db = Database(url)
    project_id, round_id = make_round(db, 150)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_annotator, args=(url, project_id, round_id, f"p{i}", out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    given = [i for r in results for i in r]
    assert sorted(given) == sorted(set(given)) and len(given) == 150
    with db.read() as s:
        assert s.query(Annotation).count() == 150


def test_a_held_claim_is_resumed_and_an_expired_one_returns_to_the_queue(db: Database) -> None:
    _, round_id = make_round(db, 3)
    with db.write() as s:
        first = queue.claim_next(s, round_id, "ann")
        again = queue.claim_next(s, round_id, "ann")
        other = queue.claim_next(s, round_id, "bob")
    assert first.entry_id == again.entry_id and other.entry_id != first.entry_id
    with db.write() as s:  # ann walks away: her lease runs out
        s.execute(update(QueueEntry).where(QueueEntry.id == first.entry_id).values(lease_expires=utcnow() - timedelta(seconds=1)))
    with db.write() as s:
        carl = queue.claim_next(s, round_id, "carl")
    assert carl.entry_id == first.entry_id
    with db.write() as s, pytest.raises(queue.QueueError, match="no longer yours"):
        queue.submit_label(s, 1, first.entry_id, "ann", [0])


def test_undo_appends_a_retraction_and_gives_the_item_back(db: Database) -> None:
    project_id, round_id = make_round(db, 3)
    with db.write() as s:
        c1 = queue.claim_next(s, round_id, "ann")
        queue.submit_label(s, project_id, c1.entry_id, "ann", [2])
        c2 = queue.claim_next(s, round_id, "ann")
        queue.skip(s, project_id, c2.entry_id, "ann")
    with db.write() as s:
        undone = queue.undo_last(s, project_id, "ann")  # undoes the skip
    assert undone.kind == "skip"
    with db.write() as s:
        undone = queue.undo_last(s, project_id, "ann")  # then the label
    assert undone.kind == "label" and undone.item_id == c1.item_id
    with db.read() as s:
        assert current_labels(s, project_id) == {}
        kinds = [a.kind for a in s.scalars(select(Annotation).order_by(Annotation.id))]
        assert kinds == ["label", "skip", "retract", "retract"]  # nothing deleted
    with db.write() as s:
        held = queue.claim_next(s, round_id, "ann")  # the undone item is hers again, first
        assert held.entry_id in (c1.entry_id, c2.entry_id)
        queue.submit_label(s, project_id, held.entry_id, "ann", [1])
    with db.write() as s:
        assert queue.undo_last(s, project_id, "bob") is None
    with db.read() as s:
        assert list(current_labels(s, project_id).values())[0].value == [1]


def test_a_relabel_replaces_and_its_undo_restores_the_previous_label(db: Database) -> None:
    project_id, round_id = make_round(db, 1)
    with db.write() as s:
        c = queue.claim_next(s, round_id, "ann")
        queue.submit_label(s, project_id, c.entry_id, "ann", [0])
    with db.write() as s:
        s.add(Annotation(project_id=project_id, item_id=c.item_id, annotator="lead", kind="label", value=[1]))
    with db.read() as s:
        assert current_labels(s, project_id)[c.item_id].value == [1]
    with db.write() as s:
        queue.undo_last(s, project_id, "lead")
    with db.read() as s:
        assert current_labels(s, project_id)[c.item_id].value == [0]


def test_jobs_are_claimed_once_and_a_dead_workers_job_is_claimed_again(db: Database) -> None:
    with db.write() as s:
        embed = jobs.enqueue(s, "embed", None, priority=10)
        select_job = jobs.enqueue(s, "select", None, priority=0)
    with db.write() as s:
        first = jobs.claim(s, "w1")
    assert first.id == select_job.id  # selection is more urgent than embedding
    with db.write() as s:
        second = jobs.claim(s, "w2")
        assert second.id == embed.id
        assert jobs.claim(s, "w3") is None
    with db.write() as s:  # w2 dies: its heartbeat goes stale
        s.execute(update(Job).where(Job.id == embed.id).values(heartbeat=utcnow() - timedelta(seconds=600)))
    with db.write() as s:
        retaken = jobs.claim(s, "w3")
        assert retaken.id == embed.id and retaken.attempts == 2
        assert not jobs.heartbeat(s, embed.id, "w2", 0.5)  # the dead worker can no longer report
        assert jobs.heartbeat(s, embed.id, "w3", 0.5, "halfway")


def test_a_projects_jobs_wait_while_another_worker_embeds_it(db: Database) -> None:
    from storage.models import Project

    with db.write() as s:
        embedding, other = (Project(name=n, classes=["a", "b"], data_root="/x", backbone={"name": "pixels"}, head={},
                                    training={}, strategy="random", strategy_params={}) for n in ("p", "q"))
        s.add_all([embedding, other])
        s.flush()
        jobs.enqueue(s, "embed", embedding.id, priority=10)
    with db.write() as s:
        assert jobs.claim(s, "w1").kind == "embed"
    with db.write() as s:
        train = jobs.enqueue(s, "train", embedding.id, priority=5)
        elsewhere = jobs.enqueue(s, "train", other.id, priority=5)
    with db.write() as s:
        assert jobs.claim(s, "w2", waits_for_embed={"train"}).id == elsewhere.id  # not p's train job: p is being embedded
    with db.write() as s:
        assert jobs.claim(s, "w3", waits_for_embed={"train"}) is None
    with db.write() as s:
        embed_job = s.scalars(select(Job).where(Job.kind == "embed")).one()
        jobs.finish(s, embed_job.id, "embedded")
    with db.write() as s:
        assert jobs.claim(s, "w3", waits_for_embed={"train"}).id == train.id


def test_a_damaged_feature_file_is_refused(db: Database, tmp_path: Path) -> None:
    from storage.models import Project

    with db.write() as s:
        p = Project(name="f", classes=["a", "b"], data_root="/", backbone={}, head={}, training={}, strategy_params={})
        s.add(p)
        s.flush()
        save_matrix(s, tmp_path / "f.npy", project_id=p.id, kind="features", matrix=np.ones((3, 2), np.float32), item_ids=np.array([5, 6, 7]))
    with db.read() as s:
        art = latest_artifact(s, p.id, "features")
    m, ids = load_matrix(art)
    assert m.shape == (3, 2) and ids.tolist() == [5, 6, 7]
    data = (tmp_path / "f.npy").read_bytes()
    (tmp_path / "f.npy").write_bytes(data[: len(data) // 2])  # a crash mid-write
    with pytest.raises(DamagedFile, match="f.npy"):
        load_matrix(art)
    assert not list(tmp_path.glob(".f.npy.*.tmp"))
