"""Upgrading a database that holds data loses none of it: a SQLite file (foreign keys on, as the workbench
connects) at revision 0002 with a project, an item, a round, a queue entry, an answer and a job, upgraded to head.
On SQLite a migration that rebuilds a table (a batch operation) drops the old one, and ON DELETE CASCADE would take
the rows that point at it (0003 once did so to every queue entry)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from storage.db import Database, _alembic_config, sqlite_url

ROWS = [
    "INSERT INTO projects (id, name, classes, data_root, backbone, head, training, strategy, strategy_params, "
    "round_size, eval_size, seed, task, auto_next_round, created_at) VALUES (1, 'p', '[\"a\", \"b\"]', '/x', '{}', "
    "'{}', '{}', 'random', '{}', 5, 1, 0, 'single_label', 1, '2026-01-01')",
    "INSERT INTO items (id, project_id, key, content_hash, split) VALUES (1, 1, 'a.png', 'h', 'pool')",
    "INSERT INTO rounds (id, project_id, \"index\", strategy, strategy_params, state, note, labels_at_start, "
    "started_at) VALUES (1, 1, 0, 'random', '{}', 'labeling', '', 0, '2026-01-01')",
    "INSERT INTO queue_entries (id, round_id, item_id, position, arm, state) VALUES (1, 1, 1, 0, 'random', 'done')",
    "INSERT INTO annotations (id, project_id, item_id, annotator, kind, value, round_id, queue_entry_id, created_at) "
    "VALUES (1, 1, 1, 'ann', 'label', '[1]', 1, 1, '2026-01-01')",
    "INSERT INTO jobs (id, kind, project_id, round_id, params, priority, state, progress, message, attempts, "
    "created_at) VALUES (1, 'train', 1, 1, '{}', 0, 'queued', 0, '', 0, '2026-01-01')",
]
TABLES = ("projects", "items", "rounds", "queue_entries", "annotations", "jobs")


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in TABLES}


def test_upgrading_a_database_with_data_from_0002_to_head_keeps_every_row(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old.sqlite")
    engine = create_engine(url)
    cfg = _alembic_config()
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        for row in ROWS:
            conn.exec_driver_sql(row)
    before = _counts(engine)
    assert set(before.values()) == {1}
    engine.dispose()
    db = Database(url)  # upgrades to head, as the workbench does when it opens the file
    after = _counts(db.engine)
    assert after == before
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT queue_entry_id FROM annotations").scalar() == 1
        assert conn.exec_driver_sql("SELECT pick_ahead FROM projects").scalar() == 5
    db.dispose()
