"""The whole loop on the demo: import, worker jobs, rounds labeled through the verbs, retrain, chart, export."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from app.settings import Settings
from app.workbench import ProjectConfig, Workbench, WorkbenchError
from app.worker import Worker
from storage.models import Item, Job

ROOT = Path(__file__).resolve().parent.parent


def gold_of(wb: Workbench, project_id: int) -> dict[int, int]:
    """The simulated annotator's answers: the demo's gold labels (the strategies never see these)."""
    with wb.db.read() as s:
        return {i.id: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == project_id))}


def label_round(wb: Workbench, project_id: int, gold: dict[int, int], annotator: str = "script") -> int:
    n = 0
    while (task := wb.next_assignment(project_id, annotator)) is not None:
        wb.submit(project_id, task.entry_id, annotator, [gold[task.item_id]], seconds=0.5)
        n += 1
    return n


def drain(worker: Worker) -> None:
    while worker.run_once():
        pass


def test_three_rounds_on_the_demo_chart_grows_and_exports_match(settings: Settings) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Demo digits", round_size=10, eval_size=10, pick_ahead=0),
                            "demo")  # counts per round as without pick-ahead (test_round_boundary.py)
    worker = Worker(settings, device="cpu")
    gold = gold_of(wb, pid)
    drain(worker)
    rounds = wb.rounds(pid)
    assert [(r.index, r.state, r.strategy) for r in rounds] == [(0, "labeling", "random")]
    first = wb.next_assignment(pid, "script")
    assert first.arm == "eval" and first.guess is None  # the evaluation set is queued first, before any model
    chart_sizes = []
    for round_index in range(3):
        assert label_round(wb, pid, gold) == (20 if round_index == 0 else 10)
        assert wb.rounds(pid)[-1].state == "training"
        drain(worker)
        chart = wb.chart_data(pid)
        chart_sizes.append(len(chart))
        assert chart[-1].labels == 10 * (round_index + 1)
        assert 0.0 <= chart[-1].accuracy <= 1.0 and chart[-1].eval_n == 10
    assert chart_sizes == [1, 2, 3]
    rounds = wb.rounds(pid)
    assert [r.state for r in rounds] == ["done", "done", "done", "labeling"]
    assert rounds[1].strategy == "margin" and rounds[3].labels_at_start == 30
    task = wb.next_assignment(pid, "script")
    assert task.arm == "margin" and task.guess is not None  # the retrained model's guess is shown
    with wb.db.read() as s:
        eval_ids = {i.id for i in s.scalars(select(Item).where(Item.project_id == pid, Item.split == "eval"))}
    labels = wb.labels(pid)
    assert len(labels) == 40 and eval_ids <= set(labels)

    keys = {}
    with wb.db.read() as s:
        keys = {i.id: i.key for i in s.scalars(select(Item).where(Item.project_id == pid))}
    expected = {keys[i]: str(v[0]) for i, v in labels.items()}
    _, data = wb.export(pid, "csv")
    assert {r["path"]: r["label"] for r in csv.DictReader(io.StringIO(data.decode()))} == expected
    _, data = wb.export(pid, "jsonl")
    assert {r["path"]: r["label"] for r in map(json.loads, data.decode().splitlines())} == expected
    _, data = wb.export(pid, "zip")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        images = [n for n in zf.namelist() if n.endswith(".png")]
        assert len(images) == 40
        by_base = {Path(k).name: v for k, v in expected.items()}
        for name in images:  # <split>/<class>/<file>: the class folder matches the stored label
            _split, label, base = name.split("/")
            assert by_base[base] == label
    _, data = wb.export(pid, "predictions")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(rows) == len(keys) - 40  # every unlabeled item, the one claimed but not yet labeled included


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_real_worker_process_runs_embed_select_and_train_jobs(settings: Settings, tmp_path: Path) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Demo digits", round_size=5, eval_size=5, pick_ahead=0),
                            "demo")  # counts per round as without pick-ahead (test_round_boundary.py)
    gold = gold_of(wb, pid)
    env = {**os.environ, "WORKBENCH_HOME": str(settings.home), "WORKBENCH_DB_URL": settings.db_url}
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "app", "worker", "--device", "cpu"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: wb.rounds(pid)[0].state == "labeling", 120, "round 0 to be selected")
        assert label_round(wb, pid, gold) == 10
        _wait(lambda: len(wb.rounds(pid)) == 2 and wb.rounds(pid)[1].state == "labeling", 120, "training and round 1")
        with wb.db.read() as s:
            done = {j.kind: j for j in s.scalars(select(Job).where(Job.project_id == pid, Job.state == "done"))}
        assert {"embed", "select", "train"} <= set(done)
        assert done["embed"].progress == 1.0 and done["embed"].worker.endswith(str(proc.pid))
        assert wb.rounds(pid)[0].metrics["labels"] == 5
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    assert "stopped" in (tmp_path / "worker.log").read_text()


def test_verbs_refuse_what_cannot_be_done(settings: Settings) -> None:
    wb = Workbench(settings)
    with pytest.raises(WorkbenchError, match="no such file"):
        wb.create_project(ProjectConfig(name="x", eval_size=10), settings.home / "missing")
    pid = wb.create_project(ProjectConfig(name="Demo digits", round_size=5, eval_size=5), "demo")
    with pytest.raises(WorkbenchError, match="already exists"):
        wb.create_project(ProjectConfig(name="Demo digits", eval_size=10), "demo")
    with pytest.raises(WorkbenchError, match="still selecting"):
        wb.start_round(pid)
    with pytest.raises(WorkbenchError, match="no round is being labeled"):
        wb.close_round(pid)
    drain(Worker(settings, device="cpu"))
    task = wb.next_assignment(pid, "ann")
    with pytest.raises(WorkbenchError, match="not valid"):
        wb.submit(pid, task.entry_id, "ann", [10])
    with pytest.raises(WorkbenchError, match="annotator name"):
        wb.next_assignment(pid, "  ")


def test_a_sequential_strategy_fills_its_round_one_pick_per_label(settings: Settings) -> None:
    from storage.models import QueueEntry, Round

    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Galaxy digits", strategy="galaxy", round_size=6, eval_size=10), "demo")
    worker = Worker(settings, device="cpu")
    gold = gold_of(wb, pid)
    drain(worker)
    label_round(wb, pid, gold)  # round 0: the eval set and 6 random picks
    drain(worker)
    round1 = wb.rounds(pid)[1]
    assert (round1.strategy, round1.state) == ("galaxy", "labeling")

    def queued() -> list[QueueEntry]:
        with wb.db.read() as s:
            return list(s.scalars(select(QueueEntry).where(QueueEntry.round_id == round1.id).order_by(QueueEntry.position)))

    assert len(queued()) == 2  # two picks ahead, so the annotator never waits for the worker
    for n in range(6):
        task = wb.next_assignment(pid, "seq")
        assert task is not None and task.arm == "galaxy"
        wb.submit(pid, task.entry_id, "seq", [gold[task.item_id]])
        drain(worker)  # the next pick is computed from every label so far
        entries = queued()
        assert len(entries) == min(n + 3, 6)
        assert len({e.item_id for e in entries}) == len(entries)
    with wb.db.read() as s:
        states = [r.state for r in s.scalars(select(Round).where(Round.project_id == pid).order_by(Round.index))]
    assert states[:2] == ["done", "done"] and wb.chart_data(pid)[-1].labels == 12


@pytest.mark.parametrize("ssl", ["pseudo_label", "flexmatch"])
def test_semi_supervised_retraining_runs_in_the_worker(settings: Settings, ssl: str) -> None:
    from storage.files import latest_artifact

    wb = Workbench(settings)
    config = ProjectConfig(name=f"SSL {ssl}", head={"kind": "mlp"}, training={"ssl": ssl, "view_flip": False}, round_size=20, eval_size=20,
                           pick_ahead=0)  # counts per round as without pick-ahead (test_round_boundary.py)
    pid = wb.create_project(config, "demo")
    worker = Worker(settings, device="cpu")
    drain(worker)
    with wb.db.read() as s:
        has_views = latest_artifact(s, pid, "views", view="strong") is not None
    assert has_views == (ssl == "flexmatch")  # augmented views are embedded only when the method needs them
    label_round(wb, pid, gold_of(wb, pid))
    drain(worker)
    round0 = wb.rounds(pid)[0]
    assert round0.state == "done" and f"({ssl})" in round0.note
    assert round0.metrics["labels"] == 20 and round0.metrics["accuracy"] is not None


def test_a_flat_folder_of_unlabeled_images_takes_its_class_names(settings: Settings, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(6):
        Image.new("L", (8, 8), color=30 * i).save(folder / f"{i}.png")
    wb = Workbench(settings)
    with pytest.raises(WorkbenchError, match="needs at least 2"):
        wb.create_project(ProjectConfig(name="flat", eval_size=10), folder)
    pid = wb.create_project(ProjectConfig(name="flat", classes=["cat", "dog"], eval_size=2), folder)
    assert wb.project(pid).classes == ["cat", "dog"] and wb.status(pid).items == {"pool": 4, "eval": 2}
