"""Entry point of the web UI (`streamlit run streamlit_app.py`): navigation over the pages of app/page_table.py,
each run inside the frame that turns its refusals and database faults into worded messages.

Every page of the table answers at its own URL path (/projects, /label, /rounds, ...): the app's root is a hidden
page that forwards to the first page of the table, keeping the link's query parameters (?token=, ?annotator=).
Streamlit serves its default page only at the root, so no page of the table is the default one.
"""
from pathlib import Path

import streamlit as st

from app import ui
from app.page_table import PAGES

FAVICON = Path(__file__).resolve().parent / "app" / "static" / "favicon.png"  # local: no icon fetched from the web

st.set_page_config(page_title="Labeling workbench", page_icon=str(FAVICON), layout="wide")

pages = [st.Page(spec.file, title=spec.title, icon=spec.icon, url_path=spec.url_path) for spec in PAGES]


def _root() -> None:
    st.switch_page(pages[0], query_params=st.query_params.to_dict())


navigation = st.navigation([st.Page(_root, title=PAGES[0].title, url_path="start", default=True,
                                    visibility="hidden"), *pages])
with ui.worded_errors():
    navigation.run()
