"""Pieces shared by the Streamlit pages: the page frame (`open_page`: access, sidebar, title, project; and
`worded_errors`), the cached Workbench, access tokens (sign-in), the sidebar (project picker, annotator name),
one-shot messages that survive a rerun, and job progress bars.

The pages only call `Workbench` verbs; no SQL, no model code and no torch here.
"""
from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import streamlit as st
from PIL import Image
from sqlalchemy.exc import OperationalError

from app import people_admin
from app.page_table import page
from app.read_models import JobView
from app.settings import Settings
from app.workbench import Workbench, WorkbenchError
from learners.errors import LearnerError
from learners.images import read_image
from storage import answers
from storage.db import is_busy
from storage.errors import StorageError
from storage.images import file_problem
from storage.importers import check_image

DEFAULT_ANNOTATOR = "annotator-1"
POLL_SECONDS = 1.5  # how often a page refreshes itself while the worker is busy
MIN_IMAGE_SIDE = 384  # small images (the 8x8 demo digits) are enlarged to about this size, keeping hard pixel edges

_log = logging.getLogger(__name__)


# ----- user text ------------------------------------------------------------------------------------------------
# The characters that open a Markdown construct anywhere in a line (emphasis, code, links and images, HTML, LaTeX,
# strikethrough, tables, the :color[...] directive); a backslash before each makes it literal. At a line's start,
# also the block openers (headings, lists, quotes).
_MARKDOWN_SPECIAL = set("\\`*_[]<>$~|")
_BLOCK_START = re.compile(r"^(\s*)([#>+=-]|(\d+)[.)])", re.MULTILINE)


def text(value: object) -> str:
    """`value` (a class, project, file or annotator name, a job error, a round note) as literal text for any
    Streamlit element that renders Markdown (st.markdown, captions, messages, button and expander labels):
    `![t](http://host/x.png)` shows as typed and fetches nothing, `**bold**` keeps its stars."""
    escaped = "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in str(value))
    escaped = _BLOCK_START.sub(_escape_block_start, escaped)
    return escaped.replace("\n", "  \n")  # a line break stays a line break, never a Markdown block


def _escape_block_start(m: re.Match) -> str:
    """A backslash before a block opener; for a numbered-list opener ("12." or "3)") before its dot or parenthesis,
    since Markdown does not take a backslash before a digit as an escape (it would show)."""
    if m.group(3) is not None:
        return m.group(1) + m.group(3) + "\\" + m.group(2)[-1]
    return m.group(1) + "\\" + m.group(2)


def lines_text(value: str) -> str:
    """Several lines of user-derived text; a line starting with "- " stays a list item (its text escaped)."""
    return "\n".join("- " + text(line[2:]) if line.startswith("- ") else text(line) for line in value.split("\n"))


# ----- the page frame ---------------------------------------------------------------------------------------------
def open_page(url_path: str, needs_project: bool = True) -> tuple[Workbench, int | None, str]:
    """The opening of every page, from its row in app/page_table.py: the sign-in box (and nothing else) unless this
    session holds the page's role, then the sidebar and the title; with `needs_project` the page stops with a
    pointer to the Projects page while there is no project. Returns (workbench, project id, annotator)."""
    spec = page(url_path)
    require_access(spec.role)
    wb = get_workbench()
    project_id, annotator = sidebar(wb)
    st.title(spec.title)
    if needs_project:
        project_id = require_project(project_id)
    return wb, project_id, annotator


@contextmanager
def worded_errors() -> Iterator[None]:
    """Show a refusal or fault raised while a page runs as a plain sentence (st.error), never a traceback or SQL."""
    try:
        yield
    except OperationalError as error:
        _log.warning("database error on a page: %s", error)  # the operator's log keeps the details
        st.error(text(database_problem(error)))
    except (WorkbenchError, StorageError, LearnerError) as error:
        st.error(text(error))


def database_problem(error: OperationalError) -> str:
    """What a user is told when the database refuses (locked by another writer) or cannot be reached."""
    if is_busy(error):
        return "The database is busy: another process holds its lock. Nothing was changed; try again in a moment."
    return ("The database cannot be reached right now. Nothing was changed; check that it is running and that "
            "WORKBENCH_DB_URL points at it, then reload the page.")


def page_link(url_path: str, label: str, icon: str | None = None) -> None:
    """A link to a page of the table (its own icon unless another is given)."""
    spec = page(url_path)
    st.page_link(spec.file, label=label, icon=icon or spec.icon)


# ----- the workbench ----------------------------------------------------------------------------------------------
# One Workbench per settings for the whole server process, in a plain module-level cache, not st.cache_resource:
# any browser, signed in or not, can send Streamlit's clear_cache message (the "c" key does it), and a cleared
# resource cache would rebuild the Workbench (an engine and the Alembic upgrade under the write lock) on the next
# run of every session. Nothing built before the access check may be rebuilt by a client.
_WORKBENCHES: dict[tuple[str, str, int], Workbench] = {}
_WORKBENCHES_LOCK = threading.Lock()


def get_workbench() -> Workbench:
    """One Workbench (one database engine) per settings, shared by every session of this server."""
    settings = Settings.from_env()
    key = (str(settings.home), settings.db_url, settings.lease_seconds)
    with _WORKBENCHES_LOCK:
        if key not in _WORKBENCHES:
            _WORKBENCHES[key] = Workbench(Settings(home=settings.home, db_url=settings.db_url,
                                                   lease_seconds=settings.lease_seconds))
        return _WORKBENCHES[key]


def strategy_names(wb: Workbench) -> list[str]:
    """The registry's names (the registry is imported once per server process; later calls are cheap)."""
    return wb.strategy_names()


# ----- access -----------------------------------------------------------------------------------------------------
# Roles: "annotator" pages (Projects list, Label, Rounds table, Dashboard), "reviewer" parts, "admin" pages and
# actions (creating projects, round actions and strategy changes, Simulate, Export); each role includes the ones
# before it. Who holds which role:
# - people (app.people_admin: `python -m app people add NAME --role ROLE`): once one exists, every page asks for a
#   sign-in, a person's own token (or one-time link) signs them in, and the session's annotator name is theirs;
#   the shared WORKBENCH_TOKEN names nobody and no longer signs in; WORKBENCH_ADMIN_TOKEN signs in as "admin".
# - without people: WORKBENCH_TOKEN opens annotator pages, WORKBENCH_ADMIN_TOKEN everything (WORKBENCH_TOKEN alone
#   opens everything), the name is typed; with neither set nothing is asked.
# A token is given in the sign-in box, never in a link (`?token=` is dropped from the link and refused: it would
# stay in the browser's history and in proxy logs); `?signin=CODE` is a person's one-time link. The sign-in is kept
# in the session state and a person's is checked again on every page run (a removed person is signed out).
ROLES = people_admin.ROLES
TOKEN_PARAM = "token"
LINK_PARAM = "signin"
WRONG_TOKEN_DELAY = 1.0  # seconds a wrong token costs: guessing is slow
_SIGN_IN_KEY = "_sign_in"  # the session's app.people_admin.SignIn
_ERROR_KEY = "_access_error"
TOKEN_IN_LINK = ("Tokens are not taken from links: a link stays in the browser's history and in proxy logs. Type "
                 "the token in the box below, or ask the admin for a one-time link (`python -m app people link NAME`).")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def role_of(token: str | None, settings: Settings) -> str | None:
    """The role a shared token from the environment grants ('admin', 'annotator'), or None for a missing or wrong
    one."""
    if not token:
        return None
    is_admin = settings.admin_token is not None and _same(token, settings.admin_token)
    is_user = settings.access_token is not None and _same(token, settings.access_token)
    if is_admin or (is_user and settings.admin_token is None):
        return "admin"
    return "annotator" if is_user else None


def role_needed(role: str, settings: Settings, people: bool = False) -> str | None:
    """The role a session must hold to open something meant for `role`, or None when no sign-in is asked for it
    (`people`: whether any person is registered)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {ROLES}")
    if people:
        return role
    if role == "annotator":
        return "annotator" if settings.access_token else None
    return "admin" if (settings.access_token or settings.admin_token) else None


def _people() -> bool:
    """Whether any person is registered (one small query; people can be added while the server runs)."""
    return people_admin.anyone(get_workbench().db)


def _resolve(token: str, settings: Settings) -> people_admin.SignIn | str:
    """The sign-in a token gives, or the reason it gives none."""
    db = get_workbench().db
    person = people_admin.by_token(db, token)
    if person is not None:
        return person
    role = role_of(token, settings)
    if role is None:
        return "That token is not valid."
    if not people_admin.anyone(db):
        return people_admin.SignIn(role, None)
    if settings.admin_token is not None and _same(token, settings.admin_token):
        return people_admin.SignIn("admin", people_admin.ADMIN_NAME)
    return "This workbench signs each person in with their own token: ask the admin for yours."


def current_sign_in() -> people_admin.SignIn | None:
    """This browser session's sign-in (None without one)."""
    return st.session_state.get(_SIGN_IN_KEY)


def name_is_signed_in() -> bool:
    """Whether this session's annotator name comes from its sign-in (a person, or the admin token among people)."""
    held = current_sign_in()
    return held is not None and held.name is not None


def session_role(settings: Settings | None = None) -> str | None:
    """The role this browser session holds through its sign-in (None without one)."""
    held = current_sign_in()
    return None if held is None else held.role


def has_access(role: str, settings: Settings | None = None) -> bool:
    """Whether this session may open what is meant for `role` ('annotator', 'reviewer' or 'admin')."""
    settings = settings or Settings.from_env()
    needed = role_needed(role, settings, _people())
    if needed is None:
        return True
    held = session_role(settings)
    return held is not None and ROLES.index(held) >= ROLES.index(needed)


def _offer_token(given: str) -> None:
    """Keep the sign-in a valid token gives for this session (the latest valid one wins); note a wrong one."""
    outcome = _resolve((given or "").strip(), Settings.from_env())
    if isinstance(outcome, str):
        time.sleep(WRONG_TOKEN_DELAY)
        st.session_state[_ERROR_KEY] = outcome
        return
    st.session_state[_SIGN_IN_KEY] = outcome
    st.session_state.pop(_ERROR_KEY, None)


def _take_link(code: str) -> None:
    person = people_admin.by_link(get_workbench().db, code.strip())
    if person is None:
        time.sleep(WRONG_TOKEN_DELAY)
        st.session_state[_ERROR_KEY] = "That sign-in link was used already, has expired or is not valid: ask for a new one."
        return
    st.session_state[_SIGN_IN_KEY] = person
    st.session_state.pop(_ERROR_KEY, None)


def _sign_in() -> None:
    _offer_token(st.session_state.get("_token_field") or "")
    st.session_state["_token_field"] = ""  # never left in the box


def sign_out() -> None:
    st.session_state.pop(_SIGN_IN_KEY, None)
    st.session_state.pop(_ERROR_KEY, None)


def _take_link_parameters(settings: Settings, people: bool) -> None:
    """Take ?signin= and ?token= out of the link (the address bar, bookmarks) at once; spend a one-time link."""
    if LINK_PARAM in st.query_params:
        code = st.query_params.get(LINK_PARAM) or ""
        del st.query_params[LINK_PARAM]
        _take_link(code)
    if TOKEN_PARAM in st.query_params:
        del st.query_params[TOKEN_PARAM]
        if settings.access_token or settings.admin_token or people:
            st.session_state[_ERROR_KEY] = TOKEN_IN_LINK


def _check_held_sign_in() -> None:
    """A person's sign-in as the database has it now: their role may have changed, or they were removed."""
    held = current_sign_in()
    if held is None:
        return
    now = people_admin.still_valid(get_workbench().db, held)
    if now is None:
        sign_out()
        st.session_state[_ERROR_KEY] = "You were signed out: your sign-in was withdrawn."
    elif now != held:
        st.session_state[_SIGN_IN_KEY] = now


def require_access(role: str, what: str | None = None) -> None:
    """Stop the page (or the rest of it) with a sign-in box unless this session may open what is meant for `role`.

    `open_page` calls it first with the page's role (from app/page_table.py), so a visitor without a sign-in sees
    the sign-in box and nothing else; a page calls it again before a part for a higher role, naming that part in
    `what`. Without people and without any token configured it does nothing.
    """
    settings = Settings.from_env()
    people = _people()
    _take_link_parameters(settings, people)
    _check_held_sign_in()
    if has_access(role, settings):
        if error := st.session_state.pop(_ERROR_KEY, None):  # e.g. a refused link on a page open to all
            st.error(error)
        return
    needed = role_needed(role, settings, people)
    if people:
        token_name = "token"
    else:
        token_name = "admin token" if needed == "admin" and settings.admin_token else "access token"
    subject = what or "This page"
    held = current_sign_in()
    if held is not None:
        who = f"{held.name} ({held.role})" if held.name else held.role
        need = f"the {needed} role" if people else f"the {token_name}"
        st.warning(text(f"{subject} needs {need}; you are signed in as {who}."))
    elif people:
        st.info(f"{subject} needs a sign-in: give your own token here, or open your one-time sign-in link.")
    else:
        st.info(f"{subject} needs the workbench's {token_name}. Give it here.")
    with st.form("_sign_in_form"):
        st.text_input(token_name.capitalize(), type="password", key="_token_field", autocomplete="off")
        st.form_submit_button("Sign in", type="primary", on_click=_sign_in, key="_sign_in_button")
    error = st.session_state.pop(_ERROR_KEY, None)
    if error:
        st.error(error)
    st.stop()


# ----- sidebar ----------------------------------------------------------------------------------------------------
def _keep(widget_key: str, state_key: str) -> None:
    """Copy a sidebar widget's value to a plain session-state key, which outlives page switches."""
    value = st.session_state[widget_key]
    if isinstance(value, str):
        value = value.strip()
        if not value:  # an empty annotator name is not kept; the field shows the previous one again
            return
    st.session_state[state_key] = value


def _rename_annotator() -> None:
    """A new annotator name: give back the items the old name holds on the Label page, then keep the new name."""
    old = st.session_state.get("annotator")
    holder = st.session_state.get("_label_holder")  # (project id, annotator) the Label page last held items for
    _keep("_annotator_field", "annotator")
    if holder and old and holder[1] == old and st.session_state["annotator"] != old:
        _release_label_holder()


def _release_label_holder() -> None:
    """Give back the items the Label page last held for this session's (project, annotator)."""
    holder = st.session_state.pop("_label_holder", None)
    if holder:
        with get_workbench().db.write() as s:
            answers.release_held(s, holder[0], holder[1])


def sidebar(wb: Workbench) -> tuple[int | None, str]:
    """Render the project picker and the annotator name; return (selected project id or None, annotator).

    A sign-in that names its holder (a person, or the admin token while people exist) fixes the annotator name:
    no field to type in, `?annotator=` ignored. Otherwise the name is typed (or set with ?annotator=NAME) and is
    not verified."""
    projects = wb.projects()
    names = {p.id: p.name for p in projects}
    held = current_sign_in()
    fixed = held.name if held is not None else None
    if fixed is not None:
        if st.session_state.get("annotator") not in (None, fixed):
            _release_label_holder()
        st.session_state["annotator"] = fixed
    elif "annotator" not in st.session_state:
        st.session_state["annotator"] = (st.query_params.get("annotator") or "").strip()[:100] or DEFAULT_ANNOTATOR
    wanted = str(st.query_params.get("project") or "")
    if "project_id" not in st.session_state and wanted.isdigit():  # ?project=ID opens that project first
        st.session_state["project_id"] = int(wanted)
    if st.session_state.get("project_id") not in names:
        st.session_state["project_id"] = projects[0].id if projects else None
    # Widgets on different pages are different widgets to Streamlit: seed them from the plain keys each run.
    st.session_state["_project_pick"] = st.session_state["project_id"]
    st.session_state["_annotator_field"] = st.session_state["annotator"]
    with st.sidebar:
        if projects:
            st.selectbox(
                "Project",
                list(names),
                format_func=lambda pid: names[pid],
                key="_project_pick",
                on_change=_keep,
                args=("_project_pick", "project_id"),
            )
        else:
            st.info("No project yet: create one on the Projects page.")
        if fixed is None:
            st.text_input(
                "Annotator",
                key="_annotator_field",
                on_change=_rename_annotator,
                help="Your name as stored with each label (not verified: an admin can give each person their own "
                     "sign-in with `python -m app people add NAME`). Set it in the link with ?annotator=NAME.",
                max_chars=100,
            )
        if held is not None:  # only where sign-in is configured and this session signed in
            who = f"{held.name} ({held.role})" if held.name else held.role
            st.caption(text(f"Signed in as {who}."))
            st.button("Sign out", key="_sign_out", on_click=sign_out)
    if fixed is None and st.query_params.get("annotator") != st.session_state["annotator"]:
        st.query_params["annotator"] = st.session_state["annotator"]  # a reload or a bookmark keeps the name
    elif fixed is not None and "annotator" in st.query_params:
        del st.query_params["annotator"]
    return st.session_state["project_id"], st.session_state["annotator"]


def require_project(project_id: int | None) -> int:
    """Stop the page with a pointer to the Projects page when no project exists yet."""
    if project_id is None:
        st.info("There is no project yet.")
        page_link("projects", "Create one on the Projects page", icon=":material/add:")
        st.stop()
    return project_id


# ----- messages that survive the rerun after a button -----------------------------------------------------------
def flash(kind: str, text: str) -> None:
    """Queue a message (kind: success, info, warning, error) to show at the top of the next run."""
    st.session_state.setdefault("_flash", []).append((kind, text))


def show_flash() -> None:
    for kind, message in st.session_state.pop("_flash", []):
        getattr(st, kind)(lines_text(message))  # messages carry names and errors: drawn as text


# ----- jobs -------------------------------------------------------------------------------------------------------
def job_line(job: JobView) -> str:
    return f"{job.kind} job {job.id} ({job.state}): {job.message}"


def show_jobs(jobs: list[JobView]) -> None:
    """A progress bar per active job (as in `Workbench.status(...).jobs`)."""
    for job in jobs:
        st.progress(min(max(job.progress, 0.0), 1.0), text=text(job_line(job)))
    if any(job.state == "queued" for job in jobs) and not any(job.state == "running" for job in jobs):
        st.caption("Queued jobs wait for a model worker: `python -m app worker` (or `python -m app start`).")


def failed_job(wb: Workbench, job: JobView) -> None:
    """A failed job's error and its Retry button, which only an admin session may press."""
    round_text = "" if job.round_index is None else f" (round {job.round_index})"
    with st.container(border=True):
        st.error(text(f"{job.kind} job {job.id}{round_text} failed: {job.error}"))
        st.button("Retry", key=f"retry_{job.id}", on_click=_retry, args=(wb, job), disabled=not has_access("admin"))


def job_progress(wb: Workbench, project_id: int, kind: str, active: bool) -> None:
    """The project's `kind` jobs: their progress, refreshed while one was active when the page was drawn (the
    page reruns once it ends, to draw its result), then the failed ones with their Retry button."""
    @st.fragment(run_every=POLL_SECONDS if active else None)
    def progress() -> None:
        jobs = [job for job in wb.status(project_id).jobs if job.kind == kind]
        if not jobs:
            if active:
                st.rerun()
            return
        show_jobs(jobs)

    progress()
    for job in wb.failed_jobs(project_id):
        if job.kind == kind:
            failed_job(wb, job)


def _retry(wb: Workbench, job: JobView) -> None:
    what = f"{job.kind} job {job.id}"
    if not has_access("admin"):  # a disabled button is only drawn so: the rule is kept here
        flash("error", f"Retry {what}: needs the admin token")
        return
    try:
        new_id = wb.retry_job(job.id)
    except WorkbenchError as error:
        flash("error", f"Retry {what}: {error}")
    else:
        flash("success", f"{what} queued again as job {new_id}")


# ----- labeling keys ----------------------------------------------------------------------------------------------
# Class shortcut keys: digits 1-9 and 0, then letters (Streamlit reserves "c" and "r"; "s" is Skip, "u" is Undo).
CLASS_KEYS = list("1234567890") + [k for k in "abcdefghijklmnopqrstuvwxyz" if k not in "crsu"]


def shortcut_keys(classes: list[str]) -> list[str | None]:
    """The shortcut key of each class: a class named by one free key keeps it (the digit "3" is key 3), the others
    take the next unused keys in order; classes past the last key get none."""
    keys: list[str | None] = [None] * len(classes)
    taken = set()
    for k, name in enumerate(classes):
        if name.lower() in CLASS_KEYS and name.lower() not in taken:
            keys[k] = name.lower()
            taken.add(name.lower())
    free = iter(key for key in CLASS_KEYS if key not in taken)
    for k in range(len(classes)):
        if keys[k] is None:
            keys[k] = next(free, None)
    return keys


# ----- images -----------------------------------------------------------------------------------------------------
def image_problem(path: Path, data_root: str | Path) -> str | None:
    """What makes an item's file unfit to show now (it was checked at import, but files can change since):
    a path leaving the data root, not a regular file, not a readable image, a decompression bomb; else None."""
    problem = file_problem(path, data_root)  # the same check the worker makes before reading (app.jobs.features)
    if problem is not None:
        return problem
    real = Path(path).resolve()
    stat = real.stat()
    return _decoding_problem(str(real), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4096)
def _decoding_problem(path: str, mtime_ns: int, size: int) -> str | None:
    """storage.importers.check_image's verdict (a full decode and hash), once per version of the file: the Label
    page asks for each held item and each history thumbnail on every rerun."""
    return check_image(Path(path))[1]


def load_for_display(path: Path) -> Image.Image:
    """The image at `path` as the model sees it (learners.images.read_image: upright, 8-bit L or RGB), enlarged by
    a whole factor with nearest-neighbour when it is tiny (sharp pixels)."""
    image = read_image(path, gray=True)
    side = max(image.size)
    if side < MIN_IMAGE_SIDE:
        factor = max(1, MIN_IMAGE_SIDE // side)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return image


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def save_upload(wb: Workbench, upload) -> str:
    """Keep an uploaded file under the workbench home (uploads/<time>-<name>) and return its path."""
    folder = Path(wb.settings.home) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(upload.name).name)
    path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}"
    path.write_bytes(upload.getvalue())
    return str(path)
