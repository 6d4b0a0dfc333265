"""The label surface: its server side on a real SQLite file (exactly-once answers, refusals, undo across a closed
round, claims ahead, short leases) and the component in real Chromium over a real workbench (double presses, a key
held down, presses right after a rerun, a sidebar pick, a text field, undo): after each, every stored label is the
gold class of the item that was on screen when its key went down; 0 wrong, 0 lost, 0 duplicated."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app import labeling, rounds
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from storage import answers
from storage.labels import current_labels
from storage.models import Annotation, AnswerReceipt, Item, QueueEntry, Round

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


# ----- helpers --------------------------------------------------------------------------------------------------------
def demo(settings: Settings, eval_size: int = 4, round_size: int = 4) -> tuple[Workbench, int, Worker]:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Demo digits", eval_size=eval_size, round_size=round_size), "demo")
    worker = Worker(settings, device="cpu")
    drain(worker)
    return wb, pid, worker


def drain(worker: Worker) -> None:
    while worker.run_once():
        pass


def gold_of_entries(wb: Workbench) -> dict[int, int]:
    """queue entry id -> the gold class of its item (the simulated annotator's answer)."""
    with wb.db.read() as s:
        rows = s.execute(select(QueueEntry.id, Item.gold).join(Item, Item.id == QueueEntry.item_id)).all()
    return {entry: gold[0] for entry, gold in rows}


def label_rows(wb: Workbench, annotator: str) -> list[Annotation]:
    with wb.db.read() as s:
        return list(s.scalars(select(Annotation).where(Annotation.annotator == annotator).order_by(Annotation.id)))


def claim(wb: Workbench, pid: int, annotator: str, k: int = 3, lease: int = 60) -> list[int]:
    with wb.db.write() as s:
        return [c.entry_id for c in answers.claim_ahead(s, pid, annotator, k, lease)]


def apply(wb: Workbench, pid: int, annotator: str, client: str, batch: list[dict]) -> answers.BatchResult:
    with wb.db.write() as s:
        return answers.apply_answers(s, pid, annotator, client, batch, after_answer=rounds.after_answer_of)


# ----- storage ------------------------------------------------------------------------------------------------------
def test_a_replayed_batch_is_applied_exactly_once(settings: Settings) -> None:
    wb, pid, _ = demo(settings)
    gold = gold_of_entries(wb)
    first, second, third = claim(wb, pid, "ann", k=3)
    batch = [{"seq": 1, "entry_id": first, "kind": "label", "value": [gold[first]], "seconds": 0.8},
             {"seq": 2, "entry_id": second, "kind": "skip", "value": None, "seconds": 1.1}]
    result = apply(wb, pid, "ann", "tab-1", batch)
    assert [o.status for o in result.outcomes] == ["applied", "applied"] and result.acked_seq == 2
    rows_before = len(label_rows(wb, "ann"))
    # the same batch again (the acknowledgement was lost), plus a new answer: only the new one is written
    again = apply(wb, pid, "ann", "tab-1", [*reversed(batch), {"seq": 3, "entry_id": third, "kind": "label",
                                                               "value": [gold[third]]}])
    assert [(o.seq, o.status) for o in again.outcomes] == [(1, "duplicate"), (2, "duplicate"), (3, "applied")]
    assert again.acked_seq == 3
    assert len(label_rows(wb, "ann")) == rows_before + 1
    # the same seq naming another answer (a copied tab): refused, nothing written
    reused = apply(wb, pid, "ann", "tab-1", [{"seq": 1, "entry_id": third, "kind": "skip"}])
    assert reused.outcomes[0].status == "refused" and "already used" in reused.outcomes[0].reason
    assert len(label_rows(wb, "ann")) == rows_before + 1
    with wb.db.read() as s:
        assert s.scalar(select(func.count()).select_from(AnswerReceipt)) == 3
        labels = current_labels(s, pid)
        item_of = dict(s.execute(select(QueueEntry.id, QueueEntry.item_id)).all())
    assert {item_of[first]: [gold[first]], item_of[third]: [gold[third]]} == {k: v.value for k, v in labels.items()}
    # a gap: seq 5 arrives before seq 4; the acknowledgement stops at 3 until 4 comes
    more = claim(wb, pid, "ann", k=5)
    fresh = [e for e in more if e not in (first, second, third)]
    gap = apply(wb, pid, "ann", "tab-1", [{"seq": 5, "entry_id": fresh[1], "kind": "label", "value": [0]}])
    assert gap.acked_seq == 3
    filled = apply(wb, pid, "ann", "tab-1", [{"seq": 4, "entry_id": fresh[0], "kind": "label", "value": [0]}])
    assert filled.acked_seq == 5


def test_an_entry_not_held_is_refused_and_never_moved_to_another(settings: Settings) -> None:
    wb, pid, _ = demo(settings)
    mine = claim(wb, pid, "a", k=2)
    theirs = claim(wb, pid, "b", k=2)
    assert not set(mine) & set(theirs)
    result = apply(wb, pid, "a", "tab-a", [{"seq": 1, "entry_id": theirs[0], "kind": "label", "value": [1]}])
    outcome = result.outcomes[0]
    assert outcome.status == "refused" and "held by b" in outcome.reason and result.acked_seq == 1
    assert label_rows(wb, "a") == []
    # a's lease runs out, b takes the entry: a's late answer is refused, a's other entry is untouched
    with wb.db.write() as s:
        answers.claim_ahead(s, pid, "a", 2, lease_seconds=0)
    time.sleep(0.05)
    taken = claim(wb, pid, "b", k=4)
    assert set(mine) <= set(taken)
    late = apply(wb, pid, "a", "tab-a", [{"seq": 2, "entry_id": mine[0], "kind": "label", "value": [2]}])
    assert late.outcomes[0].status == "refused" and label_rows(wb, "a") == []
    with wb.db.read() as s:
        assert s.get(QueueEntry, mine[1]).claimed_by == "b" and s.get(QueueEntry, mine[1]).state == "claimed"
    # bad values are refused in words
    bad = apply(wb, pid, "b", "tab-b", [{"seq": 1, "entry_id": taken[0], "kind": "label", "value": [42]},
                                        {"seq": 2, "entry_id": taken[1], "kind": "label", "value": [1, 2]},
                                        {"seq": 3, "entry_id": taken[2], "kind": "fly"}])
    assert [o.status for o in bad.outcomes] == ["refused"] * 3
    assert "names no class" in bad.outcomes[0].reason and "exactly one" in bad.outcomes[1].reason
    # a replayed refusal is refused again with the same reason, even now that the entry could be answered
    replay = apply(wb, pid, "b", "tab-b", [{"seq": 1, "entry_id": taken[0], "kind": "label", "value": [42]}])
    assert replay.outcomes[0].reason == bad.outcomes[0].reason and label_rows(wb, "b") == []


def test_undo_across_a_closed_round_then_relabel_changes_current_labels(settings: Settings) -> None:
    wb, pid, worker = demo(settings, eval_size=3, round_size=3)
    seq = 0
    answered = []
    first_round = wb.rounds(pid)[0].id
    while wb.rounds(pid)[0].state == "labeling":  # round 0 only (the next round may open ahead of its training)
        entries = claim(wb, pid, "ann", k=5)
        gold = gold_of_entries(wb)
        with wb.db.read() as s:
            entries = [e for e in entries if s.get(QueueEntry, e).round_id == first_round]
        batch = []
        for e in entries:
            seq += 1
            batch.append({"seq": seq, "entry_id": e, "kind": "label", "value": [gold[e]]})
            answered.append(e)
        assert all(o.status == "applied" for o in apply(wb, pid, "ann", "tab", batch).outcomes)
    assert wb.rounds(pid)[0].state == "training"
    drain(worker)  # round 0 trains and is done; round 1 is selected and labeled next
    assert [r.state for r in wb.rounds(pid)] == ["done", "labeling"]
    target = answered[-1]
    with wb.db.read() as s:
        item = s.get(QueueEntry, target).item_id
        assert current_labels(s, pid)[item].value == [gold[target]]
    seq += 1
    undo = apply(wb, pid, "ann", "tab", [{"seq": seq, "entry_id": target, "kind": "undo"}])
    assert undo.outcomes[0].status == "applied" and "round 0 is done" in undo.outcomes[0].note
    with wb.db.read() as s:
        assert item not in current_labels(s, pid)
        entry = s.get(QueueEntry, target)
        assert (entry.state, entry.claimed_by) == ("claimed", "ann")
    held = claim(wb, pid, "ann", k=2)
    assert held[0] == target  # the reopened entry comes first, before round 1's
    data = labeling.surface_data(wb.db, pid, "ann", client_id="tab")
    assert data["items"][0]["entry_id"] == target and data["items"][0]["reopened"] is True
    assert data["acked_seq"] == seq and target not in [h["entry_id"] for h in data["history"]]
    new_value = (gold[target] + 1) % 10
    seq += 1
    relabel = apply(wb, pid, "ann", "tab", [{"seq": seq, "entry_id": target, "kind": "label", "value": [new_value]}])
    assert relabel.outcomes[0].status == "applied" and "next training" in relabel.outcomes[0].note
    with wb.db.read() as s:
        assert current_labels(s, pid)[item].value == [new_value]  # the next training reads current_labels
        assert s.get(QueueEntry, target).state == "labeled"
        assert s.get(Round, s.get(QueueEntry, target).round_id).state == "done"
    # undo with nothing of one's own on the entry is refused
    seq += 1
    other = apply(wb, pid, "someone", "tab-x", [{"seq": 1, "entry_id": target, "kind": "undo"}])
    assert other.outcomes[0].status == "refused" and "no answer of yours" in other.outcomes[0].reason


def test_two_annotators_never_hold_the_same_entry(settings: Settings) -> None:
    wb, pid, _ = demo(settings, eval_size=10, round_size=10)
    held: dict[str, list[list[int]]] = {}
    errors = []

    def work(name: str) -> None:
        try:
            for _ in range(5):
                held.setdefault(name, []).append(claim(wb, pid, name, k=4))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"ann{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = {name: set(claims[-1]) for name, claims in held.items()}
    assert all(len(v) == 4 for v in final.values())
    everyone = [e for v in final.values() for e in v]
    assert len(everyone) == len(set(everyone)) == 16
    for name, claims in held.items():  # each kept what it had: claims ahead are stable between reruns
        assert all(set(c) == final[name] for c in claims)
    with wb.db.read() as s:
        rows = s.execute(select(QueueEntry.id, QueueEntry.claimed_by).where(QueueEntry.state == "claimed")).all()
    assert {e: n for e, n in rows} == {e: n for n, v in final.items() for e in v}


def test_an_expired_lease_returns_the_entry_and_a_heartbeat_keeps_it(settings: Settings) -> None:
    wb, pid, _ = demo(settings)
    gone = claim(wb, pid, "closed-tab", k=2, lease=1)
    kept = claim(wb, pid, "open-tab", k=2, lease=1)
    time.sleep(0.6)
    with wb.db.write() as s:
        assert answers.renew_leases(s, "open-tab", kept + gone, lease_seconds=60) == sorted(kept)
    time.sleep(0.6)
    later = claim(wb, pid, "late", k=4)
    assert set(gone) <= set(later) and not set(kept) & set(later)
    assert later[:2] == gone  # back in queue order
    with wb.db.read() as s:
        assert {s.get(QueueEntry, e).claimed_by for e in kept} == {"open-tab"}
    # the closed tab's answer, arriving late, is refused
    result = apply(wb, pid, "closed-tab", "t", [{"seq": 1, "entry_id": gone[0], "kind": "skip"}])
    assert result.outcomes[0].status == "refused"


def test_surface_data_shape(settings: Settings) -> None:
    wb, pid, _ = demo(settings)
    data = labeling.surface_data(wb.db, pid, "ann", options=labeling.SurfaceOptions(ahead=3, guard_ms=90))
    assert len(data["items"]) == 3 and data["settings"]["guard_ms"] == 90
    item = data["items"][0]
    assert item["image"].startswith("data:image/png;base64,") and item["thumb"].startswith("data:image/")
    assert "/" not in item["caption"] and item["guess"] is None
    assert [c["key"] for c in data["classes"]] == [str(k) for k in range(10)]
    assert data["round"] == {"index": 0, "state": "labeling", "done": 0, "total": 8}
    assert data["acked_seq"] == 0 and data["history"] == []


# ----- the browser ----------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory):
    """The harness script on a free port over a demo project whose round 0 holds 80 entries."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    pytest.importorskip("playwright.sync_api")
    tmp = tmp_path_factory.mktemp("surface")
    home = tmp / "home"
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'wb.sqlite'}")
    home.mkdir(parents=True)
    wb, pid, _ = demo(settings, eval_size=40, round_size=40)
    port = _free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": settings.db_url,
           "HARNESS_PROJECT": str(pid)}
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "tests" / "label_surface_harness.py"),
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while not _http_ok(f"http://127.0.0.1:{port}/_stcore/health"):
            assert time.time() < deadline, "the harness server did not start"
            time.sleep(0.3)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            yield {"url": f"http://127.0.0.1:{port}", "wb": wb, "pid": pid, "browser": browser}
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class Typist:
    """A fast annotator: reads the entry on screen (the image's data-entry-id), presses its gold class's key."""

    def __init__(self, harness: dict, annotator: str) -> None:
        self.harness, self.annotator = harness, annotator
        self.wb: Workbench = harness["wb"]
        self.page = harness["browser"].new_page()
        self.page.set_default_timeout(30_000)
        self.page.goto(f"{harness['url']}/?annotator={annotator}")
        self.page.wait_for_function(
            "() => { const s = globalThis.__labelSurfaces && globalThis.__labelSurfaces.get('label_surface');"
            " return s && s.current && s.paintedAt < Infinity; }")
        self.page.wait_for_timeout(200)  # past the guard time after the first image is painted
        self.pressed_on: list[int] = []  # the entry on screen at each press

    def shown(self) -> int | None:
        entry = self.page.locator("img.ls-image").get_attribute("data-entry-id")
        return int(entry) if entry else None

    def gold(self, entry_id: int) -> int:
        with self.wb.db.read() as s:
            return s.get(Item, s.get(QueueEntry, entry_id).item_id).gold[0]

    def wait_for_item(self) -> None:
        """As a person does: wait until an item is on screen and was painted more than the guard time ago."""
        self.page.wait_for_function(
            "() => { const s = globalThis.__labelSurfaces.get('label_surface');"
            " return s.current && performance.now() - s.paintedAt > s.settings().guard_ms + 10 && (!s.lastAnswer || performance.now() - s.lastAnswer.at > s.settings().repress_ms + 10); }")

    def press_gold(self, wait: bool = True) -> int | None:
        """Press the gold key of the item on screen (with wait=False at once, even if nothing is on screen)."""
        if wait:
            self.wait_for_item()
        entry = self.shown()
        self.pressed_on.append(entry)
        self.page.keyboard.press(str(self.gold(entry)) if entry is not None else "0")
        return entry

    def state(self, expr: str):
        return self.page.evaluate(f"() => {{ const s = globalThis.__labelSurfaces.get('label_surface'); return {expr}; }}")

    def settle(self) -> None:
        """Wait until every answer given is acknowledged by the server."""
        self.page.wait_for_function(
            "() => globalThis.__labelSurfaces.get('label_surface').outbox.length === 0", timeout=30_000)

    def check(self) -> dict:
        """0 wrong, 0 lost, 0 duplicated: compare the database with the presses and with the client's log."""
        self.settle()
        log = self.state("s.log")
        assert all(e["shown"] == e["entry_id"] for e in log if e["kind"] != "undo")  # the entry painted
        rows = label_rows(self.wb, self.annotator)
        retracted = {r.replaces_id for r in rows if r.kind == "retract"}
        live = [r for r in rows if r.kind == "label" and r.id not in retracted]
        per_entry: dict[int, int] = {}
        for r in rows:
            if r.kind == "label":
                per_entry[r.queue_entry_id] = per_entry.get(r.queue_entry_id, 0) + 1
        undone = {e["entry_id"] for e in log if e["kind"] == "undo"}
        assert all(n == 1 or e in undone for e, n in per_entry.items()), f"duplicated labels: {per_entry}"
        wrong = [r.queue_entry_id for r in live if r.value != [self.gold(r.queue_entry_id)]]
        assert wrong == [], f"labels that are not the gold class of the item on screen: {wrong}"
        assert {r.queue_entry_id for r in live} <= set(self.pressed_on), "a label on an item never on screen"
        accepted = {}
        for e in log:
            if e["kind"] == "label":
                accepted[e["entry_id"]] = True
            elif e["kind"] == "undo":
                accepted.pop(e["entry_id"], None)
        assert set(accepted) == {r.queue_entry_id for r in live}, "lost answers"
        with self.wb.db.read() as s:
            receipts = s.scalars(select(AnswerReceipt).where(AnswerReceipt.annotator == self.annotator)).all()
        assert all(r.status == "applied" for r in receipts), [r.reason for r in receipts if r.status != "applied"]
        return {"live": len(live), "ignored": self.state("s.ignored")}


@pytest.mark.parametrize("gap_ms", [20, 40, 200])
def test_double_presses(harness: dict, gap_ms: int) -> None:
    typist = Typist(harness, f"double-{gap_ms}")
    for _ in range(4):
        typist.press_gold()
        typist.page.wait_for_timeout(gap_ms)
        typist.press_gold(wait=False)  # a bounce, or a "did it register?" press: on whatever is on screen now
        typist.page.wait_for_timeout(250)
    result = typist.check()
    guard = typist.state("s.settings().guard_ms")
    presses = [e for e in typist.state("s.log") if e["kind"] == "label"]
    guarded = [e for e in result["ignored"] if e["reason"] in ("guard", "nothing on screen")]
    repressed = [e for e in result["ignored"] if e["reason"] == "re-press"]  # the same key again: next item's
    # The rule, whatever the machine's load did to the gaps: a press counts only on an item painted for at least
    # the guard time; every other press of the 8 was ignored, none was lost.
    assert all(e["since_paint"] >= guard for e in presses)
    assert all(e["reason"] == "nothing on screen" or e["since_paint"] < guard for e in guarded)
    assert result["live"] == len(presses) and result["live"] + len(guarded) + len(repressed) == 8
    assert result["live"] >= 4  # each first press came on an item painted long before
    if gap_ms < guard:
        assert len(guarded) >= 1  # at a bounce's speed at least one second press fell in the guard time
    typist.page.close()


def test_a_key_held_down_labels_once(harness: dict) -> None:
    typist = Typist(harness, "holder")
    for _ in range(3):
        typist.wait_for_item()
        entry = typist.shown()
        typist.pressed_on.append(entry)
        key = str(typist.gold(entry))
        typist.page.keyboard.down(key)
        for _repeat in range(8):  # the OS auto-repeat: keydown events with repeat set
            typist.page.wait_for_timeout(30)
            typist.page.keyboard.down(key)
        typist.page.keyboard.up(key)
        typist.page.wait_for_timeout(200)
    result = typist.check()
    assert result["live"] == 3
    assert len([e for e in result["ignored"] if e["reason"] == "auto-repeat"]) == 24
    typist.page.close()


def test_presses_right_after_a_rerun_and_during_reruns(harness: dict) -> None:
    typist = Typist(harness, "rerunner")
    for _ in range(4):
        typist.wait_for_item()
        typist.page.get_by_role("button", name="Rerun").click()
        typist.press_gold(wait=False)  # while the page reruns
        typist.page.wait_for_timeout(130)
    for _ in range(8):  # a fast typist: each answer's batch reruns the page while the next key goes down
        typist.press_gold()
    result = typist.check()
    assert result["live"] == 12, (result["ignored"], typist.pressed_on, typist.state("s.log"))
    typist.page.close()


def test_keys_after_a_sidebar_pick_label_and_a_text_field_keeps_its_keys(harness: dict) -> None:
    typist = Typist(harness, "sidebar")
    page = typist.page
    page.get_by_label("Notes").fill("")
    page.get_by_label("Notes").press_sequentially("123")  # typing in a text field labels nothing
    assert typist.state("s.log.length") == 0 and page.get_by_label("Notes").input_value() == "123"
    page.locator("[data-testid='stSelectbox']").click()
    page.get_by_role("option", name="another project").click()
    page.wait_for_timeout(300)
    typist.press_gold()  # straight after the pick: the key labels, it does not type into the box
    page.wait_for_timeout(200)
    typist.press_gold()
    result = typist.check()
    assert result["live"] == 2
    assert page.locator("[data-testid='stSelectbox']").inner_text().count("No results") == 0
    page.close()


def test_undo_walks_back_and_relabel(harness: dict) -> None:
    typist = Typist(harness, "undoer")
    page = typist.page
    first = [typist.press_gold() for _ in range(1)]
    page.wait_for_timeout(150)
    for _ in range(2):
        first.append(typist.press_gold())
        page.wait_for_timeout(150)
    typist.settle()
    typist.wait_for_item()
    page.keyboard.press("u")
    typist.wait_for_item()
    assert typist.shown() == first[2]  # the last item answered is back on screen at once
    page.keyboard.press("Backspace")
    typist.wait_for_item()
    assert typist.shown() == first[1]  # and the one before it
    typist.press_gold()  # relabel the item brought back
    page.wait_for_timeout(150)
    assert typist.shown() == first[2]
    typist.press_gold()
    result = typist.check()
    assert result["live"] == 3
    history = page.locator(".ls-hist")
    assert history.count() == 3
    page.close()
