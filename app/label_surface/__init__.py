"""The label surface: a Streamlit components-v2 component (inline HTML/CSS/JS shipped in this package; no iframe,
no CDN, works offline) that owns the labeling interaction in the browser.

Use from a page (what app/pages/label.py needs):

    from app.label_surface import show_label_surface
    data = show_label_surface(wb.db, project_id, annotator)       # applies the batch that started this run, draws
    if not data["items"]:                                          # nothing held: say why (data["empty_reason"])
        ...

`show_label_surface(db, project_id, annotator, options=SurfaceOptions(), key="label_surface") -> dict` registers a
callback that applies the component's batch (app.labeling.receive) before the page body runs, builds the data
(app.labeling.surface_data) and mounts the component. It returns the data it mounted with. Use one key per page.
`show_review_surface(db, project_id, reviewer, ...)` does the same for the review queue of disputed items (the
Adjudicate page: app.labeling.review_data / receive_review). The lower-level `mount(data, key, on_sync)` mounts
the component with any data of the shape below.

The data the component takes (app.labeling.surface_data builds it):

    {"instance": str (the key), "project_id": int, "annotator": str, "task": "single_label" | "multi_label",
     "classes": [{"index": int, "name": str, "key": str | None}],          # keys from app.ui.shortcut_keys
     "items": [{"entry_id", "item_id", "caption" (file name only), "image" (data: URL or None), "thumb",
                "problem" (why the file cannot be shown, or None), "split", "round_index", "reopened": bool,
                "chosen_by" (the strategy / arm, or the evaluation set, in words),
                "guess": [{"class": int, "p": float}] (top 3) | None, "guess_tags": [int] | None}],  # held, in order
     "round": {"index", "state", "done", "total"} | None, "empty_reason": str | None,
     "progress": str (optional: the top line's text instead of the round's progress),
     "history": [{"entry_id", "kind", "value", "label", "caption", "thumb", "project_id", "annotator"}],  # newest first
     "client_id": str | None, "acked_seq": int, "refusals": [Outcome dicts], "error": str | None,
     "more_like_this": bool (optional: a "More like this" button for the item on screen),
     "settings": {"guard_ms": 120, "repress_ms": 350, "heartbeat_ms": 15000, "resend_ms": 2500,
                  "accept_keys": ["Enter", " "]}}

The value it returns is one trigger, "sync" (one rerun each), sent after new answers, on resend and as a heartbeat:

    {"client_id": str (one per browser tab, kept across reloads), "held": [entry ids the tab holds],
     "answers": [{"seq": int, "entry_id": int, "kind": "label" | "skip" | "undo", "value": [int] | None,
                  "seconds": float | None, "project_id": int, "annotator": str}],     # every unacknowledged answer
     "visible": bool, "heartbeat": bool, "sent_at": ms}

and a second trigger, "like": {"item_id": int}, when the "More like this" button is clicked (`like_request`).

In the browser: the image element (`img.ls-image`) carries `data-entry-id` of the item painted; the root
(`.ls-root`) carries `data-unsent` (answers not acknowledged yet) and `data-ready`; `globalThis.__labelSurfaces`
maps each key to its state (`log`: every accepted press with the entry id shown; `ignored`: presses not taken;
`paints`: every item drawn {entry_id, key_ts: the keydown timeStamp that drew it or null, drawn, painted: the task
right after the frame holding it was painted}, for benchmarks/bench_label_page.py).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import streamlit as st
from sqlalchemy.exc import OperationalError

from app.labeling import SurfaceOptions, receive, receive_review, review_data, surface_data
from storage.db import Database, is_busy
from storage.errors import StorageError

COMPONENT_NAME = "workbench_label_surface"
_HERE = Path(__file__).resolve().parent
_log = logging.getLogger(__name__)

_component = st.components.v2.component(
    COMPONENT_NAME,
    html=(_HERE / "surface.html").read_text(encoding="utf-8"),
    css=(_HERE / "surface.css").read_text(encoding="utf-8"),
    js=(_HERE / "surface.js").read_text(encoding="utf-8"),
)


def mount(data: dict, key: str = "label_surface", on_sync: Callable[[], None] | None = None) -> None:
    """Mount the component with `data`; `on_sync()` runs (before the next page run) when it sends a batch, which
    `last_batch(key)` then returns. Its "More like this" button (data["more_like_this"]) sends the "like" trigger:
    `like_request(key)` then returns the item id once."""
    _component(key=key, data=data, on_sync_change=on_sync or (lambda: None), on_like_change=_on_like(key),
               width="stretch", height="content")


def _trigger(key: str, name: str) -> dict | None:
    state = st.session_state.get(key)
    if state is None:
        return None
    try:
        value = state.get(name) if hasattr(state, "get") else getattr(state, name, None)
    except (AttributeError, KeyError):
        return None
    return value if isinstance(value, dict) else None


def last_batch(key: str = "label_surface") -> dict | None:
    """The batch (the "sync" trigger value) that started this run, or None."""
    return _trigger(key, "sync")


def _on_like(key: str) -> Callable[[], None]:
    def callback() -> None:
        value = _trigger(key, "like")
        try:
            st.session_state[f"_{key}_like"] = int(value["item_id"])
        except (TypeError, KeyError, ValueError):
            return
    return callback


def like_request(key: str = "label_surface") -> int | None:
    """The item whose "More like this" button started this run (once), or None."""
    return st.session_state.pop(f"_{key}_like", None)


def show_label_surface(db: Database, project_id: int, annotator: str,
                       options: SurfaceOptions = SurfaceOptions(), key: str = "label_surface",
                       signed_in: bool = False) -> dict:
    """Draw the label surface for `annotator` on `project_id`; returns the data it was mounted with. `signed_in`:
    the name comes from the session's sign-in, so every answer is stored under it (app.labeling.receive).

    The component's batch is applied in the widget callback (before the page body runs again), so the data built
    in this run already acknowledges it. A database that is busy or down leaves the answers unacknowledged: the
    component keeps them and sends them again.
    """
    def apply(batch: dict) -> None:
        receive(db, project_id, annotator, batch, options, signed_in=signed_in)

    def build(client_id: str | None, error: str | None) -> dict:
        return surface_data(db, project_id, annotator, client_id=client_id, options=options, instance=key,
                            error=error)

    return run_component(key, apply, build)


def show_review_surface(db: Database, project_id: int, reviewer: str, options: SurfaceOptions = SurfaceOptions(),
                        key: str = "review_surface", signed_in: bool = False,
                        may_answer: Callable[[], str | None] | None = None) -> dict:
    """Draw the label surface on the project's review queue (the disputed items) for `reviewer`; returns the data
    it was mounted with. `may_answer()` runs before a batch is applied (the page's role, checked again: callbacks
    run before the page's own check) and returns why not, or None; a refused batch is kept by the tab."""

    def apply(batch: dict) -> None:
        refused = may_answer() if may_answer is not None else None
        if refused:
            raise StorageError(refused)
        receive_review(db, project_id, reviewer, batch, signed_in=signed_in)

    def build(client_id: str | None, error: str | None) -> dict:
        return review_data(db, project_id, reviewer, client_id=client_id, options=options, instance=key, error=error)

    return run_component(key, apply, build)


def run_component(key: str, apply: Callable[[dict], None], build: Callable[[str | None, str | None], dict],
          mount_with: Callable[..., None] | None = None) -> dict:
    """Apply the batch that started this run (in the widget callback), build the data and mount it with
    `mount_with(data, key=, on_sync=)` (this component's `mount` unless given: the grid shares this)."""
    client_key = f"_{key}_client_id"
    error_key = f"_{key}_error"

    def on_sync() -> None:
        batch = last_batch(key)
        if not batch:
            return
        st.session_state[client_key] = str(batch.get("client_id") or "")[:64] or None
        try:
            apply(batch)
            st.session_state.pop(error_key, None)
        except (OperationalError, StorageError, ValueError) as error:
            # Nothing of the batch was committed, so nothing is acknowledged: the tab keeps the answers and resends.
            _log.warning("label surface batch not applied: %s", error)
            if is_busy(error):
                said = ("The database is busy: another process holds its lock. Your answers are not saved yet; "
                        "this tab keeps them and sends them again.")
            elif isinstance(error, StorageError):
                said = f"Your answers were not saved: {error}. This tab keeps them until they can be sent."
            else:
                said = "The server could not store your answers yet; they are kept and resent."
            st.session_state[error_key] = said

    data = build(st.session_state.get(client_key), st.session_state.pop(error_key, None))
    (mount_with or mount)(data, key=key, on_sync=on_sync)
    return data


__all__ = ["SurfaceOptions", "last_batch", "like_request", "mount", "run_component", "show_label_surface",
           "show_review_surface"]
