"""TAILOR and LFTL in the real loop: the posterior kept in the database across rounds and restarts (the batch rule,
update="round"), TAILOR learning from each answer (update="answer": follow-up selections, each answer folded
once), the arm panel, a head exported from one project starting another, LFTL's previous predictions followed by
item id."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app import strategy_state
from app.jobs.context import align as _align
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench, WorkbenchError
from app.worker import Worker
from learners.strategies.panel import Bars, Pivot, StackedBars, Table
from learners.tailor import TailorPosterior, one_hot
from storage import strategy_states
from storage.models import Artifact, Job, Project, QueueEntry, Round
from tests.test_loop import drain, gold_of, label_round


def test_tailor_posterior_survives_restarts_and_is_updated_once_per_round(settings: Settings) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Tailor digits", strategy="tailor", round_size=12,
                                          strategy_params={"update": "round",  # per-class arms: the panel names them
                                                           "arms": ["galaxy*", "confidence", "badge", "margin",
                                                                    "coreset"]}, eval_size=10, pick_ahead=0),
                            "demo")  # counts per round as without pick-ahead (test_round_boundary.py)
    gold = gold_of(wb, pid)
    drain(Worker(settings, device="cpu"))
    label_round(wb, pid, gold)
    drain(Worker(settings, device="cpu"))  # trains round 0, opens round 1 and lets TAILOR choose it

    round1 = wb.rounds(pid)[1]
    assert round1.strategy == "tailor" and round1.state == "labeling"
    with wb.db.read() as s:
        arms = [arm for arm, in s.execute(select(QueueEntry.arm).where(QueueEntry.round_id == round1.id))]
        posterior = TailorPosterior.from_dict(strategy_states.stored_state(s, pid, "tailor")["posterior"])
    assert len(arms) == 12 and set(arms) <= set(posterior.arm_names)
    assert len(posterior.arm_names) == 10 + 4  # galaxy per class, confidence, badge, margin, coreset (set above)
    assert np.array_equal(posterior.stats, np.ones((2, 14, 10))) and posterior.folded_rounds == []
    assert "TAILOR" in round1.note

    label_round(wb, pid, gold)
    wb.db.dispose()
    wb = Workbench(settings)  # a restart: the posterior comes back from the database
    drain(Worker(settings, device="cpu"))
    with wb.db.read() as s:
        state = strategy_states.stored_state(s, pid, "tailor")
        picks = list(s.execute(select(QueueEntry.item_id, QueueEntry.arm).where(QueueEntry.round_id == round1.id)))
    after = TailorPosterior.from_dict(state["posterior"])
    expected = 0.9 * np.ones((2, 14, 10))
    for item_id, arm in picks:
        y = one_hot(np.array([gold[item_id]]), 10)[0]
        m = after.arm_names.index(arm)
        expected[0, m] += y
        expected[1, m] += 1 - y
    assert np.allclose(after.stats, expected)
    assert after.folded_rounds == [round1.id]
    with wb.db.write() as s:  # folding the same round again changes nothing
        assert not strategy_state.fold_round(s, s.get(Project, pid), s.get(Round, round1.id))

    assert [h["round"] for h in state["history"][:1]] == [1]

    panel, = wb.strategy_panels(pid)
    arms, pulls, classes, table, reward = panel.blocks
    assert isinstance(arms, Bars) and isinstance(pulls, StackedBars) and isinstance(classes, Pivot)
    assert isinstance(table, Table) and table.rows == arms.rows and set(reward.rows[0]) == set(wb.project(pid).classes)
    assert sum(row["pulls"] for row in pulls.rows if row["round"] == 1) == 12
    assert {row["round"] for row in pulls.rows} == {1, 2}
    assert len(arms.rows) == 14 and any(row["arm"].startswith("galaxy[") for row in arms.rows)
    assert pulls.groups["galaxy[" + wb.project(pid).classes[3] + "]"] == "galaxy"
    assert sum(row["labels"] for row in classes.rows) == 12


def test_tailor_learns_from_each_answer_with_follow_up_selections(settings: Settings) -> None:
    """update="answer" (the default): TAILOR keeps two picks ahead and selects again after each answer, from the
    stored posterior plus the round's answers so far; the stored posterior changes only when the round is folded,
    with each of the round's answers once."""
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Tailor answers", strategy="tailor", round_size=8, eval_size=10),
                            "demo")
    gold = gold_of(wb, pid)
    worker = Worker(settings, device="cpu")
    drain(worker)
    label_round(wb, pid, gold)
    drain(worker)  # trains round 0, opens round 1 and lets TAILOR make its first two picks
    round1 = wb.rounds(pid)[1]
    assert (round1.strategy, round1.state) == ("tailor", "labeling")
    assert "learning from each answer (0 of this round so far)" in round1.note

    def queued(round_id: int) -> list[tuple[int, str]]:
        with wb.db.read() as s:
            return [tuple(row) for row in s.execute(select(QueueEntry.item_id, QueueEntry.arm)
                                                    .where(QueueEntry.round_id == round_id)
                                                    .order_by(QueueEntry.position))]

    def stored() -> dict:
        with wb.db.read() as s:
            return strategy_states.stored_state(s, pid, "tailor")

    def last_select_message() -> str:
        with wb.db.read() as s:
            return s.scalar(select(Job.message).where(Job.project_id == pid, Job.kind == "select")
                            .order_by(Job.id.desc()).limit(1))

    prior = TailorPosterior.from_dict(stored()["posterior"])
    assert len(queued(round1.id)) == 2
    for n in range(8):
        task = wb.next_assignment(pid, "seq")
        assert task is not None and task.arm in prior.arm_names
        wb.submit(pid, task.entry_id, "seq", [gold[task.item_id]])
        drain(worker)  # the follow-up selection, from every answer so far
        entries = queued(round1.id)
        assert len(entries) == min(n + 3, 8) and len({item for item, _ in entries}) == len(entries)
        if n + 3 <= 8:
            assert f"learning from each answer ({n + 1} of this round so far)" in last_select_message()
        if n < 7:  # still in the round: its picks remembered by item id, the stored posterior as it was
            state = stored()
            assert state["round_picks"] == {str(item): arm for item, arm in entries}
            assert np.array_equal(TailorPosterior.from_dict(state["posterior"]).stats, prior.stats)

    # Round 1 trained and folded (its eight answers once, after the decay); round 2 has begun afresh.
    round1_picks = queued(round1.id)
    after = TailorPosterior.from_dict(stored()["posterior"])
    expected = 0.9 * prior.stats + prior.pick_counts(prior.arm_index([arm for _, arm in round1_picks]),
                                                     one_hot(np.array([gold[item] for item, _ in round1_picks]), 10))
    np.testing.assert_allclose(after.stats, expected)
    assert after.folded_rounds == [round1.id]
    round2 = wb.rounds(pid)[2]
    assert round2.state == "labeling" and "(0 of this round so far)" in round2.note
    assert stored()["round_picks"] == {str(item): arm for item, arm in queued(round2.id)}
    with wb.db.write() as s:  # folding the same round again changes nothing
        assert not strategy_state.fold_round(s, s.get(Project, pid), s.get(Round, round1.id))


def _trained_source(settings: Settings, name: str, head: str = "bottleneck") -> tuple[Workbench, Path]:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name=name, head={"kind": head}, round_size=40, eval_size=10), "demo")
    drain(Worker(settings, device="cpu"))
    label_round(wb, pid, gold_of(wb, pid))
    drain(Worker(settings, device="cpu"))
    file_name, data = wb.export(pid, "head")
    assert file_name.endswith(".safetensors")
    path = settings.home / file_name
    path.write_bytes(data)
    return wb, path


def test_a_head_exported_from_one_project_chooses_the_first_round_of_another(settings: Settings) -> None:
    wb, head_file = _trained_source(settings, "Source digits")
    config = ProjectConfig(name="Target digits", head={"kind": "bottleneck"}, strategy="lftl",
                           training={"ssl": "lftl_vpa"}, round_size=10, eval_size=10, source_head=str(head_file))
    pid = wb.create_project(config, "demo")
    assert wb.rounds(pid)[0].strategy == "lftl"  # not random: the source model chooses round 0
    drain(Worker(settings, device="cpu"))
    with wb.db.read() as s:
        source_predictions = s.scalars(select(Artifact).where(Artifact.project_id == pid, Artifact.kind == "predictions")).all()
    assert len(source_predictions) == 1 and source_predictions[0].meta.get("source")
    first = wb.next_assignment(pid, "ann")
    assert first.arm == "eval" and first.guess is not None  # the source head already guesses
    label_round(wb, pid, gold_of(wb, pid), annotator="ann")
    with wb.db.read() as s:
        arms = {arm for arm, in s.execute(
            select(QueueEntry.arm).join(Round, Round.id == QueueEntry.round_id).where(Round.project_id == pid))}
    assert arms == {"eval", "lftl"}
    drain(Worker(settings, device="cpu"))
    round0, round1 = wb.rounds(pid)[:2]
    assert "warm start" in round0.note and "bottleneck" in round0.note
    assert "previous" in round1.note  # round 1's P_prev: the source head's predictions, by item id
    assert round0.metrics["accuracy"] > 0.5


def test_a_source_head_must_match_and_must_be_safetensors(settings: Settings, tmp_path: Path) -> None:
    wb, head_file = _trained_source(settings, "Source", head="linear")
    other_backbone = ProjectConfig(name="Bigger pixels", backbone={"name": "pixels", "image_size": 12},
                                   source_head=str(head_file))
    with pytest.raises(WorkbenchError, match="backbone"):
        wb.create_project(other_backbone, "demo")
    classes_folder = tmp_path / "two_classes"
    for k, name in enumerate(["cat", "dog"]):
        (classes_folder / name).mkdir(parents=True)
        for i in range(3):
            from PIL import Image

            Image.new("L", (8, 8), color=40 * (i + k)).save(classes_folder / name / f"{i}.png")
    with pytest.raises(WorkbenchError, match="classes"):
        wb.create_project(ProjectConfig(name="Pets", source_head=str(head_file), eval_size=1), classes_folder)
    pickled = tmp_path / "head.safetensors"
    pickled.write_bytes(pickle.dumps({"weight": [1, 2, 3]}))
    with pytest.raises(WorkbenchError, match="pickled"):
        wb.create_project(ProjectConfig(name="Pickle", source_head=str(pickled)), "demo")
    assert [p.name for p in wb.projects()] == ["Source"]  # nothing half-stored
    # Warm start skipped with a note when the kinds differ (a linear source, an lftl_vpa target).
    pid = wb.create_project(ProjectConfig(name="Target", training={"ssl": "lftl_vpa"}, round_size=10, eval_size=10,
                                          source_head=str(head_file)), "demo")
    drain(Worker(settings, device="cpu"))
    label_round(wb, pid, gold_of(wb, pid))
    drain(Worker(settings, device="cpu"))
    assert "fresh start" in wb.rounds(pid)[0].note


def test_previous_predictions_follow_items_by_id() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    ids = np.array([10, 20, 30])
    pool_order = np.array([30, 40, 10, 20])  # a new item (40) and another order
    aligned = _align(probs, ids, pool_order, missing_ok=True)
    assert np.allclose(aligned[[0, 2, 3]], probs[[2, 0, 1]]) and np.isnan(aligned[1]).all()
    with pytest.raises(ValueError, match="no row"):
        _align(probs, ids, pool_order)
