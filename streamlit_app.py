"""Entry point of the web UI (`streamlit run streamlit_app.py`): navigation over the pages in app/pages/."""
import streamlit as st

st.set_page_config(page_title="Labeling workbench", page_icon=":material/label:", layout="wide")

navigation = st.navigation(
    [
        st.Page("app/pages/projects.py", title="Projects", icon=":material/folder_open:", url_path="projects"),
        st.Page("app/pages/label.py", title="Label", icon=":material/label:", url_path="label"),
        st.Page("app/pages/rounds.py", title="Rounds", icon=":material/autorenew:", url_path="rounds"),
        st.Page("app/pages/dashboard.py", title="Dashboard", icon=":material/monitoring:", url_path="dashboard"),
        st.Page("app/pages/simulate.py", title="Simulate", icon=":material/science:", url_path="simulate"),
        st.Page("app/pages/export.py", title="Export", icon=":material/download:", url_path="export"),
    ]
)
navigation.run()
