"""Pieces shared by the Streamlit pages: the page frame (`open_page`: access, sidebar, title, project; and
`worded_errors`), the cached Workbench, access tokens (sign-in), the sidebar (project picker, annotator name),
one-shot messages that survive a rerun, and job progress bars.

The pages only call `Workbench` verbs; no SQL, no model code and no torch here.
"""
from __future__ import annotations

import hmac
import logging
import re
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import streamlit as st
from PIL import Image
from sqlalchemy.exc import OperationalError

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
_BLOCK_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])", re.MULTILINE)


def text(value: object) -> str:
    """`value` (a class, project, file or annotator name, a job error, a round note) as literal text for any
    Streamlit element that renders Markdown (st.markdown, captions, messages, button and expander labels):
    `![t](http://host/x.png)` shows as typed and fetches nothing, `**bold**` keeps its stars."""
    escaped = "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in str(value))
    escaped = _BLOCK_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)
    return escaped.replace("\n", "  \n")  # a line break stays a line break, never a Markdown block


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
@st.cache_resource(show_spinner=False)
def _workbench(home: str, db_url: str, lease_seconds: int) -> Workbench:
    return Workbench(Settings(home=Path(home), db_url=db_url, lease_seconds=lease_seconds))


def get_workbench() -> Workbench:
    """One Workbench (one database engine) per settings, shared by every session of this server."""
    settings = Settings.from_env()
    return _workbench(str(settings.home), settings.db_url, settings.lease_seconds)


@st.cache_data(show_spinner=False)
def strategy_names(_wb: Workbench) -> list[str]:
    """The registry's names, read once per server process (importing the registry is slow)."""
    return _wb.strategy_names()


# ----- access -----------------------------------------------------------------------------------------------------
# Two roles. "annotator" pages (Projects list, Label, Rounds table, Dashboard) need WORKBENCH_TOKEN when it is set;
# "admin" pages and actions (creating projects, round actions and strategy changes, Simulate, Export) need
# WORKBENCH_ADMIN_TOKEN when it is set, else WORKBENCH_TOKEN (one shared token then opens everything). With neither
# set nothing is asked, as before. The admin token opens annotator pages too. A token is given once per browser
# session, in the sign-in box or as ?token=... in the link (taken out of the link at once), and kept in the
# session state; tokens are compared with hmac.compare_digest.
ROLES = ("annotator", "admin")  # each role includes the ones before it
TOKEN_PARAM = "token"
WRONG_TOKEN_DELAY = 1.0  # seconds a wrong token costs: guessing is slow
_TOKEN_KEY = "_access_token"  # the session's valid token
_ERROR_KEY = "_access_error"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def role_of(token: str | None, settings: Settings) -> str | None:
    """The role a token grants ('admin', 'annotator'), or None for a missing or wrong token."""
    if not token:
        return None
    is_admin = settings.admin_token is not None and _same(token, settings.admin_token)
    is_user = settings.access_token is not None and _same(token, settings.access_token)
    if is_admin or (is_user and settings.admin_token is None):
        return "admin"
    return "annotator" if is_user else None


def role_needed(role: str, settings: Settings) -> str | None:
    """The role a session must hold to open something meant for `role`, or None when no token is asked for it."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {ROLES}")
    if role == "annotator":
        return "annotator" if settings.access_token else None
    return "admin" if (settings.access_token or settings.admin_token) else None


def session_role(settings: Settings | None = None) -> str | None:
    """The role this browser session holds through its token (None without a valid one)."""
    return role_of(st.session_state.get(_TOKEN_KEY), settings or Settings.from_env())


def has_access(role: str, settings: Settings | None = None) -> bool:
    """Whether this session may open what is meant for `role` ('annotator' or 'admin')."""
    settings = settings or Settings.from_env()
    needed = role_needed(role, settings)
    if needed is None:
        return True
    held = session_role(settings)
    return held is not None and ROLES.index(held) >= ROLES.index(needed)


def _offer_token(given: str) -> None:
    """Keep a valid token for this session (the latest valid one wins); note a wrong one."""
    given = (given or "").strip()
    if role_of(given, Settings.from_env()) is None:
        time.sleep(WRONG_TOKEN_DELAY)
        st.session_state[_ERROR_KEY] = "That token is not valid."
        return
    st.session_state[_TOKEN_KEY] = given
    st.session_state.pop(_ERROR_KEY, None)


def _sign_in() -> None:
    _offer_token(st.session_state.get("_token_field") or "")
    st.session_state["_token_field"] = ""  # never left in the box


def sign_out() -> None:
    st.session_state.pop(_TOKEN_KEY, None)
    st.session_state.pop(_ERROR_KEY, None)


def require_access(role: str, what: str | None = None) -> None:
    """Stop the page (or the rest of it) with a sign-in box unless this session may open what is meant for `role`.

    `open_page` calls it first with the page's role (from app/page_table.py), so a visitor without a token sees
    the sign-in box and nothing else; a page calls it again before an admin-only part, naming that part in
    `what`. A `?token=...`
    in the link is taken (and removed from the link) first. Without any token configured it does nothing.
    """
    settings = Settings.from_env()
    if TOKEN_PARAM in st.query_params:
        given = st.query_params.get(TOKEN_PARAM) or ""
        del st.query_params[TOKEN_PARAM]  # out of the address bar, the history and bookmarks
        if settings.access_token or settings.admin_token:
            _offer_token(given)
    if has_access(role, settings):
        if error := st.session_state.pop(_ERROR_KEY, None):  # a wrong ?token= on a page open to all
            st.error(error)
        return
    needed = role_needed(role, settings)
    token_name = "admin token" if needed == "admin" and settings.admin_token else "access token"
    subject = what or "This page"
    held = session_role(settings)
    if held is not None:
        st.warning(f"{subject} needs the {token_name}; you are signed in as {held}.")
    else:
        st.info(f"{subject} needs the workbench's {token_name}. Give it here (or in the link as ?token=...).")
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
        with get_workbench().db.write() as s:
            answers.release_held(s, holder[0], old)
        st.session_state.pop("_label_holder")


def sidebar(wb: Workbench) -> tuple[int | None, str]:
    """Render the project picker and the annotator name; return (selected project id or None, annotator)."""
    projects = wb.projects()
    names = {p.id: p.name for p in projects}
    if "annotator" not in st.session_state:
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
        st.text_input(
            "Annotator",
            key="_annotator_field",
            on_change=_rename_annotator,
            help="Your name as stored with each label. Set it in the link with ?annotator=NAME.",
            max_chars=100,
        )
        held = session_role()
        if held is not None:  # only where tokens are configured and this session gave one
            st.caption(f"Signed in as {held}.")
            st.button("Sign out", key="_sign_out", on_click=sign_out)
    if st.query_params.get("annotator") != st.session_state["annotator"]:
        st.query_params["annotator"] = st.session_state["annotator"]  # a reload or a bookmark keeps the name
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
