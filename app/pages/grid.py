"""Grid: label a page of items at once (app/label_grid, a client-side component).

Three ways to fill the page, by its link:
- /grid: grid accept, the open pool items (not labeled, not queued, not of the evaluation set) the latest model
  gives the highest probability of the class picked here, likeliest first;
- /grid?like=ITEM: more like this, the item and its nearest open pool neighbours by cosine on the cached features
  (the Label and Review pages link here);
- /grid?items=ID,ID,...: the items chosen elsewhere (a map selection), at most 200.

Every thumbnail starts ticked; untick the ones that are not the page's class and accept with Enter: each ticked
item gets its own label (through a queue entry whose arm says how it was picked: "grid", "like" or "map", since
these labels are not an active-learning sample, storage.hand_picks); unticked items stay unlabeled.
"""
import streamlit as st

from app import labeling, ui
from app.label_grid import show_label_grid
from storage.hand_picks import hand_picked_count

wb, project_id, annotator = ui.open_page("grid")


def query_int(name: str) -> int | None:
    value = str(st.query_params.get(name) or "").strip()
    return int(value) if labeling.is_item_id(value) else None


project = wb.project(project_id)
classes = list(project.classes)
like = query_int("like")
try:
    item_ids = labeling.parse_item_ids(st.query_params.get("items")) if "items" in st.query_params else None
except ValueError as error:
    st.error(ui.text(str(error)))
    st.stop()
mode = "like" if like is not None else ("items" if item_ids is not None else "grid")

if project.task != "single_label":
    st.info("The grid labels single-label projects only: a multi-label item needs its own set of tags (use the "
            "Label page).")
    st.stop()

page_class = query_int("class")
page_class = page_class if page_class is not None and page_class < len(classes) else None
size = labeling.GRID_SIZE
if mode == "grid":
    pick_col, size_col = st.columns([3, 1])
    page_class = pick_col.selectbox(
        "Class of the page", range(len(classes)), index=page_class or 0, format_func=classes.__getitem__,
        key="_grid_class", help="The page shows the open pool items the latest model gives the highest probability "
                                "of this class; a class key on the page changes the label the ticked ones get.")
    size = int(size_col.number_input("Thumbnails per page", min_value=4, max_value=60, value=labeling.GRID_SIZE,
                                     step=4, key="_grid_size"))
    st.caption("Untick (Space on the cursor, arrow keys to move, or a click) every item that is not of the page's "
               "class, then Enter labels the ticked ones; unticked items stay unlabeled and go back to the pool.")
elif mode == "like":
    st.caption(f"Item {like} (outlined) and its nearest unlabeled pool items by cosine similarity of their features. "
               "Pick the class of the page with its key, untick the ones that differ, then Enter labels the "
               "ticked ones.")
    ui.page_link("grid", "Grid accept by predicted class")
else:
    st.caption(f"{len(item_ids)} items chosen. Pick the class of the page with its key, untick the ones that "
               "differ, then Enter labels the ticked ones.")

options = labeling.GridOptions(size=size)
show_label_grid(wb.db, project_id, annotator, mode, page_class=page_class, like=like, item_ids=item_ids,
                options=options, key=f"label_grid_{mode}", signed_in=ui.name_is_signed_in())
with wb.db.read() as s:
    hand = hand_picked_count(s, project_id)
st.caption(f"{hand} label{'s' if hand != 1 else ''} of this project were given by hand (grid, more like this, "
           "map): they are not an active-learning sample, and their queue entries say so.")
