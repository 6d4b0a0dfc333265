"""Labels per minute: one item at a time on the Label page vs grid accept on the Grid page, in real Chromium
(Playwright) on `python -m app start` with the demo digits. Prints figures; not a test.

Run: .venv/bin/python benchmarks/bench_grid_accept.py [--items 40] [--pages 4] [--think-ms 700] [--verify-ms MS]

The scripted labeler is a perfect oracle (it reads each item's gold class from the database) that takes a
human-like think time for every decision, drawn from one distribution for both methods: lognormal, median
--think-ms, sigma 0.35 (a few fast glances, a tail of slow ones), one draw per image looked at:
- one at a time: per item, think from the moment it is painted, press the gold class's key (the same key twice in
  a row waits out the surface's re-press window);
- grid accept (every page of one class, --grid-class; the next page comes by itself after each accept): per page,
  per thumbnail in order think (one decision: is it the page's class?; the first from the page's paint) and, when
  it is not, move the cursor to it and press Space; then Enter accepts the page. An unticked thumbnail costs a
  decision and gives no label, so the model's precision for the page's class counts.
Key presses cost what they cost in the browser in both. Rates are per block (10 items one at a time, one page on
the grid; blocks back to back, from the first item or page painted): labels in the block / the time from the end of
the block before to its last answer acknowledged (the outbox empty; for the grid that is the next page built); the
mean over blocks with its standard error, and n = labels.

Setup (not timed): a demo project (eval 10, rounds of --items), round 0 labeled by the oracle through the
workbench, the worker trains it (the grid needs the model's predictions); round 1 is labeled one at a time, the
grid pages take the class each page is asked for, in turn.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from app.settings import Settings  # noqa: E402
from app.ui import shortcut_keys  # noqa: E402
from app.workbench import ProjectConfig, Workbench  # noqa: E402
from storage.files import latest_artifact  # noqa: E402
from storage.models import Annotation, Item, QueueEntry  # noqa: E402
from tests.test_browser import CHROMIUM, _wait, app_server  # noqa: E402

SURFACE = "globalThis.__labelSurfaces && globalThis.__labelSurfaces.get('label_surface')"
GRID = "globalThis.__labelGrids && globalThis.__labelGrids.get('label_grid_grid')"
BLOCK = 10


class Thinker:
    """One think time per decision, the same distribution for both methods."""

    def __init__(self, median_ms: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.median_ms = median_ms

    def think(self, page, since_paint_ms: float = 0.0) -> None:
        """One decision; `since_paint_ms` of it already went by (the image was seen since it was painted)."""
        ms = float(self.median_ms * np.exp(0.35 * self.rng.standard_normal())) - since_paint_ms
        if ms > 0:
            page.wait_for_timeout(ms)


def labels_of(wb: Workbench, pid: int, annotator: str) -> int:
    with wb.db.read() as s:
        return len(list(s.scalars(select(Annotation.id).where(
            Annotation.project_id == pid, Annotation.annotator == annotator, Annotation.kind == "label"))))


def one_at_a_time(browser, url: str, wb: Workbench, pid: int, n: int, thinker: Thinker) -> list[tuple[int, float]]:
    page = browser.new_page()
    page.set_default_timeout(90_000)
    page.goto(f"{url}/label?annotator=bench-one&project={pid}")
    keys = shortcut_keys(wb.project(pid).classes)
    painted = (f"() => {{ const s = {SURFACE}; return s && s.current && performance.now() - s.paintedAt > "
               "s.settings().guard_ms + 10; }")
    page.wait_for_function(painted)
    blocks = []
    done = 0
    last_key, start = None, time.perf_counter()
    while done < n:
        in_block = 0
        while in_block < BLOCK and done < n:
            page.wait_for_function(painted)
            entry = int(page.locator("img.ls-image").get_attribute("data-entry-id"))
            with wb.db.read() as s:
                gold = s.get(Item, s.get(QueueEntry, entry).item_id).gold[0]
            thinker.think(page, page.evaluate(f"() => performance.now() - ({SURFACE}).paintedAt"))
            if keys[gold] == last_key:  # the same key again: past the surface's "did it register?" window
                page.wait_for_function(f"() => {{ const s = {SURFACE}; return performance.now() - "
                                       "s.lastAnswer.at > s.settings().repress_ms + 10; }")
            page.keyboard.press(keys[gold])
            last_key = keys[gold]
            in_block += 1
            done += 1
        page.wait_for_function(f"() => {SURFACE}.outbox.length === 0")
        end = time.perf_counter()
        blocks.append((in_block, end - start))
        start = end
    _wait(lambda: labels_of(wb, pid, "bench-one") >= n, 60, "the one-at-a-time labels stored")
    page.close()
    return blocks


def grid_accept(browser, url: str, wb: Workbench, pid: int, pages: int, thinker: Thinker, gold: dict[int, int],
                page_class: int) -> tuple[list[tuple[int, float]], list[int]]:
    page = browser.new_page()
    page.set_default_timeout(90_000)
    blocks, shown_per_page = [], []
    page.goto(f"{url}/grid?annotator=bench-grid&project={pid}&class={page_class}")
    painted = (f"() => {{ const g = {GRID}; return g && g.items.length && !g.waiting && "
               f"g.pageClass === {page_class} && performance.now() - g.paintedAt > g.settings().guard_ms + 10; }}")
    page.wait_for_function(painted)
    start = time.perf_counter()
    for _ in range(pages):
        page.wait_for_function(painted)  # the next page comes by itself after an accept
        shown = [int(v) for v in page.locator(".lg-cell").evaluate_all("cells => cells.map(c => c.dataset.itemId)")]
        cursor, ticked = 0, 0
        for n, item in enumerate(shown):
            thinker.think(page, page.evaluate(f"() => performance.now() - ({GRID}).paintedAt") if n == 0 else 0.0)
            if gold[item] == page_class:
                ticked += 1
                continue
            for _ in range(n - cursor):
                page.keyboard.press("ArrowRight")
            page.keyboard.press("Space")
            cursor = n
        accepted = page.evaluate(f"() => {GRID}.log.length")
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => {{ const g = {GRID}; return g.outbox.length === 0 && "
                               f"g.log.length === {accepted + 1}; }}")
        end = time.perf_counter()
        blocks.append((ticked, end - start))
        start = end
        shown_per_page.append(len(shown))
    page.close()
    return blocks, shown_per_page


def summary(name: str, blocks: list[tuple[int, float]]) -> str:
    rates = [60 * labels / seconds for labels, seconds in blocks if seconds > 0]
    n = sum(labels for labels, _ in blocks)
    total = sum(seconds for _, seconds in blocks)
    se = statistics.stdev(rates) / len(rates) ** 0.5 if len(rates) > 1 else float("nan")
    return (f"{name:>16}: {statistics.mean(rates):6.1f} labels/min (SE {se:.1f}, {len(rates)} blocks, n = {n} "
            f"labels, overall {60 * n / total:.1f}/min over {total:.0f} s)")


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=40, help="labels one at a time (round 1's size)")
    ap.add_argument("--pages", type=int, default=4, help="grid pages of 20")
    ap.add_argument("--grid-class", type=int, default=8, help="the class of every grid page")
    ap.add_argument("--think-ms", type=float, default=700.0, help="median think time per decision")
    ap.add_argument("--verify-ms", type=float, default=None,
                    help="median think time per grid thumbnail (default: --think-ms, the same decision time); a "
                         "smaller one models a yes/no check being quicker than picking one of the classes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{home / 'wb.sqlite'}"}
        with app_server(env, Path(tmp) / "server.log", "--no-demo") as url:
            wb = Workbench(Settings(home=home, db_url=env["WORKBENCH_DB_URL"]))
            pid = wb.create_project(ProjectConfig(name="Grid bench", eval_size=10, round_size=args.items), "demo")
            with wb.db.read() as s:
                gold = {i.id: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == pid))}
            _wait(lambda: wb.rounds(pid) and wb.rounds(pid)[0].state == "labeling", 180, "round 0")
            while wb.rounds(pid)[0].state == "labeling" and (task := wb.next_assignment(pid, "oracle")) is not None:
                wb.submit(pid, task.entry_id, "oracle", [gold[task.item_id]])

            def ready() -> bool:
                with wb.db.read() as s:
                    trained = latest_artifact(s, pid, "predictions") is not None
                return trained and len(wb.rounds(pid)) > 1 and wb.rounds(pid)[1].state == "labeling"
            _wait(ready, 300, "round 0 trained and round 1 open")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                one = one_at_a_time(browser, url, wb, pid, args.items, Thinker(args.think_ms, args.seed))
                grid, shown = grid_accept(browser, url, wb, pid, args.pages, Thinker(args.verify_ms or args.think_ms, args.seed + 1),
                                          gold, args.grid_class)
                browser.close()
            wb.db.dispose()
    print(f"think time per decision: lognormal, sigma 0.35, median {args.think_ms:.0f} ms one at a time, "
          f"{args.verify_ms or args.think_ms:.0f} ms per grid thumbnail")
    print(summary("one at a time", one))
    print(summary("grid accept", grid))
    kept = sum(labels for labels, _ in grid)
    print(f"grid precision (ticked / shown): {kept}/{sum(shown)} = {kept / max(1, sum(shown)):.0%}")


if __name__ == "__main__":
    main()
