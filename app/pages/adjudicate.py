"""Adjudicate: the review queue of disputed items (several annotators answered an item and their answers differ,
storage.labels), on the Label page's surface (app/label_surface): the same keys, each item captioned with the
answers given and who gave them. A class key stores the reviewer's final label exactly once (an 'adjudicate' row;
every earlier answer stays), u undoes it, s leaves the item for later. The adjudicated label is the one that
trains, is measured and is exported. Below: the items adjudicated so far, with every answer."""
import pandas as pd
import streamlit as st

from app import labeling, ui
from app.label_surface import show_review_surface
from app.settings import Settings
from storage.answers import item_files
from storage.labels import ADJUDICATED, DISPUTED, item_labels

WAIT_POLL_SECONDS = 3.0  # while nothing is disputed, look for new disputes this often

wb, project_id, reviewer = ui.open_page("adjudicate")


def may_answer() -> str | None:
    """The page's role, checked again in the surface's callback (callbacks run before the page's own check)."""
    return None if ui.has_access("reviewer") else "adjudicating needs the reviewer role"


def waiting_view(shown: int) -> None:
    @st.fragment(run_every=WAIT_POLL_SECONDS)
    def body() -> None:
        with wb.db.read() as s:
            now = sum(1 for state in item_labels(s, project_id).values() if state.status == DISPUTED)
        if now != shown:
            st.rerun()

    body()


def adjudicated_table(classes: list[str]) -> None:
    with wb.db.read() as s:
        done = [state for state in item_labels(s, project_id).values() if state.status == ADJUDICATED]
        keys = item_files(s, [state.item_id for state in done])
    if not done:
        return
    st.subheader("Adjudicated")
    rows = []
    for state in sorted(done, key=lambda state: -state.label.annotation_id):
        rows.append({"item": keys[state.item_id][0].rsplit("/", 1)[-1],
                     "answers": labeling.answers_caption(state, classes),
                     "final label": ", ".join(classes[k] for k in state.label.value),
                     "by": state.label.annotator, "at": state.label.created_at})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


ui.show_flash()
st.caption("Items that several annotators answered differently. The answers given are under each image; press the "
           "final class's key (u undoes, s leaves it for later). Until then the item does not train and is not "
           "measured.")
options = labeling.SurfaceOptions.from_settings(Settings.from_env())
data = show_review_surface(wb.db, project_id, reviewer, options, signed_in=ui.name_is_signed_in(),
                           may_answer=may_answer)
if not data["items"]:
    waiting_view(0)
adjudicated_table([c["name"] for c in data["classes"]])
