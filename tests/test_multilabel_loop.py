"""Multi-label projects end to end: the tag demo imported as sets, rounds labeled through the verbs (tags and
"none of these"), sigmoid heads with mAP on the eval set, TAILOR's Beta posterior in the loop, exports, the label
page's toggles, and the simulation on the tag demo."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from app.settings import Settings
from app.simulation import SimulationConfig, run_simulation
from app.workbench import ProjectConfig, Workbench, WorkbenchError
from app.worker import Worker, job_runner
from learners.efficiency import summarize
from learners.tailor import TailorPosterior
from storage import strategy_states
from storage.demo import DEMO_TAGS, digit_tags
from storage.importers import read_manifest
from storage.models import Item, QueueEntry
from tests.conftest import answer, surface
from tests.test_loop import drain

ROOT = Path(__file__).resolve().parent.parent


def tag_gold(wb: Workbench, pid: int) -> dict[int, list[int]]:
    with wb.db.read() as s:
        return {i.id: i.gold for i in s.scalars(select(Item).where(Item.project_id == pid))}


def label_round(wb: Workbench, pid: int, gold: dict[int, list[int]]) -> int:
    n = 0
    while (task := wb.next_assignment(pid, "tagger")) is not None:
        wb.submit(pid, task.entry_id, "tagger", gold[task.item_id])
        n += 1
    return n


def test_the_tag_demo_imports_sets_including_none_of_these(settings: Settings) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Tags", task="multi_label", eval_size=10), "demo-tags")
    project = wb.project(pid)
    assert project.task == "multi_label" and project.classes == DEMO_TAGS
    with wb.db.read() as s:
        items = list(s.scalars(select(Item).where(Item.project_id == pid)))
    assert len(items) == 1797
    for item in items:  # the images live in one folder per digit; the gold tags follow the digit
        assert item.gold == sorted(DEMO_TAGS.index(t) for t in digit_tags(int(item.key.split("/")[0])))
    assert any(item.gold == [] for item in items)  # the ones: none of the tags, a real answer, not "unlabeled"


def test_multi_label_rounds_train_sigmoid_heads_and_measure_map(settings: Settings) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Tags", task="multi_label", strategy="tailor",
                                          strategy_params={"reward": "pos", "update": "round"}, round_size=20, eval_size=40, pick_ahead=0),
                            "demo-tags")  # counts per round as without pick-ahead (test_round_boundary.py)
    gold = tag_gold(wb, pid)
    drain(Worker(settings, device="cpu"))
    task = wb.next_assignment(pid, "tagger")
    with pytest.raises(WorkbenchError, match="not valid"):
        wb.submit(pid, task.entry_id, "tagger", [len(DEMO_TAGS)])
    wb.submit(pid, task.entry_id, "tagger", [3, 0, 3])  # a set: order and repeats do not matter
    assert wb.labels(pid)[task.item_id] == [0, 3]
    wb.undo(pid, "tagger")
    assert label_round(wb, pid, gold) == 60
    drain(Worker(settings, device="cpu"))
    round0 = wb.rounds(pid)[0]
    metrics = round0.metrics
    assert {"mAP", "micro_f1", "macro_f1", "per_class_ap"} <= set(metrics)
    probs, ids = wb.predictions(pid)
    assert probs.shape == (1797, 4) and not np.allclose(probs.sum(axis=1), 1.0)  # sigmoids, not a softmax
    row = {int(i): r for r, i in enumerate(ids)}
    eval_ids = [i for i, v in wb.labels(pid, split="eval").items()]
    y = np.zeros((len(eval_ids), 4))
    for n, i in enumerate(eval_ids):
        y[n, gold[i]] = 1
    scores = probs[[row[i] for i in eval_ids]]
    expected = [average_precision_score(y[:, k], scores[:, k]) for k in range(4) if y[:, k].any()]
    assert metrics["mAP"] == pytest.approx(np.mean(expected))
    assert wb.chart_data(pid)[0].mAP == pytest.approx(metrics["mAP"])

    round1 = wb.rounds(pid)[1]  # TAILOR with the multi-label arms and the Beta posterior
    assert round1.strategy == "tailor" and round1.state == "labeling"
    with wb.db.read() as s:
        posterior = TailorPosterior.from_dict(strategy_states.stored_state(s, pid, "tailor")["posterior"])
        arms = {a for a, in s.execute(select(QueueEntry.arm).where(QueueEntry.round_id == round1.id))}
    assert posterior.multi_label and arms <= set(posterior.arm_names)
    assert any(name.startswith("uncertain:") for name in posterior.arm_names)
    assert label_round(wb, pid, gold) == 20
    drain(Worker(settings, device="cpu"))
    with wb.db.read() as s:
        after = TailorPosterior.from_dict(strategy_states.stored_state(s, pid, "tailor")["posterior"])
    assert after.folded_rounds == [round1.id]
    # Beta update: each arm's successes and failures grow by its picks' tags (decay 0.9 on the prior ones)
    assert np.isclose(after.stats.sum(), 0.9 * 2 * len(after.arm_names) * 4 + 20 * 4)


def test_multi_label_exports_round_trip_and_the_zip_is_refused(settings: Settings, tmp_path: Path) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Tags", task="multi_label", round_size=5, eval_size=5), "demo-tags")
    gold = tag_gold(wb, pid)
    drain(Worker(settings, device="cpu"))
    label_round(wb, pid, gold)
    labels = wb.labels(pid)
    _, jsonl = wb.export(pid, "jsonl")
    rows = [json.loads(line) for line in jsonl.decode().splitlines()]
    assert all(isinstance(r["label"], list) for r in rows)
    assert {r["path"]: r["label"] for r in rows} == {
        k: [DEMO_TAGS[t] for t in v] for k, v in ((wb_key(wb, pid, i), v) for i, v in labels.items())}
    _, data = wb.export(pid, "csv")
    by_path = {r["path"]: r["label"] for r in csv.DictReader(io.StringIO(data.decode()))}
    assert all(by_path[wb_key(wb, pid, i)] == ";".join(DEMO_TAGS[t] for t in v) for i, v in labels.items())
    with pytest.raises(WorkbenchError, match="cannot hold tags"):
        wb.export(pid, "zip")
    # The JSONL export is a manifest: importing it gives the same sets back, "none of these" included.
    manifest = Path(wb.project(pid).data_root) / "exported.jsonl"
    manifest.write_bytes(jsonl)
    result = read_manifest(manifest, classes=DEMO_TAGS, multi_label=True)
    assert {it.key: it.gold for it in result.items} == {wb_key(wb, pid, i): v for i, v in labels.items()}
    # A CSV manifest gives tags as ';'-separated names.
    (tmp_path / "m").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "m" / name).write_bytes((Path(wb.project(pid).data_root) / "0" / "0000.png").read_bytes())
    (tmp_path / "m" / "tags.csv").write_text("path,label\na.png,even;has a loop\nb.png,\n", encoding="utf-8")
    result = read_manifest(tmp_path / "m" / "tags.csv", classes=DEMO_TAGS, multi_label=True)
    assert {it.key: it.gold for it in result.items} == {"a.png": [0, 3], "b.png": None}


def wb_key(wb: Workbench, pid: int, item_id: int) -> str:
    with wb.db.read() as s:
        return s.get(Item, item_id).key


def test_label_page_mounts_the_tags_and_stores_the_sets(settings: Settings) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Tags", task="multi_label", round_size=5, eval_size=5), "demo-tags")
    drain(Worker(settings, device="cpu"))
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=30)
    at.query_params["annotator"] = "annotator"
    at.session_state["project_id"] = pid
    at.run()
    at.switch_page("app/pages/label.py").run()
    assert not at.exception
    data = surface(at)  # tag toggles, Enter and Shift+N happen in the browser: tests/test_label_page.py
    assert data["task"] == "multi_label" and [c["name"] for c in data["classes"]] == DEMO_TAGS
    first, second = (item["entry_id"] for item in data["items"][:2])
    item_of = {item["entry_id"]: item["item_id"] for item in data["items"]}
    answer(wb, data, "tab", 1, "label", first, [3, 0])  # the set the toggles made: even, has a loop
    assert wb.labels(pid)[item_of[first]] == [0, 3]
    answer(wb, data, "tab", 2, "label", second, [])
    assert wb.labels(pid)[item_of[second]] == []  # none of these


def test_simulation_on_the_tag_demo_reports_map(settings: Settings) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Tags", task="multi_label", strategy="tailor", eval_size=10), "demo-tags")
    drain(Worker(settings, device="cpu"))
    config = SimulationConfig(strategies=["random", "tailor", "tailor-pos", "confidence"], seeds=[0], round_size=10,
                              rounds=1, variants={"tailor-pos": {"strategy": "tailor", "params": {"reward": "pos"}}})
    result = run_simulation(settings, pid, config, job_runner("cpu"))
    summary = summarize(result, "mAP")
    assert {row["strategy"] for row in summary["table"]} == {"random", "tailor", "tailor-pos", "confidence"}
    assert all(0 < row["final"] <= 1 for row in summary["table"])
    pulls = [p["arms"] for p in result["points"] if p["strategy"] == "tailor-pos" and p["round"] == 1][0]
    assert sum(pulls.values()) == 10 and all(":" in arm or arm == "emal" for arm in pulls)


def test_strategies_and_training_without_a_multi_label_rule_are_refused_up_front(settings: Settings) -> None:
    wb = Workbench(settings)
    with pytest.raises(WorkbenchError, match="'lftl' has no multi-label rule"):
        wb.create_project(ProjectConfig(name="T", task="multi_label", strategy="lftl", eval_size=10), "demo-tags")
    with pytest.raises(WorkbenchError, match="'flexmatch' has no multi-label version"):
        wb.create_project(ProjectConfig(name="T", task="multi_label", training={"ssl": "flexmatch"}, eval_size=10), "demo-tags")
    with pytest.raises(WorkbenchError, match="multi-label project"):
        wb.create_project(ProjectConfig(name="T", eval_size=10), "demo-tags")
    assert wb.projects() == []
    pid = wb.create_project(ProjectConfig(name="T", task="multi_label", training={"ssl": "pseudo_label"}, eval_size=10), "demo-tags")
    with pytest.raises(WorkbenchError, match="'qbc' has no multi-label rule"):
        wb.set_strategy(pid, "qbc")
    wb.set_strategy(pid, "entropy")
    assert wb.project(pid).strategy == "entropy"


def test_a_simulation_of_a_strategy_without_a_multi_label_rule_is_refused(settings: Settings) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="T", task="multi_label", eval_size=10), "demo-tags")
    with pytest.raises(WorkbenchError, match="'direct' has no multi-label rule"):
        wb.start_simulation(pid, ["random", "direct"], [0], 10, 1)
    with pytest.raises(WorkbenchError, match="'flexmatch' has no multi-label version"):
        wb.start_simulation(pid, ["margin+flexmatch"], [0], 10, 1)
    assert wb.start_simulation(pid, ["random", "tailor+pseudo_label"], [0], 10, 1) > 0
