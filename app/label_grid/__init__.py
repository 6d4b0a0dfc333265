"""The label grid: a Streamlit components-v2 component (inline HTML/CSS/JS shipped in this package; no iframe, no
CDN) that labels a page of items at once: every thumbnail starts ticked, the labeler unticks the ones that are not
the page's class (Space on the cursor, the arrow keys move it, or a click) and accepts with Enter; each ticked
item becomes its own answer, and unticked items stay unlabeled (they go back to the pool, and the next pages of
the same class, or the same item's neighbours, leave them out). Enter with nothing ticked moves on.

Use from a page (app/pages/grid.py):

    from app.label_grid import show_label_grid
    data = show_label_grid(wb.db, project_id, annotator, mode="grid", page_class=3)

`show_label_grid(db, project_id, annotator, mode, *, page_class, like, item_ids, options, key, signed_in) -> dict`
registers a callback that applies the component's batch (app.labeling.receive_grid: each answer exactly once,
through a hand-picked queue entry, storage.hand_picks) before the page body runs, builds the data
(app.labeling.grid_data) and mounts the component; it returns the data it mounted with.

The data the component takes (app.labeling.grid_data builds it):

    {"instance": str (the key), "project_id": int, "annotator": str, "task": str,
     "mode": "grid" | "like" | "items", "arm": "grid" | "like" | "map" (sent back with each answer),
     "context": str (what the page was chosen for: "grid:<class>", "like:<item id>", "items:<crc of the ids>"),
     "page_class": int | None (the class the ticked items get; a class key or button changes it in the browser),
     "page_key": str (the page's identity: a new key draws a new page, the same key keeps the ticks),
     "classes": [{"index", "name", "key"}],
     "items": [{"item_id", "caption", "thumb" (data: URL or None), "problem", "locked" (why it cannot be labeled
                here, or None), "seed": bool (the item "more like this" was asked about), "p" (the model's
                probability of page_class, or None)}],
     "empty_reason": str | None, "client_id": str | None, "acked_seq": int, "refusals": [Outcome dicts],
     "settings": {"guard_ms": 120, "resend_ms": 2500}, "error": str | None}

The value it returns is one trigger, "sync", sent after an accept and again until acknowledged:

    {"client_id": str (one per browser tab), "sent_at": ms,
     "passed": {context: [item ids left unticked on an accepted page]} (not offered again in that context),
     "answers": [{"seq", "entry_id" (the item id), "kind": "label", "value": [class], "seconds", "project_id",
                  "annotator", "arm"}]}                                        # every unacknowledged answer

In the browser: each thumbnail is a `.lg-cell` with `data-item-id` and `data-ticked`; the root (`.lg-root`)
carries `data-ready`, `data-unsent`, `data-page-key` and `data-page-class`; `globalThis.__labelGrids` maps each
key to its state (`log`: every accepted page {seqs, shown, ticked, page_class}; `ignored`: keys not taken;
`pages`: pages painted). A key within guard_ms of a page being painted, or while an accepted page is being saved,
is ignored: a double press of Enter never accepts the next page.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import streamlit as st

from app.label_surface import run_component
from app.labeling import GridOptions, grid_data, receive_grid
from storage.db import Database

COMPONENT_NAME = "workbench_label_grid"
_HERE = Path(__file__).resolve().parent

_component = st.components.v2.component(
    COMPONENT_NAME,
    html=(_HERE / "grid.html").read_text(encoding="utf-8"),
    css=(_HERE / "grid.css").read_text(encoding="utf-8"),
    js=(_HERE / "grid.js").read_text(encoding="utf-8"),
)


def mount(data: dict, key: str = "label_grid", on_sync: Callable[[], None] | None = None) -> None:
    _component(key=key, data=data, on_sync_change=on_sync or (lambda: None), width="stretch", height="content")


def show_label_grid(db: Database, project_id: int, annotator: str, mode: str = "grid", *,
                    page_class: int | None = None, like: int | None = None, item_ids: list[int] | None = None,
                    options: GridOptions = GridOptions(), key: str = "label_grid", signed_in: bool = False) -> dict:
    """Draw the grid for `annotator` (see the module doc); returns the data it was mounted with."""
    passed_key = f"_{key}_passed"

    def apply(batch: dict) -> None:
        if isinstance(batch.get("passed"), dict):  # kept before the answers: a busy database must not lose it
            st.session_state[passed_key] = batch["passed"]
        receive_grid(db, project_id, annotator, batch, options, signed_in=signed_in)

    def build(client_id: str | None, error: str | None) -> dict:
        return grid_data(db, project_id, annotator, mode, page_class=page_class, like=like, item_ids=item_ids,
                         client_id=client_id, options=options, instance=key, error=error,
                         passed=st.session_state.get(passed_key))

    return run_component(key, apply, build, mount_with=mount)


__all__ = ["GridOptions", "mount", "show_label_grid"]
