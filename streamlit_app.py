"""Entry point of the web UI (`streamlit run streamlit_app.py`): navigation over the pages of app/page_table.py,
each run inside the frame that turns its refusals and database faults into worded messages."""
import streamlit as st

from app import ui
from app.page_table import PAGES

st.set_page_config(page_title="Labeling workbench", page_icon=":material/label:", layout="wide")

navigation = st.navigation(
    [st.Page(spec.file, title=spec.title, icon=spec.icon, url_path=spec.url_path) for spec in PAGES]
)
with ui.worded_errors():
    navigation.run()
