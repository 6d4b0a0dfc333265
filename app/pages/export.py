"""Export: the labels (CSV, JSONL, ImageFolder zip) and the model's predictions for the unlabeled items."""
import streamlit as st

from app import ui
from app.workbench import WorkbenchError
from storage.exporters import ExportProblem

wb = ui.get_workbench()
ui.require_access("admin")  # a sign-in box and nothing else without the token
project_id, annotator = ui.sidebar(wb)
st.title("Export")
project_id = ui.require_project(project_id)

status = wb.status(project_id)
st.write(f"{status['labeled_pool']} pool labels and {status['labeled_eval']} eval labels so far.")


def offer(fmt: str, label: str, mime: str, about: str) -> None:
    """A download button for `Workbench.export(project_id, fmt)`; an export that cannot be made says why."""
    col_button, col_about = st.columns([1, 2])
    col_about.caption(about)
    try:
        file_name, data = wb.export(project_id, fmt)
    except (WorkbenchError, ExportProblem) as error:
        col_button.download_button(label, data=b"", key=f"download_{fmt}", disabled=True, width="stretch")
        col_about.warning(str(error))
        return
    col_button.download_button(
        label, data=data, file_name=file_name, mime=mime, key=f"download_{fmt}", on_click="ignore", width="stretch"
    )


st.subheader("Labels")
offer("csv", "Labels (CSV)", "text/csv", "One row per labeled item: path, label, split, annotator, labeled_at.")
offer("jsonl", "Labels (JSONL)", "application/x-ndjson", "The same rows as JSON lines.")

if wb.project(project_id).task == "multi_label":
    st.caption("Multi-label project: the CSV's label column joins the tags with ';', the JSONL gives them as a "
               "list ([] is 'none of these'). The ImageFolder zip is not offered: its one folder per class cannot "
               "hold an image with several tags.")
    zip_key = None
else:
    zip_key = f"_zip_{project_id}"
# The zip holds the labeled images themselves, so it is built only when asked for.
col_button, col_about = st.columns([1, 2])
if zip_key is not None:
    col_about.caption("The labeled images, one folder per class (train/ for pool labels, eval/ for the eval set).")
if zip_key is not None and col_button.button("Build ImageFolder zip", key="build_zip", width="stretch"):
    try:
        with st.spinner("Building the zip"):
            st.session_state[zip_key] = wb.export(project_id, "zip")
    except (WorkbenchError, ExportProblem) as error:
        st.session_state.pop(zip_key, None)
        col_about.error(str(error))
if zip_key is not None and zip_key in st.session_state:
    file_name, data = st.session_state[zip_key]
    col_button.download_button(
        f"ImageFolder zip ({len(data) / 1e6:.1f} MB)", data=data, file_name=file_name, mime="application/zip",
        key="download_zip", on_click="ignore", width="stretch",
    )
    col_about.caption("Built from the labels at the time of the click; build it again after more labeling.")

st.subheader("Predictions")
if wb.has_predictions(project_id):
    offer("predictions", "Predictions (CSV)", "text/csv",
          "The latest model's class and confidence for every unlabeled item.")
else:
    st.download_button("Predictions (CSV)", data=b"", key="download_predictions", disabled=True)
    st.caption("Predictions exist after the first training: when round 0 closes, or after Retrain now (Rounds page).")

st.subheader("Model")
if wb.has_predictions(project_id):
    offer("head", "Trained head (.safetensors)", "application/octet-stream",
          "The latest head with its classes and backbone: start another project from it (Projects page, "
          "'Start from a source head'), e.g. to adapt it to a new pool with LFTL.")
else:
    st.download_button("Trained head (.safetensors)", data=b"", key="download_head", disabled=True)
    st.caption("A head exists after the first training.")
