"""Access tokens for the web UI (app.ui.require_access), driven with AppTest and once with a real browser.

WORKBENCH_TOKEN (annotators) opens the "annotator" pages of app/page_table.py (Projects' list, Label, Rounds' table,
Dashboard, Jobs); WORKBENCH_ADMIN_TOKEN also opens project creation, the round actions and strategy changes, job
retries and the "admin" pages (Simulate, Export). With only WORKBENCH_TOKEN set, that one token opens everything;
with neither set nothing is asked (tests/test_pages.py runs that way).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from app.page_table import PAGES as PAGE_TABLE
from app.page_table import page as page_spec
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from storage import jobs
from storage.db import sqlite_url
from storage.models import Annotation

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 30
USER_TOKEN = "user-token-éß 1"  # non-ASCII on purpose: compared as UTF-8 bytes
ADMIN_TOKEN = "admin-token-2"
PAGES = [spec.url_path for spec in PAGE_TABLE]
ANNOTATOR_PAGES = [spec.url_path for spec in PAGE_TABLE if spec.role == "annotator"]
ADMIN_PAGES = [spec.url_path for spec in PAGE_TABLE if spec.role == "admin"]
TITLES = {spec.url_path: spec.title for spec in PAGE_TABLE}


def _run_worker() -> None:
    from app.worker import Worker

    worker = Worker(device="cpu")
    while worker.run_once():
        pass


@pytest.fixture(autouse=True)
def no_tokens_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the tokens it means (autouse fixtures run first)."""
    for name in ("WORKBENCH_TOKEN", "WORKBENCH_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def wb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    """A workbench with one small project ('Pets', 2 classes) whose round 0 is queued for labeling."""
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url(home / "workbench.sqlite"))
    folder = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")
    workbench = Workbench(Settings.from_env())
    workbench.create_project(ProjectConfig(name="Pets", round_size=3, eval_size=2, pick_ahead=0), folder)
    _run_worker()  # embed, select round 0
    yield workbench
    workbench.db.dispose()


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TOKEN", USER_TOKEN)
    monkeypatch.setenv("WORKBENCH_ADMIN_TOKEN", ADMIN_TOKEN)


def app(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(page_spec(page).file).run()
    assert not at.exception, (page, [e.value for e in at.exception])
    return at


def sign_in(at: AppTest, token: str) -> AppTest:
    at.text_input(key="_token_field").input(token)
    at.button(key="_sign_in_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shows_login(at: AppTest) -> bool:
    return any(t.key == "_token_field" for t in at.text_input)


def shows_only_login(at: AppTest) -> bool:
    """The sign-in box and its prompt, nothing of the page (no title, no sidebar widgets, no data)."""
    return (shows_login(at) and not at.title and not at.sidebar.selectbox and not at.sidebar.text_input
            and not at.dataframe and not at.image and not at.get("download_button"))


def page_is_open(at: AppTest, title: str) -> bool:
    return not shows_login(at) and [t.value for t in at.title] == [title]



# ----- no token configured: as before ------------------------------------------------------------------------------
def test_without_tokens_every_page_opens_as_before(wb: Workbench) -> None:
    at = app(token="anything")  # a token in the link is dropped and changes nothing
    assert page_is_open(at, "Projects") and at.text_input(key="new_name")  # the creation form
    assert "token" not in at.query_params and not at.error
    for page in PAGES:
        go(at, page)
        assert page_is_open(at, TITLES[page]), page
    assert not any(b.key == "_sign_out" for b in at.sidebar.button)


# ----- tokens configured --------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("tokens")
def test_with_a_token_every_page_shows_the_login_and_nothing_else(wb: Workbench) -> None:
    at = app()
    assert shows_only_login(at)
    assert "needs the workbench's access token" in at.info[0].value
    for page in PAGES:
        go(at, page)
        assert shows_only_login(at), page
    assert "admin token" in at.info[0].value  # Export names the token it needs


@pytest.mark.usefixtures("tokens")
def test_a_wrong_token_is_refused(wb: Workbench) -> None:
    at = go(app(), "label")
    sign_in(at, "wrong")
    assert shows_only_login(at) and "not valid" in at.error[0].value
    assert at.text_input(key="_token_field").value == ""  # the box is emptied
    sign_in(at, USER_TOKEN[:-1])  # a prefix is not the token
    assert shows_only_login(at)
    assert "_sign_in" not in at.session_state


@pytest.mark.usefixtures("tokens")
def test_a_token_in_the_link_is_dropped_and_never_signs_in(wb: Workbench) -> None:
    """A link stays in the browser's history and in proxy logs: `?token=` is taken out and refused, right or wrong."""
    for token in (ADMIN_TOKEN, USER_TOKEN, "wrong"):
        at = app(token=token)
        assert "token" not in at.query_params and shows_only_login(at)
        assert "Tokens are not taken from links" in at.error[0].value
        assert "_sign_in" not in at.session_state


@pytest.mark.usefixtures("tokens")
def test_the_annotator_token_opens_label_and_dashboard_but_not_the_admin_parts(wb: Workbench) -> None:
    pets = wb.project_id("Pets")
    wb.close_round(pets)
    with wb.db.write() as s:  # a failed job: its Retry button is an admin action
        job = jobs.claim(s, "test-worker")
        jobs.fail(s, job.id, "RuntimeError: out of memory")

    at = go(app(), "label")
    sign_in(at, USER_TOKEN)
    assert page_is_open(at, "Label")
    assert at.sidebar.get("caption")[-1].value == "Signed in as annotator."
    go(at, "dashboard")
    assert page_is_open(at, "Dashboard")

    go(at, "projects")  # the list, but not the creation form
    assert [t.value for t in at.title] == ["Projects"] and "Pets" in at.dataframe[0].value["name"].tolist()
    assert not any(t.key == "new_name" for t in at.text_input) and not any(b.key == "create_project" for b in at.button)
    assert "Creating a project needs the admin token; you are signed in as annotator." in at.warning[0].value

    go(at, "rounds")  # the table and the jobs, not the actions
    assert [t.value for t in at.title] == ["Rounds"] and len(at.dataframe[0].value) == 1
    assert at.button(key=f"retry_{job.id}").disabled
    assert not any(b.key in ("close_round", "retrain", "start_round") for b in at.button)
    assert shows_login(at)

    go(at, "jobs")  # the list, and the failed job's Retry for admins only
    assert page_is_open(at, "Jobs") and job.id in at.dataframe[0].value["job"].tolist()
    assert at.button(key=f"retry_{job.id}").disabled

    for page in ADMIN_PAGES:
        go(at, page)
        assert shows_only_login(at), page
        assert "needs the admin token; you are signed in as annotator" in at.warning[0].value

    sign_in(at, ADMIN_TOKEN)  # the admin token given on an admin page opens it
    assert page_is_open(at, "Export")


@pytest.mark.usefixtures("tokens")
def test_the_admin_token_opens_everything(wb: Workbench) -> None:
    at = sign_in(app(), ADMIN_TOKEN)
    assert page_is_open(at, "Projects") and at.text_input(key="new_name")
    assert at.sidebar.get("caption")[-1].value == "Signed in as admin."
    for page in PAGES:
        go(at, page)
        assert page_is_open(at, TITLES[page]), page
    go(at, "rounds")
    at.button(key="close_round").click().run()
    assert wb.current_round(wb.project_id("Pets")).state == "training"

    at.sidebar.button(key="_sign_out").click().run()
    assert shows_only_login(at)


def test_one_token_alone_opens_everything(wb: Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TOKEN", USER_TOKEN)
    at = app()
    assert shows_only_login(at)
    sign_in(at, USER_TOKEN)
    for page in PAGES:
        go(at, page)
        assert page_is_open(at, TITLES[page]), page
    assert at.sidebar.get("caption")[-1].value == "Signed in as admin."


def test_an_admin_token_alone_leaves_labeling_open(wb: Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_ADMIN_TOKEN", ADMIN_TOKEN)
    at = app()
    assert [t.value for t in at.title] == ["Projects"] and not any(t.key == "new_name" for t in at.text_input)
    for page in ANNOTATOR_PAGES:
        assert [t.value for t in go(at, page).title] == [TITLES[page]], page
    for page in ADMIN_PAGES:
        assert shows_only_login(go(at, page)), page
    sign_in(at, ADMIN_TOKEN)
    assert page_is_open(at, "Export")


@pytest.mark.usefixtures("tokens")
def test_the_annotator_name_is_recorded_on_every_label_and_skip(wb: Workbench) -> None:
    pets = wb.project_id("Pets")
    at = go(sign_in(app(annotator="alice"), USER_TOKEN), "label")
    assert at.session_state["annotator"] == "alice" and at.query_params["annotator"] == "alice"
    from tests.test_pages import answer, surface  # the Label page's surface: its data, and a batch it sends

    data = surface(at)
    answer(wb, data, "tab", 1, "label", data["items"][0]["entry_id"], [0])
    answer(wb, data, "tab", 2, "skip", data["items"][1]["entry_id"])
    at.run()
    at.sidebar.text_input(key="_annotator_field").input("bob").run()
    data = surface(at)
    assert data["annotator"] == "bob"
    answer(wb, data, "tab-2", 1, "label", data["items"][0]["entry_id"], [1])
    with wb.db.read() as s:
        rows = [(a.kind, a.annotator) for a in s.scalars(select(Annotation).where(Annotation.project_id == pets)
                                                         .order_by(Annotation.id))]
    assert rows == [("label", "alice"), ("skip", "alice"), ("label", "bob")]
    _, data = wb.export(pets, "csv")
    assert sorted(line.split(",")[3] for line in data.decode().splitlines()[1:]) == ["alice", "bob"]


def test_roles_and_comparisons() -> None:
    from app import ui

    both = Settings(home=Path("."), db_url="sqlite://", access_token="u", admin_token="a")
    assert [ui.role_of(t, both) for t in ("u", "a", "x", "", None, "u ", "A")] == [
        "annotator", "admin", None, None, None, None, None]
    assert (ui.role_needed("annotator", both), ui.role_needed("admin", both)) == ("annotator", "admin")
    alone = Settings(home=Path("."), db_url="sqlite://", access_token="u")
    assert ui.role_of("u", alone) == "admin" and ui.role_needed("admin", alone) == "admin"
    none = Settings(home=Path("."), db_url="sqlite://")
    assert ui.role_needed("annotator", none) is None and ui.role_needed("admin", none) is None
    assert ui.role_of("u", none) is None
    assert "s3cret" not in repr(Settings(home=Path("."), db_url="sqlite://", access_token="s3cret", admin_token="s3cret"))
    with pytest.raises(ValueError):
        ui.role_needed("owner", both)


# ----- a real browser -----------------------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def token_server(tmp_path: Path):
    """`python -m app start --no-demo` with both tokens set, on a free port, with its own home folder."""
    from tests.test_browser import _free_port, _http_ok, _wait

    port = _free_port()
    home = tmp_path / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{home / 'wb.sqlite'}",
           "WORKBENCH_TOKEN": USER_TOKEN, "WORKBENCH_ADMIN_TOKEN": ADMIN_TOKEN}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "start", "--no-demo", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait(lambda: _http_ok(f"http://127.0.0.1:{port}/_stcore/health"), 90, "the Streamlit server")
        yield f"http://127.0.0.1:{port}", Settings(home=home, db_url=env["WORKBENCH_DB_URL"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_a_browser_is_asked_for_the_token_and_gets_in_with_it(token_server) -> None:
    from playwright.sync_api import expect, sync_playwright

    from app.workbench import DEMO_PROJECT
    from tests.test_browser import _open_page, _wait, painted_entry

    url, settings = token_server
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name=DEMO_PROJECT, round_size=4, eval_size=2), "demo")
    _wait(lambda: wb.rounds(pid)[0].state == "labeling", 90, "round 0 selected by the server's worker")
    with sync_playwright() as pw:
        browser, page = _open_page(pw)
        page.goto(f"{url}/label?annotator=carol")
        expect(page.get_by_text("needs the workbench's access token")).to_be_visible(timeout=60_000)
        assert page.get_by_text("round 0:").count() == 0 and page.get_by_text(DEMO_PROJECT).count() == 0
        field = page.get_by_label("Access token")
        field.fill("not the token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("That token is not valid.")).to_be_visible()

        field.fill(USER_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("round 0: 0 of 6")).to_be_visible(timeout=60_000)
        painted_entry(page)  # the Label page's surface has painted its first item
        page.keyboard.press("1")  # any class will do: the label must carry the annotator's name
        _wait(lambda: len(wb.labels(pid)) == 1, 30, "the label in the database")
        with wb.db.read() as s:
            assert [a.annotator for a in s.scalars(select(Annotation))] == ["carol"]

        page.get_by_role("link", name="Export").click()  # same session: still the annotator token
        expect(page.get_by_text("needs the admin token; you are signed in as annotator")).to_be_visible()

        page.goto(f"{url}/export?token={ADMIN_TOKEN}")  # a token in a link is refused and leaves the address bar
        expect(page.get_by_text("Tokens are not taken from links")).to_be_visible(timeout=60_000)
        _wait(lambda: "token=" not in page.url, 10, "the token to leave the address bar")
        assert page.get_by_text("Labels (CSV)").count() == 0
        page.get_by_label("Admin token").fill(ADMIN_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("Labels (CSV)")).to_be_visible(timeout=60_000)
        browser.close()
