"""A real browser on the README's main command: label the demo's evaluation set and two rounds with the keyboard, undo once, see round 2 begin
with a retrained model and the chart updated, download the ImageFolder zip and compare it with the database."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import select

from app.settings import Settings
from app.workbench import DEMO_PROJECT, Workbench
from storage.models import Item

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ANNOTATOR = "browser-user"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _open_page(pw):
    """Debian's chromium, headless, and a page with generous timeouts (CI machines are slow)."""
    browser = pw.chromium.launch(
        executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    )
    page = browser.new_page(accept_downloads=True)
    page.set_default_timeout(60_000)
    return browser, page


def _settle(page) -> None:
    """Wait until Streamlit has finished running the page script (its 'running' indicator is gone)."""
    running = page.locator("[data-testid='stStatusWidgetRunningIcon'], [data-testid='stStatusWidgetRunningManIcon']")
    deadline = time.time() + 30
    while running.count() and time.time() < deadline:
        page.wait_for_timeout(100)
    page.wait_for_timeout(150)


SURFACE = "globalThis.__labelSurfaces && globalThis.__labelSurfaces.get('label_surface')"


def painted_entry(page, timeout: float = 90_000) -> int:
    """The queue entry the Label page's surface has painted (img.ls-image's data-entry-id), once it was painted
    longer ago than the guard time (a key pressed earlier is ignored by design)."""
    page.wait_for_function(
        f"() => {{ const s = {SURFACE}; return s && s.current && performance.now() - s.paintedAt > "
        "s.settings().guard_ms + 10 && (!s.lastAnswer || performance.now() - s.lastAnswer.at > "
        "s.settings().repress_ms + 10); }", timeout=timeout)
    return int(page.locator("img.ls-image").get_attribute("data-entry-id"))


def gold_of_entry(wb: Workbench, entry_id: int) -> list[int]:
    from storage.models import QueueEntry

    with wb.db.read() as s:
        return list(s.get(Item, s.get(QueueEntry, entry_id).item_id).gold)


def item_of_entry(wb: Workbench, entry_id: int) -> int:
    from storage.models import QueueEntry

    with wb.db.read() as s:
        return s.get(QueueEntry, entry_id).item_id


@contextmanager
def app_server(env: dict[str, str], log_path: Path, *args: str) -> Iterator[str]:
    """`python -m app start --port <free> *args` with `env`, its output in `log_path`; yields its address once the
    server answers, and stops it (as Ctrl-C does: the launcher stops its worker too) on the way out."""
    port = _free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "app", "start", "--port", str(port), *args], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: _http_ok(f"http://127.0.0.1:{port}/_stcore/health"), 90, "the Streamlit server")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def workbench_server(tmp_path: Path, request: pytest.FixtureRequest):
    """`python -m app start` (what ./workbench.sh runs) on a free port, with its own home folder."""
    extra = getattr(request, "param", [])
    home = tmp_path / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{home / 'wb.sqlite'}"}
    with app_server(env, tmp_path / "server.log", *extra) as url:
        yield url, Settings(home=home, db_url=env["WORKBENCH_DB_URL"]), tmp_path / "server.log"


def test_label_the_demo_with_the_keyboard_then_chart_and_zip(workbench_server, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, settings, server_log = workbench_server
    wb = Workbench(settings)
    pid = wb.project_id(DEMO_PROJECT)
    with wb.db.read() as s:
        items = list(s.scalars(select(Item).where(Item.project_id == pid)))
    gold = {i.id: i.gold[0] for i in items}
    round0 = sum(i.split == "eval" for i in items) + wb.project(pid).round_size  # the eval set first, then round 0
    total = round0 + 10

    with sync_playwright() as pw:
        browser, page = _open_page(pw)
        page.goto(f"{url}/label?annotator={ANNOTATOR}")
        pressed = 0
        undone = False
        while pressed < total:
            round_index = 0 if pressed < round0 else 1
            done = pressed if pressed < round0 else pressed - round0
            expect(page.get_by_text(f"round {round_index}: {done} of")).to_be_visible(timeout=90_000)
            entry = painted_entry(page)  # the item on screen; the oracle reads its gold label to pick the key
            if pressed == 5 and not undone:
                page.keyboard.press(str((gold_of_entry(wb, entry)[0] + 1) % 10))  # a wrong key ...
                expect(page.get_by_text(f"round 0: {done + 1} of")).to_be_visible()
                painted_entry(page)
                page.keyboard.press("u")  # ... taken back with the undo key: the item is on screen again
                page.wait_for_function(f"() => {SURFACE}.current && {SURFACE}.current.entry_id === {entry}")
                _wait(lambda: len(wb.labels(pid)) == pressed, 30, "the wrong label taken back")
                undone = True
                continue
            page.keyboard.press(str(gold_of_entry(wb, entry)[0]))
            pressed += 1
            _wait(lambda: len(wb.labels(pid)) == pressed, 30, f"label {pressed} in the database")
            assert wb.labels(pid)[item_of_entry(wb, entry)] == gold_of_entry(wb, entry)

        rounds = _wait(lambda: (r := wb.rounds(pid)) and len(r) == 3 and r[1].state == "done"
                       and r[2].state == "labeling" and r, 120, "round 1 trained and round 2 open")
        assert [r.state for r in rounds] == ["done", "done", "labeling"]
        expect(page.get_by_text("round 2: 0 of")).to_be_visible(timeout=90_000)
        expect(page.get_by_text("Model guess:")).to_be_visible()

        page.goto(f"{url}/dashboard?annotator={ANNOTATOR}")
        expect(page.get_by_text("Accuracy per label spent")).to_be_visible()
        expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible()
        assert len(wb.chart_data(pid)) == 2

        page.goto(f"{url}/export?annotator={ANNOTATOR}")
        page.get_by_role("button", name="Build ImageFolder zip").click()
        with page.expect_download() as download_info:
            page.get_by_role("button", name="ImageFolder zip").filter(has_text="MB").click()
        zip_path = tmp_path / "download.zip"
        download_info.value.save_as(zip_path)
        page.screenshot(path=str(tmp_path / "export.png"))
        browser.close()

    labels = wb.labels(pid)
    assert len(labels) == total
    with wb.db.read() as s:
        items = {i.id: i for i in s.scalars(select(Item).where(Item.project_id == pid))}
    expected = {
        ("eval" if items[i].split == "eval" else "train", str(v[0]), Path(items[i].key).name) for i, v in labels.items()
    }
    with zipfile.ZipFile(zip_path) as zf:
        got = {tuple(name.split("/")) for name in zf.namelist() if name.endswith(".png")}
        for name in zf.namelist():
            if name.endswith(".png"):
                _, label, base = name.split("/")
                original = next(it for it in items.values() if Path(it.key).name == base)
                assert zf.read(name) == (Path(wb.project(pid).data_root) / original.key).read_bytes()
    assert got == expected
    assert all(gold[i] == v[0] for i, v in labels.items())  # the undone wrong label left no trace in the labels


@pytest.mark.parametrize("workbench_server", [["--no-demo"]], indirect=True)
def test_a_galaxy_project_gets_its_next_item_right_after_each_label(workbench_server) -> None:
    from playwright.sync_api import expect, sync_playwright

    from app.workbench import ProjectConfig
    from storage.models import QueueEntry

    url, settings, _log = workbench_server
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Galaxy digits", strategy="galaxy", round_size=4, eval_size=4), "demo")
    with wb.db.read() as s:
        gold = {i.id: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == pid))}
    _wait(lambda: wb.rounds(pid)[0].state == "labeling", 90, "round 0")
    while (task := wb.next_assignment(pid, "oracle")) is not None:
        wb.submit(pid, task.entry_id, "oracle", [gold[task.item_id]])
    _wait(lambda: len(wb.rounds(pid)) == 2 and wb.rounds(pid)[1].state == "labeling", 90, "round 1 (galaxy)")
    round_id = wb.rounds(pid)[1].id

    def queued() -> int:
        with wb.db.read() as s:
            return len(list(s.scalars(select(QueueEntry.id).where(QueueEntry.round_id == round_id))))

    with sync_playwright() as pw:
        browser, page = _open_page(pw)
        page.goto(f"{url}/label?annotator={ANNOTATOR}")
        for n in range(4):
            expect(page.get_by_text(f"round 1: {n} of")).to_be_visible(timeout=60_000)
            entry = painted_entry(page)
            expect(page.get_by_text("chosen by: galaxy")).to_be_visible()
            page.keyboard.press(str(gold_of_entry(wb, entry)[0]))
            _wait(lambda: len(wb.labels(pid, split="pool")) == 4 + n + 1, 30, f"galaxy label {n + 1}")
            # the queue grows by one pick per label, computed by the worker from every label so far
            _wait(lambda: queued() == min(n + 3, 4), 30, f"galaxy pick {n + 3}")
        _wait(lambda: len(wb.chart_data(pid)) == 2, 90, "round 1 trained")
        browser.close()


def test_simulate_three_strategies_on_the_demo_and_read_the_savings(workbench_server) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, settings, _log = workbench_server
    wb = Workbench(settings)
    pid = wb.project_id(DEMO_PROJECT)
    _wait(lambda: wb.rounds(pid)[0].state == "labeling", 90, "the demo's embedding and round 0")
    with sync_playwright() as pw:
        browser, page = _open_page(pw)
        page.goto(f"{url}/simulate?annotator={ANNOTATOR}")
        expect(page.get_by_text("No finished simulation yet.")).to_be_visible(timeout=60_000)
        rounds = page.get_by_label("Rounds after the seed round (R)")
        rounds.fill("2")
        rounds.press("Tab")
        page.get_by_role("button", name="Start simulation").click()
        expect(page.get_by_text("queued").first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("simulate job")).to_be_visible(timeout=60_000)  # its progress bar
        expect(page.get_by_text("label savings vs random")).to_be_attached(timeout=240_000)  # the savings table
        expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible()
        expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible(timeout=30_000)
        browser.close()
    (result,) = wb.simulations(pid)
    assert result.config["strategies"] == ["random", "margin", "entropy"]
    assert len(result.points) == 3 * 3 * 3  # strategies x seeds x (seed round + 2 rounds)


@pytest.mark.parametrize("workbench_server", [["--no-demo"]], indirect=True)
def test_a_tailor_project_shows_its_arm_panel_after_two_rounds(workbench_server) -> None:
    from playwright.sync_api import expect, sync_playwright

    from app.workbench import ProjectConfig

    url, settings, _log = workbench_server
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Tailor digits", strategy="tailor", round_size=5, eval_size=4), "demo")
    with wb.db.read() as s:
        gold = {i.id: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == pid))}
    _wait(lambda: wb.rounds(pid)[0].state == "labeling", 90, "round 0")
    # round 0 only: round 1 may open (with items picked ahead) as soon as round 0 goes to training
    while wb.rounds(pid)[0].state == "labeling" and (task := wb.next_assignment(pid, "oracle")) is not None:
        wb.submit(pid, task.entry_id, "oracle", [gold[task.item_id]])
    _wait(lambda: len(wb.rounds(pid)) == 2 and wb.rounds(pid)[1].state == "labeling", 120, "round 1 (tailor)")
    with sync_playwright() as pw:
        browser, page = _open_page(pw)
        page.goto(f"{url}/label?annotator={ANNOTATOR}")
        for n in range(5):  # round 1, chosen by TAILOR, labeled with the keyboard
            expect(page.get_by_text(f"round 1: {n} of")).to_be_visible(timeout=60_000)
            entry = painted_entry(page)
            expect(page.get_by_text("chosen by: tailor (")).to_be_visible()
            page.keyboard.press(str(gold_of_entry(wb, entry)[0]))
            _wait(lambda: len(wb.labels(pid, split="pool")) == 5 + n + 1, 30, f"tailor label {n + 1}")
        _wait(lambda: len(wb.chart_data(pid)) == 2, 120, "round 1 trained and folded into TAILOR's posterior")
        page.goto(f"{url}/dashboard?annotator={ANNOTATOR}")
        expect(page.get_by_text("TAILOR: which algorithm suits this data")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Pulls per arm per round")).to_be_visible()
        expect(page.get_by_text("Classes each arm brought in")).to_be_visible()
        expect(page.locator("[data-testid='stVegaLiteChart']")).to_have_count(4, timeout=30_000)
        browser.close()
    pulls = next(block for block in wb.strategy_panels(pid)[0].blocks if block.title == "Pulls per arm per round")
    assert sum(row["pulls"] for row in pulls.rows if row["round"] == 1) == 5


@pytest.mark.parametrize("workbench_server", [["--no-demo"]], indirect=True)
def test_label_tags_with_the_keyboard_on_a_multi_label_project(workbench_server) -> None:
    from playwright.sync_api import expect, sync_playwright

    from app.workbench import ProjectConfig

    url, settings, _log = workbench_server
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Digit tags", task="multi_label", round_size=3, eval_size=2), "demo-tags")
    with wb.db.read() as s:
        gold = {i.id: i.gold for i in s.scalars(select(Item).where(Item.project_id == pid))}
    _wait(lambda: wb.rounds(pid)[0].state == "labeling", 90, "round 0")
    keys = ["1", "2", "3", "4"]  # the four tags' keys, in order
    with sync_playwright() as pw:
        browser, page = _open_page(pw)
        page.goto(f"{url}/label?annotator={ANNOTATOR}")
        for n in range(5):
            expect(page.get_by_text(f"round 0: {n} of 5")).to_be_visible(timeout=60_000)
            entry = painted_entry(page)
            item = item_of_entry(wb, entry)
            if not gold[item]:
                page.keyboard.press("Shift+N")  # none of these
            else:
                for k in gold[item]:
                    page.keyboard.press(keys[k])  # toggles the tag, drawn on its button
                    expect(page.locator(f".ls-class.ls-on[data-class-index='{k}']")).to_be_visible()
                page.keyboard.press("Enter")
            _wait(lambda: item in wb.labels(pid), 30, f"the tags of item {n + 1}")
            assert wb.labels(pid)[item] == gold[item]
        browser.close()
    _wait(lambda: len(wb.chart_data(pid)) == 1, 120, "round 0 trained")
    assert wb.chart_data(pid)[0].mAP is not None
