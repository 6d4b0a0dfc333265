"""A tiny Streamlit script for the label surface's browser tests (tests/test_label_surface.py): the component over
a real workbench (WORKBENCH_HOME / WORKBENCH_DB_URL), through app.labeling, with a sidebar select box and a text
field (to check where keys go) and a Rerun button. ?annotator=NAME; HARNESS_PROJECT, HARNESS_LEASE_SECONDS,
HARNESS_GUARD_MS, HARNESS_AHEAD from the environment."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.label_surface import SurfaceOptions, show_label_surface  # noqa: E402
from app.settings import Settings  # noqa: E402
from storage.db import Database  # noqa: E402


@st.cache_resource
def database(url: str) -> Database:
    return Database(url)


settings = Settings.from_env()
db = database(settings.db_url)
project_id = int(os.environ["HARNESS_PROJECT"])
annotator = st.query_params.get("annotator") or "annotator-1"
options = SurfaceOptions(
    ahead=int(os.environ.get("HARNESS_AHEAD", "5")),
    lease_seconds=int(os.environ.get("HARNESS_LEASE_SECONDS", "60")),
    guard_ms=int(os.environ.get("HARNESS_GUARD_MS", "120")),
)
with st.sidebar:
    st.selectbox("Project", ["this project", "another project"], key="pick")
    st.text_input("Notes", key="notes")
st.button("Rerun", key="rerun")
data = show_label_surface(db, project_id, annotator, options)
st.caption(f"runs: {st.session_state.setdefault('runs', 0) + 1}; held: {len(data['items'])}")
st.session_state["runs"] += 1
