"""People who sign in (storage.people, app.people_admin, app.ui's access): a name tied to the sign-in, one-time
links, no token in links, and nothing a client can rebuild. Driven with AppTest on the real pages and a real SQLite
file, the CLI as a subprocess, and the label surface's answers as the browser sends them."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import select, text, update

from app import people_admin
from app.launcher import worker_environment
from app.workbench import Workbench
from storage import people
from storage.errors import StorageError
from storage.models import Annotation, SignInLink, utcnow
from tests.conftest import answer, surface
from tests.test_access import (  # noqa: F401 (fixtures)
    ADMIN_PAGES,
    ADMIN_TOKEN,
    ANNOTATOR_PAGES,
    USER_TOKEN,
    app,
    go,
    no_tokens_from_outside,
    page_is_open,
    shows_only_login,
    sign_in,
    wb,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def staff(wb: Workbench) -> dict[str, str]:
    """Three people and their tokens."""
    return {name: people_admin.add(wb.db, name, role)[1]
            for name, role in (("alice", "annotator"), ("bob", "annotator"), ("rita", "admin"))}


def _answers(wb: Workbench) -> list[tuple[str, str]]:
    with wb.db.read() as s:
        return [(a.kind, a.annotator) for a in s.scalars(select(Annotation).order_by(Annotation.id))]


def test_tokens_are_kept_only_as_hashes(wb: Workbench, staff: dict[str, str]) -> None:
    with wb.db.read() as s:
        stored = [row[0] for row in s.execute(text("SELECT token_sha256 FROM people"))]
    assert len(stored) == 3 and not set(staff.values()) & set(stored)
    assert set(stored) == {people.digest(t) for t in staff.values()}
    assert people_admin.by_token(wb.db, staff["alice"]).name == "alice"
    assert people_admin.by_token(wb.db, staff["alice"][:-1]) is None


def test_with_people_every_page_asks_and_the_name_is_the_persons(wb: Workbench, staff: dict[str, str]) -> None:
    at = app(annotator="bob")
    assert shows_only_login(at)
    for page in ANNOTATOR_PAGES:
        assert shows_only_login(go(at, page)), page
    sign_in(go(at, "label"), staff["alice"])
    assert page_is_open(at, "Label")
    assert not any(t.key == "_annotator_field" for t in at.sidebar.text_input)  # no name to type
    assert at.sidebar.get("caption")[-1].value == "Signed in as alice (annotator)."
    assert at.session_state["annotator"] == "alice" and "annotator" not in at.query_params
    for page in ADMIN_PAGES:
        assert shows_only_login(go(at, page)), page
        assert "needs the admin role; you are signed in as alice (annotator)" in at.warning[0].value


def test_answers_and_undo_are_the_signed_in_persons_whatever_the_browser_claims(
        wb: Workbench, staff: dict[str, str]) -> None:
    at = go(sign_in(app(), staff["bob"]), "label")
    data = surface(at)
    first = data["items"][0]["entry_id"]
    answer(wb, data, "tab-b", 1, "label", first, [0])
    at = go(sign_in(app(), staff["alice"]), "label")
    data = surface(at)
    assert data["annotator"] == "alice"
    # A forged batch: alice's tab claims to be bob and undoes bob's answer.
    forged = {**data, "annotator": "bob"}
    from app import labeling

    batch = {"client_id": "tab-a", "held": [], "answers": [
        {"seq": 1, "entry_id": first, "kind": "undo", "annotator": "bob", "seconds": 1.0}]}
    result = labeling.receive(wb.db, forged["project_id"], "alice", batch, signed_in=True)
    assert result["outcomes"][0]["status"] == "refused"  # applied as alice, who has no answer there
    assert _answers(wb) == [("label", "bob")]
    # A forged label on an entry bob holds: refused too (alice holds none of it), nothing stored.
    held_by_bob = [e for e in surface(go(sign_in(app(), staff["bob"]), "label"))["items"]][0]["entry_id"]
    batch = {"client_id": "tab-a", "held": [], "answers": [
        {"seq": 2, "entry_id": held_by_bob, "kind": "label", "value": [1], "annotator": "bob", "seconds": 1.0}]}
    result = labeling.receive(wb.db, data["project_id"], "alice", batch, signed_in=True)
    assert result["outcomes"][0]["status"] == "refused" and _answers(wb) == [("label", "bob")]


def test_the_shared_token_names_nobody_once_people_exist(wb: Workbench, staff: dict[str, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TOKEN", USER_TOKEN)
    monkeypatch.setenv("WORKBENCH_ADMIN_TOKEN", ADMIN_TOKEN)
    at = sign_in(app(), USER_TOKEN)
    assert shows_only_login(at) and "their own token" in at.error[0].value
    sign_in(at, ADMIN_TOKEN)  # the operator's token still opens everything, as "admin"
    assert at.session_state["annotator"] == people_admin.ADMIN_NAME
    assert page_is_open(go(at, "export"), "Export")


def test_an_admin_person_opens_everything_and_roles_change_at_once(wb: Workbench, staff: dict[str, str]) -> None:
    at = sign_in(app(), staff["rita"])
    assert page_is_open(go(at, "export"), "Export")
    people_admin.set_role(wb.db, "rita", "annotator")
    assert shows_only_login(go(at, "export"))  # the next run reads the new role
    people_admin.remove(wb.db, "rita")
    go(at, "label")
    assert shows_only_login(at) and "signed out" in at.error[0].value
    assert people_admin.by_token(wb.db, staff["rita"]) is None
    people_admin.new_token(wb.db, "rita")  # back, with a new token only
    assert people_admin.by_token(wb.db, staff["rita"]) is None


def test_a_one_time_link_signs_in_once(wb: Workbench, staff: dict[str, str]) -> None:
    url = people_admin.link(wb.db, "alice", "http://127.0.0.1:8501")
    code = url.split("?signin=")[1]
    at = app(signin=code)
    assert "signin" not in at.query_params and page_is_open(go(at, "label"), "Label")
    assert at.session_state["annotator"] == "alice"
    again = app(signin=code)
    assert shows_only_login(again) and "used already" in again.error[0].value
    late = people_admin.link(wb.db, "bob", "http://127.0.0.1:8501").split("?signin=")[1]
    with wb.db.write() as s:
        s.execute(update(SignInLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert shows_only_login(app(signin=late))
    with pytest.raises(StorageError, match="at least 1 minute"):
        people_admin.link(wb.db, "alice", "http://x", minutes=0)


def test_names_are_checked(wb: Workbench) -> None:
    people_admin.add(wb.db, "ana", "reviewer")
    for name, role, said in (("ana", "annotator", "exists already"), ("", "annotator", "needs a name"),
                             ("x" * 101, "annotator", "at most 100"), ("a\nb", "annotator", "control character"),
                             ("zoe", "owner", "unknown role")):
        with pytest.raises(StorageError, match=said):
            people_admin.add(wb.db, name, role)


def test_the_people_verbs_on_the_command_line(wb: Workbench) -> None:
    env = dict(os.environ)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app", "people", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    added = run("add", "carol", "--role", "reviewer")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert people_admin.by_token(wb.db, token).role == "reviewer"
    assert "carol\treviewer\tactive" in run("list").stdout
    link = run("link", "carol", "--url", "http://10.0.0.5:8501").stdout.strip().splitlines()[-1]
    assert link.startswith("http://10.0.0.5:8501/?signin=")
    refused = run("add", "carol")
    assert refused.returncode == 2 and "exists already" in refused.stderr and "Traceback" not in refused.stderr
    assert run("remove", "carol").returncode == 0
    assert people_admin.by_token(wb.db, token) is None


def test_a_client_cannot_rebuild_the_shared_workbench() -> None:
    """Streamlit's clear_cache message (any client may send it; the "c" key does) clears st.cache_resource and
    st.cache_data: the Workbench (engine, migrations under the write lock) is not in either."""
    from app import ui

    first = ui.get_workbench()
    st.cache_resource.clear()
    st.cache_data.clear()
    assert ui.get_workbench() is first


def test_workers_get_no_sign_in_tokens() -> None:
    env = {"WORKBENCH_TOKEN": "u", "WORKBENCH_ADMIN_TOKEN": "a", "WORKBENCH_HOME": "/h", "PATH": "/bin"}
    assert worker_environment(env) == {"WORKBENCH_HOME": "/h", "PATH": "/bin"}


# ----- a real browser ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed")
def test_a_person_opens_their_one_time_link_and_labels_under_their_name(tmp_path: Path) -> None:
    """`python -m app start`, a person added and given a link with the CLI's verbs; in Chromium the link signs in
    (and leaves the address bar), the name cannot be typed or set in the link, the label is stored under it, and
    the same link in a second tab signs in nobody."""
    from playwright.sync_api import expect, sync_playwright

    from app.settings import Settings
    from app.workbench import DEMO_PROJECT, ProjectConfig
    from tests.test_browser import _open_page, _wait, app_server, painted_entry

    home = tmp_path / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{home / 'wb.sqlite'}"}
    for name in ("WORKBENCH_TOKEN", "WORKBENCH_ADMIN_TOKEN"):
        env.pop(name, None)
    added = subprocess.run([sys.executable, "-m", "app", "people", "add", "dana"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    wb = Workbench(Settings(home=home, db_url=env["WORKBENCH_DB_URL"]))
    pid = wb.create_project(ProjectConfig(name=DEMO_PROJECT, round_size=4, eval_size=2), "demo")
    try:
        with app_server(env, tmp_path / "server.log", "--no-demo") as url:
            _wait(lambda: wb.rounds(pid)[0].state == "labeling", 90, "round 0 selected by the server's worker")
            made = subprocess.run([sys.executable, "-m", "app", "people", "link", "dana", "--url",
                                   url], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=120)
            link = made.stdout.strip().splitlines()[-1]
            with sync_playwright() as pw:
                browser, page = _open_page(pw)
                page.goto(link.replace("/?", "/label?") + "&annotator=mallory")
                expect(page.get_by_text("Signed in as dana (annotator).")).to_be_visible(timeout=60_000)
                _wait(lambda: "signin=" not in page.url and "annotator=" not in page.url, 10, "a clean address bar")
                assert page.get_by_label("Annotator").count() == 0
                painted_entry(page)
                page.keyboard.press("1")
                _wait(lambda: len(wb.labels(pid)) == 1, 30, "the label in the database")
                assert _answers(wb) == [("label", "dana")]
                other = browser.new_page()
                other.goto(link)
                expect(other.get_by_text("used already")).to_be_visible(timeout=60_000)
                assert other.get_by_text("Signed in as").count() == 0
                browser.close()
    finally:
        wb.db.dispose()
