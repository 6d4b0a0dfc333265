"""The current label with several answers (storage.labels) and adjudication (storage.answers.apply_adjudications,
app.labeling.review_data / receive_review, app/pages/adjudicate.py): agreeing answers give the label, differing
ones make the item disputed (no training, no evaluation, no export) until a reviewer picks the final label on the
label surface, exactly once and append-only; the exports carry the final label and every answer. Real SQLite and
PostgreSQL, the in-process worker, AppTest on the real page, and Chromium on `python -m app start`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from app import labeling, people_admin
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from storage import queue, reviews
from storage.db import Database
from storage.exporters import read_csv_labels
from storage.labels import (
    ADJUDICATED,
    DISPUTED,
    LABELED,
    current_labels,
    disputed_items,
    item_labels,
    labeled_per_split,
)
from storage.models import Annotation, AnswerReceipt, Item, Job, Project, QueueEntry, Round
from tests.conftest import surface
from tests.pg_server import pg_server, pg_url  # noqa: F401  (fixtures)
from tests.test_access import app, go, no_tokens_from_outside, shows_only_login, sign_in, wb  # noqa: F401
from tests.test_overlap import backend_url, batch, odb, overlap_round  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent


def answer(db: Database, pid: int, name: str, value: list[int] | None, seq: int = 1, skip: bool = False) -> int:
    """`name` answers the first entry the label surface holds for them (app.labeling.receive); its entry id."""
    entry = labeling.surface_data(db, pid, name, client_id=f"tab-{name}")["items"][0]["entry_id"]
    result = labeling.receive(db, pid, name, batch(f"tab-{name}", (seq, "skip" if skip else "label", entry, value)))
    assert result["outcomes"][-1]["status"] == "applied", result
    return entry


def review(db: Database, pid: int, reviewer: str, client: str, *answered: tuple) -> list[dict]:
    return labeling.receive_review(db, pid, reviewer, batch(client, *answered))["outcomes"]


def rows_of(db: Database, item_id: int) -> list[tuple[str, str, list | None]]:
    with db.read() as s:
        return [(a.kind, a.annotator, a.value) for a in s.scalars(
            select(Annotation).where(Annotation.item_id == item_id).order_by(Annotation.id))]


def item_of(db: Database, entry_id: int) -> int:
    with db.read() as s:
        return s.get(QueueEntry, entry_id).item_id


# ----- the rule ----------------------------------------------------------------------------------------------------------
def test_agreeing_answers_label_differing_ones_dispute_and_a_decision_settles(db: Database) -> None:
    pid, rid = overlap_round(db, pool=3, overlap=1.0)  # every item: 2 copies
    agree = item_of(db, answer(db, pid, "A", [0], seq=1))
    assert item_of(db, answer(db, pid, "B", [0], seq=1)) == agree
    differ = item_of(db, answer(db, pid, "A", [0], seq=2))
    answer(db, pid, "B", [1], seq=2)
    skipped = item_of(db, answer(db, pid, "A", [2], seq=3))
    answer(db, pid, "B", None, seq=3, skip=True)
    with db.read() as s:
        states = item_labels(s, pid)
        labels = current_labels(s, pid)
        assert (states[agree].status, labels[agree].value) == (LABELED, [0])
        assert (states[skipped].status, labels[skipped].value) == (LABELED, [2])  # a skip gives no answer to compare
        assert states[differ].status == DISPUTED and differ not in labels
        assert states[differ].labels_given() == {"A": [0], "B": [1]}
        assert [state.item_id for state in disputed_items(s, pid)] == [differ]
        assert differ in queue.queued_item_ids(s, pid)  # answered: never picked again while it waits
        assert labeled_per_split(s, pid) == {"pool": 2}
        assert s.get(Round, rid).state == "training"  # every copy answered: the round trained without it
    # B takes their answer back: A's alone is the label; B answers again the same: still agreeing
    with db.write() as s:
        entry = s.scalars(select(QueueEntry.id).where(QueueEntry.item_id == differ, QueueEntry.claimed_by == "B")).one()
    labeling.receive(db, pid, "B", batch("tab-B", (4, "undo", entry, None)))
    with db.read() as s:
        assert current_labels(s, pid)[differ].value == [0]
    labeling.receive(db, pid, "B", batch("tab-B", (5, "label", entry, [0])))
    with db.read() as s:
        assert current_labels(s, pid)[differ].value == [0] and item_labels(s, pid)[differ].status == LABELED
        label = current_labels(s, pid)[agree]
    # a review's relabel (storage.reviews: a label outside the queue) settles an item that two answers agreed on
    with db.write() as s:
        reviews.record_review(s, pid, agree, "rita", "relabel", [2], seen_annotation_id=label.annotation_id)
    with db.read() as s:
        assert current_labels(s, pid)[agree].value == [2] and current_labels(s, pid)[agree].annotator == "rita"
        assert [a.kind for a in item_labels(s, pid)[agree].answers] == ["label", "label", "relabel"]


# ----- adjudication through the surface's receive path -------------------------------------------------------------------
def test_adjudication_through_the_surface_is_stored_exactly_once_and_append_only(odb: Database) -> None:
    pid, _ = overlap_round(odb, pool=2, overlap=1.0)
    first = item_of(odb, answer(odb, pid, "A", [0], seq=1))
    answer(odb, pid, "B", [1], seq=1)
    data = labeling.review_data(odb, pid, "rita", client_id="rev-1")
    assert [i["entry_id"] for i in data["items"]] == [first] and data["items"][0]["chosen_by"] is None
    assert data["items"][0]["caption"] == "0.png · answers: A: a · B: b"
    assert data["progress"] == "1 disputed item to adjudicate" and data["history"] == []

    sent = (1, "label", first, [2])
    assert [o["status"] for o in review(odb, pid, "rita", "rev-1", sent)] == ["applied"]
    assert [o["status"] for o in review(odb, pid, "rita", "rev-1", sent)] == ["duplicate"]  # a resend: no new row
    assert rows_of(odb, first) == [("label", "A", [0]), ("label", "B", [1]), ("adjudicate", "rita", [2])]
    with odb.read() as s:
        label = current_labels(s, pid)[first]
        assert (label.value, label.annotator, label.adjudicated) == ([2], "rita", True)
        assert item_labels(s, pid)[first].status == ADJUDICATED
        receipts = {r.client_id for r in s.scalars(select(AnswerReceipt).where(AnswerReceipt.annotator == "rita"))}
        assert receipts == {"review:rev-1"}  # never mixed with a Label page tab's receipts
    data = labeling.review_data(odb, pid, "rita", client_id="rev-1")
    assert data["items"] == [] and data["acked_seq"] == 1 and "No disputed item" in data["empty_reason"]
    assert [(h["entry_id"], h["label"]) for h in data["history"]] == [(first, "c")]

    # a second reviewer, whose page still showed the item: refused, nothing stored
    refused = review(odb, pid, "sam", "rev-2", (1, "label", first, [0]))
    assert refused[0]["status"] == "refused" and "adjudicated by rita" in refused[0]["reason"]
    # undo: retracted (append-only), disputed again; the item comes back to the queue
    assert [o["status"] for o in review(odb, pid, "rita", "rev-1", (2, "undo", first, None))] == ["applied"]
    assert [k for k, _, _ in rows_of(odb, first)] == ["label", "label", "adjudicate", "retract"]
    with odb.read() as s:
        assert first not in current_labels(s, pid)
    # a second disputed item; a skip sends the first to the end of rita's queue (nothing stored but the receipt)
    second = item_of(odb, answer(odb, pid, "A", [0], seq=2))
    answer(odb, pid, "B", [2], seq=2)
    assert [i["entry_id"] for i in labeling.review_data(odb, pid, "rita")["items"]] == [first, second]
    assert [o["status"] for o in review(odb, pid, "rita", "rev-1", (3, "skip", first, None))] == ["applied"]
    assert [i["entry_id"] for i in labeling.review_data(odb, pid, "rita")["items"]] == [second, first]
    assert [i["entry_id"] for i in labeling.review_data(odb, pid, "sam")["items"]] == [first, second]  # hers only
    assert len(rows_of(odb, first)) == 4
    # an item that is not disputed, a class that does not exist, an item of no project: refused
    outcomes = review(odb, pid, "rita", "rev-1", (4, "label", second, [1]), (5, "label", second, [0]),
                      (6, "label", first, [7]), (7, "label", 10_000, [0]), (8, "undo", second, None))
    assert [o["status"] for o in outcomes] == ["applied", "refused", "refused", "refused", "applied"]
    assert "adjudicated by rita" in outcomes[1]["reason"] and "names no class" in outcomes[2]["reason"]
    assert "not an item of this project" in outcomes[3]["reason"]
    with odb.read() as s:
        assert [state.item_id for state in disputed_items(s, pid)] == [first, second]


# ----- training, evaluation and export ------------------------------------------------------------------------------------
def test_disputed_items_train_and_count_only_once_adjudicated_and_the_export_has_every_answer(settings) -> None:  # noqa: ANN001
    """The demo with overlap (the in-process worker trains): B disagrees with A on one pool and one eval item; the
    round trains on the others and is evaluated without the eval item; both are adjudicated on the review surface
    and the next training uses them; the exports give the final labels and the JSONL every answer."""
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Overlap loop", round_size=6, eval_size=4, overlap=0.5,
                                          overlap_eval=True, pick_ahead=0, auto_next_round=False), "demo")
    worker = Worker(settings, device="cpu", quiet=True)
    while worker.run_once():
        pass
    with wb.db.read() as s:
        gold = {i.id: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == pid))}
        split = {i.id: i.split for i in s.scalars(select(Item).where(Item.project_id == pid))}
    wrong: dict[str, int] = {}
    while (task := wb.next_assignment(pid, "A")) is not None:
        wb.submit(pid, task.entry_id, "A", [gold[task.item_id]])
    while (task := wb.next_assignment(pid, "B")) is not None:
        value = gold[task.item_id]
        if task.split not in wrong:
            wrong[task.split], value = task.item_id, (value + 1) % 10
        wb.submit(pid, task.entry_id, "B", [value])
    assert set(wrong) == {"pool", "eval"}
    with wb.db.read() as s:
        queued = set(s.scalars(select(QueueEntry.item_id).where(QueueEntry.round_id == wb.rounds(pid)[0].id)))
    assert len(queued) == 10
    while worker.run_once():
        pass
    round_ = wb.rounds(pid)[0]
    assert round_.state == "done"
    assert round_.metrics["labels"] == 5 and "on 5 labels, evaluated on 3" in round_.note
    assert set(wb.labels(pid)) == queued - set(wrong.values())
    keys = _keys(wb, pid)
    _, jsonl = wb.export(pid, "jsonl")
    assert {json.loads(line)["path"] for line in jsonl.decode().splitlines()} == {
        keys[i] for i in queued - set(wrong.values())}

    data = labeling.review_data(wb.db, pid, "rita", client_id="rev")
    assert sorted(i["entry_id"] for i in data["items"]) == sorted(wrong.values())
    for seq, item in enumerate(data["items"], start=1):
        review(wb.db, pid, "rita", "rev", (seq, "label", item["entry_id"], [gold[item["entry_id"]]]))
    with wb.db.read() as s:
        assert labeled_per_split(s, pid) == {"pool": 6, "eval": 4}
    job_id = wb.retrain(pid)
    while worker.run_once():
        pass
    with wb.db.read() as s:
        assert "on 6 labels, evaluated on 4" in s.get(Job, job_id).message

    _, jsonl = wb.export(pid, "jsonl")
    lines = {json.loads(line)["path"]: json.loads(line) for line in jsonl.decode().splitlines()}
    for item_id in wrong.values():
        row = lines[keys[item_id]]
        assert row["label"] == str(gold[item_id]) and row["adjudicated"] is True and row["annotator"] == "rita"
        assert [(a["annotator"], a["kind"], a["value"]) for a in row["answers"]] == [
            ("A", "label", str(gold[item_id])), ("B", "label", str((gold[item_id] + 1) % 10)),
            ("rita", "adjudicate", str(gold[item_id]))]
        assert all(a["at"].endswith("+00:00") for a in row["answers"])
    agreed = next(i for i in queued if split[i] == "eval" and i not in wrong.values())
    assert lines[keys[agreed]]["adjudicated"] is False and [a["annotator"] for a in lines[keys[agreed]]["answers"]] == [
        "A", "B"]
    _, csv_data = wb.export(pid, "csv")
    assert {r["path"]: r["label"] for r in read_csv_labels(csv_data)} == {keys[i]: str(gold[i]) for i in queued}
    # Agreement with the final label, from the stored adjudications: A gave the gold label on both, B on neither.
    from app.agreement import agreement

    per = {a.annotator: a for a in agreement(wb.db, pid).per_annotator}
    assert (per["A"].adjudicated, per["A"].adjudicated_n) == (1.0, 2)
    assert (per["B"].adjudicated, per["B"].adjudicated_n) == (0.0, 2)
    _, summary = wb.export(pid, "agreement")  # the summary travels with the labels
    summary = json.loads(summary)
    assert summary["overlap_items"] >= 2 and {a["annotator"] for a in summary["per_annotator"]} == {"A", "B"}
    assert [(p["first"], p["second"]) for p in summary["pairs"]] == [("A", "B")]
    wb.db.dispose()


def _keys(wb: Workbench, pid: int) -> dict[int, str]:
    with wb.db.read() as s:
        return dict(s.execute(select(Item.id, Item.key).where(Item.project_id == pid)).all())


# ----- the page ------------------------------------------------------------------------------------------------------------
def test_the_adjudicate_page_is_a_reviewers_label_surface_on_the_disputed_items(wb: Workbench) -> None:  # noqa: F811
    tokens = {name: people_admin.add(wb.db, name, role)[1]
              for name, role in (("alice", "annotator"), ("bob", "annotator"), ("rita", "reviewer"))}
    pid = wb.project_id("Pets")
    with wb.db.write() as s:
        project = s.get(Project, pid)
        project.overlap, project.overlap_eval = 1.0, True
        queue.add_copies(s, queue.labeling_round(s, pid), project)  # as if round 0 had been queued with overlap
    entry = answer(wb.db, pid, "alice", [0])
    answer(wb.db, pid, "bob", [1])
    at = go(sign_in(app(), tokens["alice"]), "adjudicate")
    assert shows_only_login(at) and "needs the reviewer role" in at.warning[0].value
    at = go(sign_in(app(), tokens["rita"]), "adjudicate")
    assert [t.value for t in at.title] == ["Adjudicate"] and not at.exception
    data = surface(at)
    assert data["annotator"] == "rita" and data["instance"] == "review_surface"
    assert [i["entry_id"] for i in data["items"]] == [item_of(wb.db, entry)]
    assert data["items"][0]["caption"].endswith("· answers: alice: cat · bob: dog")
    assert [c["name"] for c in data["classes"]] == ["cat", "dog"]


# ----- a real browser ---------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed")
def test_two_people_disagree_and_a_reviewer_adjudicates_with_a_key_in_chromium(tmp_path: Path) -> None:
    """`python -m app start`; alice and bob (storage.people, one-time links) label an overlapped round in Chromium,
    bob differs on one item; rita (a reviewer) opens Adjudicate, reads both answers under the image and presses the
    final class's key: the export has it as the final label, with every answer, and no answer was lost."""
    from playwright.sync_api import expect, sync_playwright

    from app.ui import shortcut_keys
    from tests.test_browser import CHROMIUM, _free_port, _http_ok, _wait

    port, home = _free_port(), tmp_path / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{home / 'wb.sqlite'}"}
    for name in ("WORKBENCH_TOKEN", "WORKBENCH_ADMIN_TOKEN"):
        env.pop(name, None)
    home.mkdir(parents=True)
    wb = Workbench(Settings(home=home, db_url=env["WORKBENCH_DB_URL"]))
    for name, role in (("alice", "annotator"), ("bob", "annotator"), ("rita", "reviewer")):
        people_admin.add(wb.db, name, role)
    pid = wb.create_project(ProjectConfig(name="Digits twice", round_size=3, eval_size=1, overlap=1.0,
                                          overlap_eval=True, pick_ahead=0, auto_next_round=False), "demo")
    keys = shortcut_keys(wb.project(pid).classes)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "app", "start", "--no-demo", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def gold_of(entry_id: int) -> int:
        with wb.db.read() as s:
            return s.get(Item, s.get(QueueEntry, entry_id).item_id).gold[0]

    def painted(page, surface_key: str) -> int:
        """The entry (or, on the review surface, the item) painted longer ago than the guard time."""
        page.wait_for_function(
            f"() => {{ const s = globalThis.__labelSurfaces && globalThis.__labelSurfaces.get('{surface_key}'); "
            "return s && s.current && performance.now() - s.paintedAt > s.settings().guard_ms + 10 && "
            "(!s.lastAnswer || performance.now() - s.lastAnswer.at > s.settings().repress_ms + 10); }",
            timeout=120_000)
        return int(page.locator("img.ls-image").get_attribute("data-entry-id"))

    def labels_by(name: str) -> int:
        with wb.db.read() as s:
            return len(s.scalars(select(Annotation).where(Annotation.annotator == name,
                                                          Annotation.kind == "label")).all())

    try:
        _wait(lambda: _http_ok(f"{url}/_stcore/health"), 120, "the Streamlit server")
        _wait(lambda: wb.rounds(pid)[0].state == "labeling", 180, "round 0 selected by the server's worker")
        with wb.db.read() as s:
            entries = len(s.scalars(select(QueueEntry).where(QueueEntry.round_id == wb.rounds(pid)[0].id)).all())
        assert entries == 8  # 3 picks and 1 eval item, twice each
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            pages = {}
            for name in ("alice", "bob"):
                page = browser.new_context().new_page()
                page.set_default_timeout(120_000)
                page.goto(people_admin.link(wb.db, name, url).replace("/?", "/label?"))
                expect(page.get_by_text(f"Signed in as {name} (annotator).")).to_be_visible(timeout=120_000)
                pages[name] = page
            disputed_entry = None
            for n in range(4):
                for name, page in pages.items():
                    entry = painted(page, "label_surface")
                    value = gold_of(entry)
                    if name == "bob" and n == 0:
                        disputed_entry, value = entry, (value + 1) % 10
                    page.keyboard.press(keys[value])
                    _wait(lambda name=name, n=n: labels_by(name) == n + 1, 60, f"{name}'s label {n + 1} stored")
            _wait(lambda: wb.rounds(pid)[0].state != "labeling", 60, "round 0 closed: every copy answered")
            disputed_item = item_of(wb.db, disputed_entry)
            with wb.db.read() as s:
                assert [state.item_id for state in disputed_items(s, pid)] == [disputed_item]

            page = browser.new_context().new_page()
            page.set_default_timeout(120_000)
            page.goto(people_admin.link(wb.db, "rita", url).replace("/?", "/adjudicate?"))
            expect(page.get_by_text("Signed in as rita (reviewer).")).to_be_visible(timeout=120_000)
            assert painted(page, "review_surface") == disputed_item
            caption = page.locator("figcaption.ls-caption").inner_text()
            gold, classes = _gold_item(wb, disputed_item), wb.project(pid).classes
            assert f"alice: {classes[gold]}" in caption and f"bob: {classes[(gold + 1) % 10]}" in caption
            page.keyboard.press(keys[gold])
            _wait(lambda: wb.labels(pid).get(disputed_item) == [gold], 60, "the adjudicated label")
            expect(page.get_by_text("No disputed item is waiting")).to_be_visible(timeout=60_000)
            browser.close()
        assert [(k, who) for k, who, _ in rows_of(wb.db, disputed_item)] == [
            ("label", "alice"), ("label", "bob"), ("adjudicate", "rita")]
        _, jsonl = wb.export(pid, "jsonl")
        row = next(json.loads(line) for line in jsonl.decode().splitlines()
                   if json.loads(line)["path"] == _keys(wb, pid)[disputed_item])
        assert row["label"] == classes[gold] and row["adjudicated"] is True
        assert [(a["annotator"], a["kind"]) for a in row["answers"]] == [
            ("alice", "label"), ("bob", "label"), ("rita", "adjudicate")]
        assert len(jsonl.decode().splitlines()) == 4  # every item has its final label
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        wb.db.dispose()


def _gold_item(wb: Workbench, item_id: int) -> int:
    with wb.db.read() as s:
        return s.get(Item, item_id).gold[0]
