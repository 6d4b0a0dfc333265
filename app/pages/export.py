"""Export: one download per row of app.exports.FORMATS (the labels, the model's predictions for the unlabeled
items, the trained head), under the section the row names."""
import streamlit as st

from app import ui
from app.exports import FORMATS, ExportFormat, refusal
from app.workbench import WorkbenchError
from storage.errors import StorageError

wb, project_id, _ = ui.open_page("export")

status = wb.status(project_id)
st.write(f"{status.labeled_pool} pool labels and {status.labeled_eval} eval labels so far.")


def offer(fmt: ExportFormat) -> None:
    """A download button for `Workbench.export(project_id, fmt.name)`; an export that cannot be made says why."""
    col_button, col_about = st.columns([1, 2])
    col_about.caption(fmt.help)
    try:
        file_name, data = wb.export(project_id, fmt.name)
    except (WorkbenchError, StorageError) as error:
        col_button.download_button(fmt.title, data=b"", key=f"download_{fmt.name}", disabled=True, width="stretch")
        col_about.warning(str(error))
        return
    col_button.download_button(fmt.title, data=data, file_name=file_name, mime=fmt.mime, key=f"download_{fmt.name}",
                               on_click="ignore", width="stretch")


def offer_on_click(fmt: ExportFormat) -> None:
    """A build button, then the download of what it built (kept in the session until built again)."""
    built_key = f"_{fmt.name}_{project_id}"
    col_button, col_about = st.columns([1, 2])
    col_about.caption(fmt.help)
    if col_button.button(f"Build {fmt.title}", key=f"build_{fmt.name}", width="stretch"):
        try:
            with st.spinner(f"Building the {fmt.title}"):
                st.session_state[built_key] = wb.export(project_id, fmt.name)
        except (WorkbenchError, StorageError) as error:
            st.session_state.pop(built_key, None)
            col_about.error(str(error))
    if built_key in st.session_state:
        file_name, data = st.session_state[built_key]
        col_button.download_button(
            f"{fmt.title} ({len(data) / 1e6:.1f} MB)", data=data, file_name=file_name, mime=fmt.mime,
            key=f"download_{fmt.name}", on_click="ignore", width="stretch",
        )
        col_about.caption("Built from the labels at the time of the click; build it again after more labeling.")


def offer_later(fmt: ExportFormat) -> None:
    """A disabled download button for a format of the trained model, before the first training."""
    col_button, col_about = st.columns([1, 2])
    col_button.download_button(fmt.title, data=b"", key=f"download_{fmt.name}", disabled=True, width="stretch")
    col_about.caption(fmt.before_training)


task = wb.project(project_id).task
trained = wb.has_predictions(project_id)
for section in dict.fromkeys(fmt.section for fmt in FORMATS.values()):
    st.subheader(section)
    for fmt in (f for f in FORMATS.values() if f.section == section):
        refused = refusal(fmt, task)
        if refused:
            st.caption(f"{fmt.title} is not offered for this multi-label project: {refused}.")
        elif fmt.before_training and not trained:
            offer_later(fmt)
        elif fmt.build_on_click:
            offer_on_click(fmt)
        else:
            offer(fmt)
