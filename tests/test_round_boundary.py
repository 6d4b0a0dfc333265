"""No waiting at a round boundary (app.rounds, project setting pick_ahead): a batch round's selection ranks a few
items beyond its size; when the round goes to training the next round opens at once with them, and the training's
job queues that round's own selection, which fills it with the new head. Real SQLite, the in-process Worker."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sqlalchemy import select

from app import job_kinds
from app.jobs import select as select_job
from app.jobs.context import JobContext
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench, WorkbenchError
from app.worker import Worker
from storage import answers, queue
from storage.files import latest_artifact, load_matrix
from storage.models import Item, Job, QueueEntry, Round
from storage.rounds import round_picks

ANNOTATOR = "script"


def make(settings: Settings, **config) -> tuple[Workbench, int, Worker, dict[int, int]]:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(**{"name": "Demo digits", "round_size": 10, "eval_size": 10, **config}),
                            "demo")
    worker = Worker(settings, device="cpu", quiet=True)
    drain(worker)
    with wb.db.read() as s:
        gold = {i.id: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == pid))}
    return wb, pid, worker, gold


def drain(worker: Worker) -> None:
    while worker.run_once():
        pass


def label_until_round(wb: Workbench, pid: int, gold: dict[int, int], index: int):
    """Label what the queue hands out until it hands out an item of round `index` (returned, still held) or
    nothing (None)."""
    while (task := wb.next_assignment(pid, ANNOTATOR)) is not None and task.round_index < index:
        wb.submit(pid, task.entry_id, ANNOTATOR, [gold[task.item_id]], seconds=0.5)
    return task


def entries(wb: Workbench, pid: int) -> list[tuple[int, int, str, float | None, str]]:
    """(round index, item id, arm, score, state) of every queue entry, by round and position."""
    with wb.db.read() as s:
        return [tuple(row) for row in s.execute(
            select(Round.index, QueueEntry.item_id, QueueEntry.arm, QueueEntry.score, QueueEntry.state)
            .join(Round, Round.id == QueueEntry.round_id)
            .where(Round.project_id == pid)
            .order_by(Round.index, QueueEntry.position)
        )]


def eval_ids(wb: Workbench, pid: int) -> set[int]:
    with wb.db.read() as s:
        return set(s.scalars(select(Item.id).where(Item.project_id == pid, Item.split == "eval")))


def queued_jobs(wb: Workbench, pid: int) -> list[tuple[str, int | None, str]]:
    """(kind, round index, state) of every job, oldest first."""
    index_of = {r.id: r.index for r in wb.rounds(pid)}
    with wb.db.read() as s:
        return [(j.kind, index_of.get(j.round_id), j.state)
                for j in s.scalars(select(Job).where(Job.project_id == pid).order_by(Job.id))]


def margin_scores(wb: Workbench, pid: int, item_ids: list[int], round_index: int) -> np.ndarray:
    """The margin strategy's score (1 - (p1 - p2)) of items under the head trained in round `round_index`."""
    with wb.db.read() as s:
        round_id = next(r.id for r in wb.rounds(pid) if r.index == round_index)
        artifact = latest_artifact(s, pid, "predictions")
        assert artifact.round_id == round_id
        probs, ids = load_matrix(artifact)
    row_of = {int(i): r for r, i in enumerate(ids)}
    top2 = np.sort(probs[[row_of[i] for i in item_ids]], axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def assert_never_twice_and_eval_apart(wb: Workbench, pid: int) -> None:
    rows = entries(wb, pid)
    live = Counter(item_id for _, item_id, _, _, state in rows if state != "dropped")
    assert max(live.values()) == 1  # no item waits in, or was answered from, two queue entries
    evals = eval_ids(wb, pid)
    assert ({item_id for _, item_id, arm, _, state in rows if arm == "eval" and state not in ("skipped", "dropped")}
            <= evals)
    assert not {item_id for _, item_id, arm, _, state in rows if arm != "eval" and state != "dropped"} & evals
    for r in wb.rounds(pid):
        assert not {int(e[0]) for e in r.ranked_ahead or []} & evals  # nor ranked ahead


def test_next_round_is_claimable_right_after_the_last_label_and_filled_by_the_new_head(settings: Settings) -> None:
    wb, pid, worker, gold = make(settings)
    round0 = wb.rounds(pid)[0]
    ahead = [int(e[0]) for e in round0.ranked_ahead]
    assert len(ahead) == 5 and all(e[1] == "random" for e in round0.ranked_ahead)
    assert not set(ahead) & {item_id for _, item_id, _, _, _ in entries(wb, pid)}  # ranked beyond, not queued

    task = label_until_round(wb, pid, gold, 1)
    # The last label of round 0 opened round 1 in the same transaction: its first item is handed out before any
    # job ran (the train job of round 0 is still queued).
    assert task is not None and task.round_index == 1 and task.item_id == ahead[0] and task.arm == "random"
    r0, r1 = wb.rounds(pid)
    assert (r0.state, r1.state) == ("training", "labeling")
    assert (r1.picked_ahead, r1.picked_ahead_by, r1.awaiting_selection) == (5, 0, True)
    assert "picked ahead from round 0's ranking" in r1.note
    assert queued_jobs(wb, pid)[-1] == ("train", 0, "queued")  # round 1's own select job waits for the head
    assert not [j for j in queued_jobs(wb, pid) if j[:2] == ("select", 1)]
    row = wb.round_table(pid)[1]
    assert (row.picked_ahead, row.picked_ahead_by, row.awaiting_selection) == (5, 0, True)
    # The label page's look-ahead (storage.answers.claim_ahead, K=5) gets the five at once.
    with wb.db.write() as s:
        held = answers.claim_ahead(s, pid, "page", k=5)
    assert [c.item_id for c in held] == ahead[1:]  # the first is held by ANNOTATOR
    with wb.db.write() as s:
        for claim in held:
            queue.release(s, claim.entry_id, "page")

    # Labeling all five before the head is trained does not send round 1 to training: it waits for its selection.
    task = label_until_round(wb, pid, gold, 2)
    assert task is None and wb.rounds(pid)[1].state == "labeling"
    assert [e[4] for e in entries(wb, pid) if e[0] == 1] == ["labeled"] * 5
    with pytest.raises(WorkbenchError, match="picked ahead"):
        wb.close_round(pid)

    assert worker.run_once()  # the train job of round 0, which queues round 1's select job
    kinds = queued_jobs(wb, pid)
    assert kinds[-2:] == [("train", 0, "done"), ("select", 1, "queued")]
    assert worker.run_once()
    r1 = wb.rounds(pid)[1]
    assert (r1.state, r1.awaiting_selection, r1.picked_ahead) == ("labeling", False, 5)
    assert "5 more picked with the new head" in r1.note
    round1 = [e for e in entries(wb, pid) if e[0] == 1]
    assert [e[2] for e in round1] == ["random"] * 5 + ["margin"] * 5  # filled to its size
    fresh = [e[1] for e in round1[5:]]
    np.testing.assert_allclose([e[3] for e in round1[5:]], margin_scores(wb, pid, fresh, 0), rtol=1e-5)
    assert len(r1.ranked_ahead) == 5  # and ranked round 2's first items with that head
    assert_never_twice_and_eval_apart(wb, pid)

    # Round 2 begins with round 1's ranking: scored by round 0's head (the one round 1 selected with).
    task = label_until_round(wb, pid, gold, 2)
    assert task.round_index == 2
    r2 = wb.rounds(pid)[2]
    assert (r2.picked_ahead, r2.picked_ahead_by, r2.awaiting_selection) == (5, 1, True)
    round2 = [e for e in entries(wb, pid) if e[0] == 2]
    assert [e[1] for e in round2] == [int(e[0]) for e in r1.ranked_ahead]
    assert all(e[2] == "margin" for e in round2)
    np.testing.assert_allclose([e[3] for e in round2], margin_scores(wb, pid, [e[1] for e in round2], 0), rtol=1e-5)
    drain(worker)
    assert [e[4] for e in entries(wb, pid) if e[0] == 2].count("pending") + 1 == 10
    assert [c.labels for c in wb.chart_data(pid)] == [10 + 5, 20]  # what each head was trained on
    assert eval_ids(wb, pid) <= set(wb.labels(pid)) and len(eval_ids(wb, pid)) == 10
    assert_never_twice_and_eval_apart(wb, pid)


def test_a_rerun_of_each_handler_adds_nothing(settings: Settings) -> None:
    wb, pid, worker, gold = make(settings)
    label_until_round(wb, pid, gold, 1)
    drain(worker)  # train round 0, fill round 1
    label_until_round(wb, pid, gold, 2)
    drain(worker)  # train round 1, fill round 2
    before = (entries(wb, pid), [(r.index, r.state, r.note, r.ranked_ahead, r.picked_ahead, r.awaiting_selection)
                                 for r in wb.rounds(pid)], len(queued_jobs(wb, pid)))
    ctx = JobContext(db=wb.db, home=settings.home, device="cpu", progress=lambda fraction, message: None)
    with wb.db.read() as s:
        done = list(s.scalars(select(Job).where(Job.project_id == pid, Job.kind.in_(("select", "train")))))
    assert Counter(j.kind for j in done) == {"select": 3, "train": 2}
    for job in done:  # as a worker that died after the commit would have them run again
        message = job_kinds.handler(job.kind)(job, ctx)
        assert "nothing" in message
    after = (entries(wb, pid), [(r.index, r.state, r.note, r.ranked_ahead, r.picked_ahead, r.awaiting_selection)
                                for r in wb.rounds(pid)], len(queued_jobs(wb, pid)))
    assert after == before
    assert_never_twice_and_eval_apart(wb, pid)


def test_pick_ahead_0_is_the_boundary_of_before(settings: Settings) -> None:
    wb, pid, worker, gold = make(settings, pick_ahead=0)
    assert wb.rounds(pid)[0].ranked_ahead is None
    assert label_until_round(wb, pid, gold, 1) is None  # the annotator waits for the training and the selection
    assert [(r.index, r.state) for r in wb.rounds(pid)] == [(0, "training")]
    drain(worker)
    r0, r1 = wb.rounds(pid)
    assert (r0.state, r1.state, r1.picked_ahead, r1.picked_ahead_by, r1.awaiting_selection) == (
        "done", "labeling", 0, None, False)
    assert [e[2] for e in entries(wb, pid) if e[0] == 1] == ["margin"] * 10
    assert [c.labels for c in wb.chart_data(pid)] == [10]
    assert wb.round_table(pid)[1].picked_ahead == 0
    assert_never_twice_and_eval_apart(wb, pid)


def test_an_early_close_carries_the_eval_items_over_first(settings: Settings,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    wb, pid, worker, gold = make(settings)
    for _ in range(4):  # four of round 0's ten eval items, then close
        task = wb.next_assignment(pid, ANNOTATOR)
        assert task.split == "eval"
        wb.submit(pid, task.entry_id, ANNOTATOR, [gold[task.item_id]])
    wb.close_round(pid)
    round1 = [e for e in entries(wb, pid) if e[0] == 1]
    evals = eval_ids(wb, pid)
    assert [e[2] for e in round1] == ["eval"] * 6 + ["random"] * 5  # the six still unlabeled first, then ahead
    assert {e[1] for e in round1[:6]} == evals - set(wb.labels(pid))

    # While round 1's own selection runs (between its read and its write), the annotator skips an eval item: it
    # returns to the pool (a pick of round 1 now) and a random pool item replaces it in the set and the queue.
    read = select_job._read
    skipped = []

    def read_then_skip(ctx, job):
        view = read(ctx, job)
        if view.fill:
            task = wb.next_assignment(pid, ANNOTATOR)
            assert task.split == "eval"
            wb.skip(pid, task.entry_id, ANNOTATOR)
            skipped.append(task.item_id)
        return view

    monkeypatch.setattr(select_job, "_read", read_then_skip)
    drain(worker)  # train round 0, fill round 1: the open eval items are queued already, nothing twice
    assert len(skipped) == 1 and skipped[0] not in eval_ids(wb, pid) and len(eval_ids(wb, pid)) == 10
    assert not wb.rounds(pid)[1].awaiting_selection
    assert_never_twice_and_eval_apart(wb, pid)
    with wb.db.read() as s:
        picks = round_picks(s, wb.rounds(pid)[1].id)[0]
    assert picks == 10  # filled to its size, the skipped eval item counted: 5 ahead + it + 4 with the new head
    assert sum(1 for e in entries(wb, pid) if e[0] == 1 and e[2] != "eval") == 5 + 4


def test_sequential_strategies_and_other_strategies_do_not_pick_ahead(settings: Settings) -> None:
    wb, pid, worker, gold = make(settings, strategy="galaxy", round_size=6)
    assert wb.rounds(pid)[0].ranked_ahead  # round 0 is random (no model yet): it ranks ahead for round 1 ...
    assert label_until_round(wb, pid, gold, 1) is None  # ... but round 1 is sequential: it opens after training
    assert [r.state for r in wb.rounds(pid)] == ["training"]
    drain(worker)
    assert wb.rounds(pid)[1].picked_ahead == 0
    label_until_round(wb, pid, gold, 2)
    while wb.rounds(pid)[-1].index < 2:
        drain(worker)
        label_until_round(wb, pid, gold, 2)
    assert all(r.ranked_ahead is None for r in wb.rounds(pid)[1:])

    wb, pid, worker, gold = make(settings, name="switch")
    label_until_round(wb, pid, gold, 1)
    drain(worker)
    wb.set_strategy(pid, "entropy")  # round 1 ranked with margin: not round 2's ranking
    assert label_until_round(wb, pid, gold, 2) is None
    drain(worker)
    r2 = wb.rounds(pid)[2]
    assert (r2.strategy, r2.picked_ahead) == ("entropy", 0)
    assert_never_twice_and_eval_apart(wb, pid)
