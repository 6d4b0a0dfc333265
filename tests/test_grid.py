"""The grid page: its neighbour math (learners.neighbours against brute-force numpy), its hand-picked queue entries
(storage.hand_picks, exactly-once answers through storage.answers) on a real SQLite project, and the component in
real Chromium on `python -m app start`: grid accept with the wrong thumbnails unticked, a double press of the accept
key, and "More like this" from the Label page."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app import labeling
from app.rounds import after_answer_of
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from learners.neighbours import cosine_neighbours, most_confident
from storage import answers, hand_picks, queue, rounds
from storage.files import latest_artifact, load_matrix
from storage.labels import current_labels
from storage.models import Annotation, AnswerReceipt, Item, QueueEntry
from storage.source_heads import backbone_key
from tests.test_browser import CHROMIUM, _open_page, _wait, app_server

GRID = "globalThis.__labelGrids && globalThis.__labelGrids.get('label_grid_{mode}')"


# ----- learners.neighbours --------------------------------------------------------------------------------------------
def brute_cosine(features: np.ndarray, ids: np.ndarray, item_id: int, candidates: set[int], k: int):
    q = features[list(ids).index(item_id)]
    scored = []
    for row, other in zip(features, ids):
        if other == item_id or other not in candidates or not np.isfinite(row).all() or not row.any():
            continue
        scored.append((-(row @ q) / (np.linalg.norm(row) * np.linalg.norm(q)), int(other)))
    return [(i, -s) for s, i in sorted(scored)[:k]]


def test_cosine_neighbours_equal_brute_force_and_leave_out_what_is_not_a_candidate() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(60, 8))
    features[7] = np.nan  # a file that could not be read
    features[9] = 0.0
    features[11] = features[5] * 3  # the same direction as item 5's: similarity 1
    ids = rng.permutation(np.arange(100, 160))
    seed = int(ids[5])
    labeled_or_eval = {int(i) for i in ids[20:35]}
    candidates = {int(i) for i in ids} - labeled_or_eval
    got = cosine_neighbours(features, ids, seed, candidates, 10)
    want = brute_cosine(features, ids, seed, candidates, 10)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want])
    assert got[0] == (int(ids[11]), pytest.approx(1.0))
    chosen = {i for i, _ in got}
    assert seed not in chosen and not chosen & labeled_or_eval and not chosen & {int(ids[7]), int(ids[9])}
    # every candidate when k is large: the self is never one, even when asked for as a candidate
    everything = cosine_neighbours(features, ids, seed, {int(i) for i in ids}, 1000)
    assert len(everything) == 60 - 3 and seed not in {i for i, _ in everything}
    with pytest.raises(KeyError):
        cosine_neighbours(features, ids, int(ids[7]), candidates, 3)


def test_most_confident_ranks_the_candidates_by_the_class_probability() -> None:
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(4), size=30)
    ids = np.arange(500, 530)
    candidates = set(range(500, 530, 2))
    got = most_confident(probs, ids, 2, candidates, 5)
    order = sorted(candidates, key=lambda i: (-probs[i - 500, 2], i))[:5]
    assert [i for i, _ in got] == order
    assert [p for _, p in got] == [pytest.approx(probs[i - 500, 2]) for i in order]


# ----- storage.hand_picks on a real SQLite project ----------------------------------------------------------------------
def demo(settings: Settings) -> tuple[Workbench, int, Worker]:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Grid digits", eval_size=4, round_size=4), "demo")
    worker = Worker(settings, device="cpu")
    while worker.run_once():
        pass
    return wb, pid, worker


def items_of(wb: Workbench, pid: int) -> dict[int, Item]:
    with wb.db.read() as s:
        return {i.id: i for i in s.scalars(select(Item).where(Item.project_id == pid))}


def hand_label(wb: Workbench, pid: int, annotator: str, client: str, answers_: list[dict], arm: str = "grid"):
    with wb.db.write() as s:
        return answers.apply_hand_labels(s, pid, annotator, client, answers_, arm,
                                         after_answer=after_answer_of)


def test_hand_picks_claim_label_once_and_are_counted(settings: Settings) -> None:
    wb, pid, _worker = demo(settings)
    items = items_of(wb, pid)
    with wb.db.read() as s:
        open_pool = sorted(hand_picks.open_pool_items(s, pid))
        queued = {e.item_id: e for e in s.scalars(select(QueueEntry))}
    evaluation = [i for i, it in items.items() if it.split == "eval"]
    assert open_pool and not set(open_pool) & set(queued) and not set(open_pool) & set(evaluation)
    a, b, c, d = open_pool[:4]

    with wb.db.write() as s, pytest.raises(hand_picks.HandPickError, match="evaluation set"):
        hand_picks.claim_hand_picks(s, pid, "ann", [a, evaluation[0]], "grid")
    round_id = wb.rounds(pid)[-1].id
    with wb.db.read() as s:
        size_before = (queue.pool_picks(s, round_id), rounds.round_picks(s, round_id))
    with wb.db.write() as s:
        picks = hand_picks.claim_hand_picks(s, pid, "bob", [c], "like")  # bob holds c now
    assert [p.item_id for p in picks.claims] == [c] and picks.claims[0].arm == "like"
    with wb.db.read() as s:  # a hand pick is not a strategy's pick: the round's size does not count it
        assert (queue.pool_picks(s, round_id), rounds.round_picks(s, round_id)) == size_before
    while True:  # the evaluation set comes first; then a strategy's pick, labeled on the Label page
        labeled = wb.next_assignment(pid, "carol")
        wb.submit(pid, labeled.entry_id, "carol", items[labeled.item_id].gold)
        if items[labeled.item_id].split == "pool":
            break
    held = wb.next_assignment(pid, "ann")  # a strategy's pick ann holds on the Label page
    assert items[held.item_id].split == "pool"
    with wb.db.write() as s:
        picks = hand_picks.claim_hand_picks(s, pid, "ann", [a, b, c, labeled.item_id, held.item_id, 10**9], "grid")
    assert [p.item_id for p in picks.claims] == [a, b, held.item_id]
    assert set(picks.skipped) == {c, labeled.item_id, 10**9}
    assert "held by bob" in picks.skipped[c] and "labeled already" in picks.skipped[labeled.item_id]
    assert [p.arm for p in picks.claims] == ["grid", "grid", held.arm]  # the strategy's pick stays its pick
    assert picks.claims[2].entry_id == held.entry_id

    gold = {i: it.gold[0] for i, it in items.items()}
    batch = [{"seq": 1, "entry_id": a, "kind": "label", "value": [gold[a]], "seconds": 0.5},
             {"seq": 2, "entry_id": b, "kind": "label", "value": [gold[b]]},
             {"seq": 3, "entry_id": c, "kind": "label", "value": [gold[c]]},  # bob's: refused
             {"seq": 4, "entry_id": d, "kind": "label", "value": [gold[d]]},  # not claimed before: claimed now
             {"seq": 5, "entry_id": evaluation[1], "kind": "label", "value": [0]},
             {"seq": 6, "entry_id": held.item_id, "kind": "label", "value": [gold[held.item_id]]}]
    result = hand_label(wb, pid, "ann", "tab", batch)
    assert [o.status for o in result.outcomes] == ["applied", "applied", "refused", "applied", "refused", "applied"]
    assert result.acked_seq == 6
    # a replay (a rerun, a resend) writes nothing; the same seq for another answer is refused
    again = hand_label(wb, pid, "ann", "tab", [*batch, {"seq": 2, "entry_id": b, "kind": "label", "value": [9]}])
    assert {o.status for o in again.outcomes} <= {"duplicate", "refused"}
    assert sum(o.status == "refused" and "already used" in (o.reason or "") for o in again.outcomes) == 1
    # a second tab asking for a labeled item is refused: nothing is stored twice
    other = hand_label(wb, pid, "ann", "tab-2", [{"seq": 1, "entry_id": a, "kind": "label", "value": [gold[a]]}])
    assert other.outcomes[0].status == "refused" and "labeled already" in other.outcomes[0].reason

    with wb.db.read() as s:
        labels = current_labels(s, pid)
        rows = list(s.scalars(select(Annotation).where(Annotation.annotator == "ann", Annotation.kind == "label")))
        entries = {e.item_id: e for e in s.scalars(select(QueueEntry).where(QueueEntry.item_id.in_([a, b, d])))}
        assert hand_picks.hand_picked_count(s, pid) == 3  # a, b, d; the strategy's pick is not hand-picked
        receipts = list(s.scalars(select(AnswerReceipt).where(AnswerReceipt.client_id == "grid:tab")))
    assert sorted(r.item_id for r in rows) == sorted([a, b, d, held.item_id])
    assert all(labels[i].value == [gold[i]] for i in (a, b, d, held.item_id))
    assert {entries[i].arm for i in (a, b, d)} == {"grid"} and {entries[i].state for i in (a, b, d)} == {"labeled"}
    assert len(receipts) == 6


def test_grid_data_pages_and_more_like_this(settings: Settings) -> None:
    wb, pid, _worker = demo(settings)
    project = wb.project(pid)
    with wb.db.read() as s:
        artifact = latest_artifact(s, pid, "features", backbone=backbone_key(project.backbone))
        open_pool = hand_picks.open_pool_items(s, pid)
    features, ids = load_matrix(artifact)
    seed = sorted(open_pool)[3]
    data = labeling.grid_data(wb.db, pid, "ann", "like", like=seed, options=labeling.GridOptions(size=8))
    want = [i for i, _ in brute_cosine(features, ids, seed, open_pool - {seed}, 7)]
    assert [i["item_id"] for i in data["items"]] == [seed, *want]
    assert data["items"][0]["seed"] and data["arm"] == "like" and data["page_class"] is None  # no model yet
    assert all(i["thumb"].startswith("data:image/") and not i["locked"] for i in data["items"])
    # before the first training the grid by class has nothing to rank
    grid = labeling.grid_data(wb.db, pid, "ann", "grid", page_class=1)
    assert grid["items"] == [] and "No model yet" in grid["empty_reason"]
    # explicit items (a map selection): an evaluation item is shown locked, with the reason
    evaluation = next(i for i, it in items_of(wb, pid).items() if it.split == "eval")
    chosen = labeling.grid_data(wb.db, pid, "ann", "items", item_ids=[seed, evaluation])
    assert [i["item_id"] for i in chosen["items"]] == [seed, evaluation] and chosen["arm"] == "map"
    assert chosen["items"][1]["locked"] and "evaluation" in chosen["items"][1]["locked"]
    with pytest.raises(ValueError):
        labeling.parse_item_ids(",".join(str(i) for i in range(201)))
    assert labeling.parse_item_ids("3, 5,3,x") == [3, 5]
    assert labeling.parse_item_ids("²,7,99999999999999999999,-1") == [7]  # no Unicode digits, no overflow


# ----- the component in real Chromium -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """`python -m app start --no-demo` and a demo project whose round 0 was labeled and trained (predictions)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    pytest.importorskip("playwright.sync_api")
    tmp = tmp_path_factory.mktemp("grid")
    home = tmp / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{home / 'wb.sqlite'}"}
    with app_server(env, tmp / "server.log", "--no-demo") as url:
        wb = Workbench(Settings(home=home, db_url=env["WORKBENCH_DB_URL"]))
        pid = wb.create_project(ProjectConfig(name="Grid digits", eval_size=4, round_size=6), "demo")
        _wait(lambda: wb.rounds(pid) and wb.rounds(pid)[0].state == "labeling", 120, "round 0")
        gold = {i: it.gold[0] for i, it in items_of(wb, pid).items()}
        while wb.rounds(pid)[0].state == "labeling" and (task := wb.next_assignment(pid, "oracle")) is not None:
            wb.submit(pid, task.entry_id, "oracle", [gold[task.item_id]])

        def predicted() -> bool:
            with wb.db.read() as s:
                return latest_artifact(s, pid, "predictions") is not None
        _wait(predicted, 180, "round 0 trained")
        yield {"url": url, "wb": wb, "pid": pid, "gold": gold}
        wb.db.dispose()


def wait_for_page(page, mode: str) -> list[int]:
    """As a person does: wait until a page of thumbnails is painted for more than the guard time; its item ids."""
    grid = GRID.format(mode=mode)
    page.wait_for_function(f"() => {{ const g = {grid}; return g && g.items.length && !g.waiting && "
                           "performance.now() - g.paintedAt > g.settings().guard_ms + 10; }", timeout=90_000)
    return [int(v) for v in page.locator(".lg-cell").evaluate_all("cells => cells.map(c => c.dataset.itemId)")]


def untick_wrong(page, shown: list[int], gold: dict[int, int], page_class: int) -> set[int]:
    """Untick every thumbnail whose gold class is not the page's: by keys (arrows to it, Space) and by clicks, in
    turns; returns the item ids left ticked."""
    cursor = 0
    wrong = [n for n, item in enumerate(shown) if gold[item] != page_class]
    for turn, n in enumerate(wrong):
        if turn % 2 == 0:
            for _ in range(n - cursor):
                page.keyboard.press("ArrowRight")
            page.keyboard.press("Space")
        else:
            page.locator(f".lg-cell[data-item-id='{shown[n]}']").click()
        cursor = n
    ticked = {int(v) for v in page.locator(".lg-cell[data-ticked='1']").evaluate_all(
        "cells => cells.map(c => c.dataset.itemId)")}
    assert ticked == {item for item in shown if gold[item] == page_class}
    return ticked


def label_rows(wb: Workbench, pid: int, annotator: str) -> list[Annotation]:
    with wb.db.read() as s:
        return list(s.scalars(select(Annotation).where(Annotation.project_id == pid, Annotation.annotator == annotator,
                                                       Annotation.kind == "label")))


def check_stored(wb: Workbench, pid: int, annotator: str, gold: dict[int, int], ticked: set[int],
                 unticked: set[int]) -> None:
    _wait(lambda: {r.item_id for r in label_rows(wb, pid, annotator)} >= ticked, 30, "the page's labels")
    rows = label_rows(wb, pid, annotator)
    assert len(rows) == len({r.item_id for r in rows}), "an item labeled twice"
    assert all(r.value == [gold[r.item_id]] for r in rows), "a label that is not the gold of its thumbnail"
    with wb.db.read() as s:
        labels = current_labels(s, pid)
        arms = {e.item_id: e.arm for e in s.scalars(select(QueueEntry).where(QueueEntry.item_id.in_(ticked)))}
    assert not unticked & set(labels), "an unticked thumbnail was labeled"
    assert all(labels[i].value == [gold[i]] for i in ticked) and set(arms.values()) == {"grid"}


def test_grid_accept_stores_the_ticked_thumbnails_and_a_double_press_nothing_more(trained: dict) -> None:
    from playwright.sync_api import sync_playwright

    wb, pid, gold = trained["wb"], trained["pid"], trained["gold"]
    page_class = 1
    with sync_playwright() as pw:
        browser, page = _open_page(pw)
        page.goto(f"{trained['url']}/grid?annotator=grid-user&project={pid}&class={page_class}")
        shown = wait_for_page(page, "grid")
        assert page.locator(".lg-root").get_attribute("data-page-class") == str(page_class)
        ticked = untick_wrong(page, shown, gold, page_class)
        page.keyboard.press("Enter")  # one key for the page
        check_stored(wb, pid, "grid-user", gold, ticked, set(shown) - ticked)
        before = len(label_rows(wb, pid, "grid-user"))

        second = wait_for_page(page, "grid")  # the next page: none of the first page's items again
        assert not set(second) & set(shown)  # labeled, or left unticked: not offered again for this class
        ticked2 = untick_wrong(page, second, gold, page_class)
        page.keyboard.press("Enter")
        page.keyboard.press("Enter")  # a double press: it never accepts the next page
        check_stored(wb, pid, "grid-user", gold, ticked | ticked2, (set(shown) | set(second)) - ticked - ticked2)
        third = wait_for_page(page, "grid")
        grid = GRID.format(mode="grid")
        page.wait_for_function(f"() => {grid}.outbox.length === 0")
        log = page.evaluate(f"() => {grid}.log")
        ignored = page.evaluate(f"() => {grid}.ignored")
        assert len(log) == 2 and [set(e["ticked"]) for e in log] == [ticked, ticked2]
        assert any(e["key"] == "Enter" and e["reason"] in ("saving", "guard") for e in ignored)
        assert len(label_rows(wb, pid, "grid-user")) == before + len(ticked2)
        assert not set(third) & (set(shown) | set(second))
        browser.close()
    with wb.db.read() as s:
        receipts = list(s.scalars(select(AnswerReceipt).where(AnswerReceipt.annotator == "grid-user")))
        assert hand_picks.hand_picked_count(s, pid) >= len(ticked | ticked2)
    assert len(receipts) == len(ticked | ticked2) and {r.status for r in receipts} == {"applied"}


def test_more_like_this_from_the_label_page_opens_the_grid_with_the_neighbours(trained: dict) -> None:
    from playwright.sync_api import sync_playwright

    wb, pid, gold = trained["wb"], trained["pid"], trained["gold"]
    surface = "globalThis.__labelSurfaces && globalThis.__labelSurfaces.get('label_surface')"
    with sync_playwright() as pw:
        browser, page = _open_page(pw)
        page.goto(f"{trained['url']}/label?annotator=like-user&project={pid}")
        page.wait_for_function(f"() => {{ const s = {surface}; return s && s.current && s.current.image; }}",
                               timeout=90_000)
        seed = page.evaluate(f"() => {surface}.current.item_id")
        page.get_by_role("button", name="More like this").click()
        page.wait_for_url(f"**/grid?*like={seed}*", timeout=60_000)
        shown = wait_for_page(page, "like")
        project = wb.project(pid)
        with wb.db.read() as s:
            features, ids = load_matrix(latest_artifact(s, pid, "features", backbone=backbone_key(project.backbone)))
            open_pool = hand_picks.open_pool_items(s, pid)
        want = [i for i, _ in brute_cosine(features, ids, seed, open_pool - {seed}, labeling.GRID_SIZE - 1)]
        assert shown == [seed, *want]
        assert page.locator(f".lg-cell.lg-seed[data-item-id='{seed}']").count() == 1
        # the labeler picks the class for the page (the seed's gold key), unticks the ones that differ, accepts
        page_class = gold[seed]
        page.locator(f".lg-class[data-class-index='{page_class}']").click()
        ticked = untick_wrong(page, shown, gold, page_class)
        page.keyboard.press("Enter")
        _wait(lambda: {r.item_id for r in label_rows(wb, pid, "like-user")} >= ticked, 30, "the neighbours' labels")
        rows = label_rows(wb, pid, "like-user")
        assert {r.item_id for r in rows} == ticked and all(r.value == [gold[r.item_id]] for r in rows)
        with wb.db.read() as s:
            arms = {e.item_id: e.arm for e in s.scalars(select(QueueEntry).where(QueueEntry.item_id.in_(ticked)))}
        assert all(arm == "like" for item, arm in arms.items() if item != seed)  # the seed stays the strategy's
        browser.close()
