"""The real Label page (the label surface) in real Chromium on `python -m app start`: double presses, a key held
down, presses during reruns, presses at a round boundary, a sidebar pick followed by keys, two annotators and a
closed tab, undo back across a round boundary and relabel, tags on a multi-label project.

After each: every stored label is the gold class of the item that was on screen when its key went down (the
image's data-entry-id, kept in the surface's log), 0 wrong, 0 lost, 0 duplicated. Assertions wait for conditions
and check the rules (a press counts only on an item painted at least the guard time before), never timings.

One server for the module, with 10 s leases (WORKBENCH_LEASE_SECONDS; the surface heartbeats every 2.5 s), and one
small project per test made through Workbench on the server's database (its worker embeds and selects).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from app.settings import Settings
from app.ui import shortcut_keys
from app.workbench import ProjectConfig, Workbench
from storage.labels import current_labels
from storage.models import Annotation, AnswerReceipt, Item, Job, QueueEntry
from tests.test_browser import CHROMIUM, _free_port, _http_ok, _wait

ROOT = Path(__file__).resolve().parent.parent
LEASE = 10
SURFACE = "globalThis.__labelSurfaces && globalThis.__labelSurfaces.get('label_surface')"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`python -m app start --no-demo` on a free port, its own home, short leases; and one Chromium."""
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("label_page")
    home = tmp / "home"
    port = _free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{home / 'wb.sqlite'}",
           "WORKBENCH_LEASE_SECONDS": str(LEASE)}
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "app", "start", "--no-demo", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: _http_ok(f"http://127.0.0.1:{port}/_stcore/health"), 120, "the Streamlit server")
        settings = Settings(home=home, db_url=env["WORKBENCH_DB_URL"], lease_seconds=LEASE)
        wb = Workbench(settings)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            yield {"url": f"http://127.0.0.1:{port}", "wb": wb, "browser": browser, "log": tmp / "server.log"}
            browser.close()
        wb.db.dispose()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def make_project(server: dict, name: str, round_size: int, eval_size: int, source: str = "demo",
                 task: str = "single_label") -> int:
    wb: Workbench = server["wb"]
    pid = wb.create_project(ProjectConfig(name=name, round_size=round_size, eval_size=eval_size, task=task), source)
    _wait(lambda: wb.rounds(pid) and wb.rounds(pid)[0].state == "labeling", 180, f"round 0 of {name}")
    return pid


class Typist:
    """An annotator in a browser context: reads the entry painted (img.ls-image's data-entry-id) and presses the
    key of its gold class."""

    def __init__(self, server: dict, pid: int, annotator: str, open_at: int | None = None) -> None:
        self.server, self.pid, self.annotator = server, pid, annotator
        self.wb: Workbench = server["wb"]
        self.context = server["browser"].new_context()
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.page.goto(f"{server['url']}/label?annotator={annotator}&project={open_at or pid}")
        self.pressed_on: list[int | None] = []
        self.keys = shortcut_keys(self.wb.project(pid).classes)  # the key of each class, as the page has them

    def surface(self, expr: str):
        return self.page.evaluate(f"() => {{ const s = {SURFACE}; return {expr}; }}")

    def wait_for_item(self, timeout: float = 90_000) -> int:
        """As a person does: wait until an item of this project is painted for more than the guard time."""
        self.page.wait_for_function(
            f"() => {{ const s = {SURFACE}; return s && s.current && s.data && s.data.project_id === {self.pid}"
            " && performance.now() - s.paintedAt > s.settings().guard_ms + 10 && (!s.lastAnswer || performance.now() - s.lastAnswer.at > s.settings().repress_ms + 10); }", timeout=timeout)
        return self.shown()

    def shown(self) -> int | None:
        entry = self.page.locator("img.ls-image").get_attribute("data-entry-id")
        return int(entry) if entry else None

    def gold(self, entry_id: int) -> list[int]:
        with self.wb.db.read() as s:
            return list(s.get(Item, s.get(QueueEntry, entry_id).item_id).gold)

    def press_gold(self, wait: bool = True) -> int | None:
        """Press the gold key of the item on screen (wait=False: at once, on whatever is on screen)."""
        if wait:
            self.wait_for_item()
        entry = self.shown()
        self.pressed_on.append(entry)
        self.page.keyboard.press(self.keys[self.gold(entry)[0]] if entry is not None else self.keys[0])
        return entry

    def settle(self) -> None:
        self.page.wait_for_function(f"() => {SURFACE}.outbox.length === 0", timeout=60_000)

    def check(self, allow_refused: bool = False, late: frozenset[int] = frozenset()) -> dict:
        """0 wrong, 0 lost, 0 duplicated: the database against the presses and the surface's log. `late`: entries
        labeled by a second press that came after the re-press window (the test's key, not the item's gold)."""
        self.settle()
        log = self.surface("s.log")
        assert all(e["shown"] == e["entry_id"] for e in log if e["kind"] != "undo"), "an answer not on screen"
        with self.wb.db.read() as s:
            rows = list(s.scalars(select(Annotation).where(Annotation.annotator == self.annotator,
                                                           Annotation.project_id == self.pid).order_by(Annotation.id)))
            receipts = list(s.scalars(select(AnswerReceipt).where(AnswerReceipt.annotator == self.annotator,
                                                                  AnswerReceipt.project_id == self.pid)))
        retracted = {r.replaces_id for r in rows if r.kind == "retract"}
        live = [r for r in rows if r.kind == "label" and r.id not in retracted]
        undone = {e["entry_id"] for e in log if e["kind"] == "undo"}
        per_entry: dict[int, int] = {}
        for r in rows:
            if r.kind == "label":
                per_entry[r.queue_entry_id] = per_entry.get(r.queue_entry_id, 0) + 1
        assert all(n == 1 or e in undone for e, n in per_entry.items()), f"duplicated labels: {per_entry}"
        wrong = [r.queue_entry_id for r in live
                 if list(r.value) != self.gold(r.queue_entry_id) and r.queue_entry_id not in late]
        assert wrong == [], f"labels that are not the gold of the item on screen: {wrong}"
        accepted: dict[int, bool] = {}
        for e in log:
            if e["kind"] == "label":
                accepted[e["entry_id"]] = True
            elif e["kind"] == "undo":
                accepted.pop(e["entry_id"], None)
        assert set(accepted) == {r.queue_entry_id for r in live}, "lost answers"
        assert {r.queue_entry_id for r in live} - late <= {e for e in self.pressed_on if e is not None}
        if not allow_refused:
            assert all(r.status == "applied" for r in receipts), [r.reason for r in receipts if r.status != "applied"]
        return {"live": len(live), "ignored": self.surface("s.ignored"), "log": log}

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def big(server: dict) -> int:
    """A demo project with 80 entries in round 0 for the press tests."""
    return make_project(server, "presses", round_size=40, eval_size=40)


@pytest.mark.parametrize("gap_ms", [20, 40, 200])
def test_double_presses(server: dict, big: int, gap_ms: int) -> None:
    typist = Typist(server, big, f"double-{gap_ms}")
    for _ in range(4):
        typist.press_gold()
        typist.page.wait_for_timeout(gap_ms)
        typist.press_gold(wait=False)  # a bounce or a "did it register?" press: on whatever is on screen now
        typist.page.wait_for_timeout(250)
    result = typist.check()
    guard = typist.surface("s.settings().guard_ms")
    presses = [e for e in result["log"] if e["kind"] == "label"]
    ignored = [e for e in result["ignored"] if e["reason"] in ("guard", "nothing on screen")]
    repressed = [e for e in result["ignored"] if e["reason"] == "re-press"]  # the same key again: next item's
    # the rule, whatever the load did to the gaps: a press counts only on an item painted for the guard time
    assert all(e["since_paint"] >= guard for e in presses)
    assert all(e["reason"] == "nothing on screen" or e["since_paint"] < guard for e in ignored)
    assert result["live"] == len(presses) and result["live"] + len(ignored) + len(repressed) == 8
    assert result["live"] >= 4
    if gap_ms < guard:  # a quick second press is caught, unless the load stretched every gap past the guard (then
        assert ignored or repressed or result["live"] == 8  # each counted press was painted >= guard: the rule holds)
    typist.close()


def test_the_same_key_again_200_ms_later_never_labels_the_next_item(server: dict, big: int) -> None:
    """"Did it register?": the key of the item just answered, pressed again 200 ms later, when the next image is
    already on screen (longer than the guard time): ignored, so it cannot give the next item that label."""
    typist = Typist(server, big, "represser")
    late: set[int] = set()  # a second press the machine's load delayed past the re-press window counts, by the rule
    for _ in range(4):
        entry = typist.wait_for_item()
        repress = typist.surface("s.settings().repress_ms")
        typist.pressed_on.append(entry)
        key = typist.keys[typist.gold(entry)[0]]
        before = typist.surface("s.log.length")
        typist.page.keyboard.press(key)
        typist.page.wait_for_timeout(200)
        typist.page.keyboard.press(key)  # the same key, whatever the item on screen now is
        typist.page.wait_for_timeout(250)
        answered = typist.surface("s.log")[before:]
        if len(answered) == 2:
            assert answered[1]["at"] - answered[0]["at"] > repress, answered  # only past the window
            late.add(answered[1]["entry_id"])
    result = typist.check(late=frozenset(late))  # 0 wrong, 0 lost, 0 duplicated, against the item on screen
    assert result["live"] == 4 + len(late) and len(late) < 4
    assert len([e for e in result["ignored"] if e["reason"] in ("re-press", "guard")]) == 4 - len(late)
    typist.close()


def test_a_key_held_down_labels_once(server: dict, big: int) -> None:
    typist = Typist(server, big, "holder")
    for _ in range(3):
        entry = typist.wait_for_item()
        typist.pressed_on.append(entry)
        key = str(typist.gold(entry)[0])
        typist.page.keyboard.down(key)
        for _repeat in range(8):  # the OS auto-repeat: keydown events with repeat set
            typist.page.wait_for_timeout(30)
            typist.page.keyboard.down(key)
        typist.page.keyboard.up(key)
        typist.page.wait_for_timeout(200)
    result = typist.check()
    assert result["live"] == 3
    assert len([e for e in result["ignored"] if e["reason"] == "auto-repeat"]) == 24
    typist.close()


def test_presses_during_reruns(server: dict, big: int) -> None:
    """A fast typist: each answer's batch reruns the page (and the heartbeat every 2.5 s) while keys go down."""
    typist = Typist(server, big, "rerunner")
    for _ in range(6):  # a key at once after each paint's guard: the previous answer's rerun is under way
        typist.press_gold()
    for _ in range(3):  # keys while a heartbeat's rerun runs
        typist.wait_for_item()
        typist.surface("s.send(true)")
        typist.press_gold(wait=False)
        typist.page.wait_for_timeout(150)
    result = typist.check()
    pressed = [e for e in typist.pressed_on if e is not None]
    ignored = [e for e in result["ignored"] if e["reason"] == "guard"]
    assert result["live"] + len(ignored) == len(pressed) and result["live"] >= 7, result
    typist.close()


def test_presses_at_a_round_boundary(server: dict) -> None:
    """Keys go on through the last item of round 0 and the next round's first items; none is lost or misplaced."""
    pid = make_project(server, "boundary", round_size=3, eval_size=3)
    wb: Workbench = server["wb"]
    typist = Typist(server, pid, "boundary")
    for _ in range(6):  # the whole of round 0, as fast as the guard allows
        typist.press_gold()
    for _ in range(5):  # keys while the round trains and the next opens: ignored while nothing is on screen
        typist.page.wait_for_timeout(100)
        typist.press_gold(wait=False)
    _wait(lambda: len(wb.rounds(pid)) >= 2 and wb.rounds(pid)[1].state == "labeling", 180, "round 1")
    for _ in range(2):  # the next round's first items
        typist.press_gold()
    result = typist.check()
    assert result["live"] >= 8
    assert len(wb.labels(pid)) == result["live"]
    assert wb.rounds(pid)[0].state in ("training", "done")
    typist.close()


def test_a_sidebar_pick_then_keys_label_without_a_click(server: dict) -> None:
    first = make_project(server, "sidebar A", round_size=2, eval_size=2)
    second = make_project(server, "sidebar B", round_size=3, eval_size=3)
    typist = Typist(server, second, "picker", open_at=first)
    page = typist.page
    page.wait_for_function(f"() => {{ const s = {SURFACE}; return s && s.data && s.data.project_id === {first}; }}")
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first.click()
    page.get_by_role("option", name="sidebar B").click()
    for _ in range(3):  # keys straight after the pick: the focus is still on the select box
        typist.press_gold()
    result = typist.check()
    assert result["live"] == 3
    assert page.get_by_text("No results").count() == 0
    assert len(server["wb"].labels(first)) == 0
    typist.close()


def test_two_annotators_and_a_closed_tab(server: dict) -> None:
    """A closes their tab holding items: those return within the lease and B finishes the round."""
    pid = make_project(server, "two", round_size=4, eval_size=4)
    wb: Workbench = server["wb"]
    a = Typist(server, pid, "ann-a")
    a.press_gold()
    a.settle()
    a_check = a.check()
    with wb.db.read() as s:
        held_by_a = set(s.scalars(select(QueueEntry.id).where(QueueEntry.claimed_by == "ann-a",
                                                              QueueEntry.state == "claimed")))
    assert held_by_a  # claimed ahead
    a.close()  # the tab closes: no more heartbeats
    b = Typist(server, pid, "ann-b")
    while wb.rounds(pid)[0].state == "labeling":
        try:
            b.press_gold()
            b.settle()  # applied: the round's state below is the one after this answer
        except Exception:  # noqa: BLE001 - the round may close while waiting for the next item
            if wb.rounds(pid)[0].state == "labeling":
                raise
    result = b.check()
    assert result["live"] + a_check["live"] == 8
    assert held_by_a <= {e for e in b.pressed_on if e is not None}  # A's items came back to the queue, B took them
    b.close()


def test_undo_back_across_a_round_boundary_and_relabel(server: dict) -> None:
    pid = make_project(server, "undo", round_size=3, eval_size=3)
    wb: Workbench = server["wb"]
    typist = Typist(server, pid, "undoer")
    page = typist.page
    round0 = []
    for n in range(6):
        entry = typist.wait_for_item()
        round0.append(entry)
        typist.pressed_on.append(entry)
        gold = typist.gold(entry)[0]
        page.keyboard.press(str((gold + 1) % 10 if n == 5 else gold))  # the last one of round 0 is wrong
    typist.settle()
    _wait(lambda: len(wb.rounds(pid)) >= 2 and wb.rounds(pid)[0].state == "done"
          and wb.rounds(pid)[1].state == "labeling", 180, "round 0 trained and round 1 open")
    first1 = typist.press_gold()  # round 1's first item
    typist.settle()
    typist.wait_for_item()
    page.keyboard.press("Backspace")  # undo round 1's label
    page.wait_for_function(f"() => {SURFACE}.current && {SURFACE}.current.entry_id === {first1}")
    typist.wait_for_item()
    page.keyboard.press("Control+z")  # and walk back into round 0 (done, trained on)
    page.wait_for_function(f"() => {SURFACE}.current && {SURFACE}.current.entry_id === {round0[-1]}")
    typist.press_gold()  # relabel it, right this time
    typist.settle()
    with wb.db.read() as s:
        item = s.get(QueueEntry, round0[-1]).item_id
        assert current_labels(s, pid)[item].value == typist.gold(round0[-1])
        relabeled_at = s.scalars(select(Annotation.created_at).where(Annotation.item_id == item)
                                 .order_by(Annotation.id.desc())).first()
    while wb.rounds(pid)[1].state == "labeling":  # finish round 1: the next training reads the current labels
        try:
            typist.press_gold()
            typist.settle()
        except Exception:  # noqa: BLE001
            if wb.rounds(pid)[1].state == "labeling":
                raise
    result = typist.check()
    assert result["live"] == 6 + 3
    _wait(lambda: wb.rounds(pid)[1].state == "done", 180, "round 1 trained")
    with wb.db.read() as s:
        train = s.scalars(select(Job).where(Job.project_id == pid, Job.kind == "train", Job.state == "done")
                          .order_by(Job.id.desc())).first()
    assert train.created_at >= relabeled_at  # that training ran on current_labels, which hold the new label
    typist.close()


def test_tags_on_a_multi_label_project(server: dict) -> None:
    pid = make_project(server, "tags", round_size=3, eval_size=2, source="demo-tags", task="multi_label")
    wb: Workbench = server["wb"]
    typist = Typist(server, pid, "tagger")
    page = typist.page
    answered = []
    for _ in range(5):
        entry = typist.wait_for_item()
        typist.pressed_on.append(entry)
        answered.append(entry)
        tags = typist.gold(entry)
        if not tags:
            page.keyboard.press("Shift+N")
        else:
            for k in tags:
                page.keyboard.press(typist.keys[k])
            page.wait_for_function(f"() => {SURFACE}.tags.size === {len(tags)}")
            page.keyboard.press("Enter")
    typist.settle()
    log = typist.surface("s.log")
    assert all(e["shown"] == e["entry_id"] for e in log)
    with wb.db.read() as s:
        item_of = {e: s.get(QueueEntry, e).item_id for e in answered}
    labels = wb.labels(pid)
    assert {e: labels[item_of[e]] for e in answered} == {e: typist.gold(e) for e in answered}
    assert len([e for e in log if e["kind"] == "label"]) == 5
    typist.close()
