"""The CLI verbs in real subprocesses: import, worker --once, round close, export, status, and clear errors; and
`app.cli.main` in-process for the errors of each layer (a missing image in a zip export, a locked database)."""
from __future__ import annotations

import csv
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from app import cli
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from storage import db as storage_db
from storage.db import sqlite_url

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_import_label_free_round_close_and_export(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{home / 'wb.sqlite'}"}
    images = tmp_path / "shapes"
    for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (images / cls).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (12, 12), tuple(max(0, c - 10 * i) for c in colour)).save(images / cls / f"{cls}{i}.png")
    out = run(["import", str(images), "--name", "shapes", "--round-size", "3", "--eval-size", "2"], env)
    assert "project 1 'shapes' created" in out.stdout
    run(["worker", "--once", "--device", "cpu"], env)
    status = run(["status", "shapes", "--json"], env).stdout  # for scripts; without --json it is for people
    assert '"state": "labeling"' in status and '"pending": 5' in status
    assert "round 0 (random): labeling; queue 5 pending" in run(["status", "shapes"], env).stdout

    wb = Workbench(Settings(home=home, db_url=env["WORKBENCH_DB_URL"]))
    for _ in range(3):
        task = wb.next_assignment(1, "cli-test")
        wb.submit(1, task.entry_id, "cli-test", [0 if "red" in task.key else 1])
    out = run(["round", "close", "shapes"], env)
    assert "round 0 closed" in out.stdout
    run(["worker", "--once", "--device", "cpu"], env)
    assert [r.state for r in wb.rounds(1)] == ["done", "labeling"]

    run(["export", "shapes", "--format", "csv", "--out", str(tmp_path / "labels.csv")], env)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "labels.csv").read_text())))
    assert sorted(r["label"] for r in rows) == sorted(wb.project(1).classes[v[0]] for v in wb.labels(1).values())
    run(["export", "shapes", "--format", "predictions", "--out", str(tmp_path / "pred.csv")], env)
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 1 + 16 - 3

    bad = run(["import", str(tmp_path / "nowhere"), "--name", "x"], env, check=False)
    assert bad.returncode == 2 and "nowhere: no such file or folder" in bad.stderr
    bad = run(["export", "nosuch"], env, check=False)
    assert bad.returncode == 2 and "no project named 'nosuch'" in bad.stderr


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workbench home (real SQLite) that `app.cli.main` and `Settings.from_env` use."""
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url(home / "workbench.sqlite"))
    return home


def test_a_missing_image_in_a_zip_export_is_one_error_line(home: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    wb = Workbench(Settings.from_env())
    pid = wb.create_project(ProjectConfig(name="Demo digits", eval_size=10), "demo")
    worker = Worker(device="cpu")
    while worker.run_once():  # embeds the digits and queues round 0
        pass
    keys = []
    for _ in range(3):
        task = wb.next_assignment(pid, "cli-test")
        wb.submit(pid, task.entry_id, "cli-test", [int(task.key.split("/")[0])])
        keys.append(task.key)

    assert cli.main(["export", "Demo digits", "--format", "parquet", "--out", str(tmp_path / "labels.parquet")]) == 0
    frame = pd.read_parquet(tmp_path / "labels.parquet")  # one row per item, the unlabeled ones with no label
    assert set(frame.loc[frame["label"].notna(), "path"]) == set(keys)
    (Path(wb.project(pid).data_root) / keys[1]).unlink()
    capsys.readouterr()

    assert cli.main(["export", "Demo digits", "--format", "zip", "--out", str(tmp_path / "labels.zip")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"{keys[1]}: cannot read the image for export" in err
    assert not (tmp_path / "labels.zip").exists()


def test_a_locked_database_is_one_error_line(home: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    Workbench(Settings.from_env()).db.dispose()  # the schema exists
    monkeypatch.setattr(storage_db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    lock = sqlite3.connect(home / "workbench.sqlite")
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        assert cli.main(["round", "close", "nosuch"]) == 2
    finally:
        lock.rollback()
        lock.close()
    err = capsys.readouterr().err
    assert err.startswith("error: the database sqlite:///") and "is busy or unavailable" in err
    assert err.count("\n") == 1 and "Traceback" not in err
