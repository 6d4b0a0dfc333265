"""Review: the labeled pool items whose label is likely wrong, likeliest first, from the latest scan (the review job,
app.jobs.review: out-of-fold probabilities and cleanlab), each with its image, its label and the model's suggestion.
Per item: Keep (the label is right: recorded, the item leaves the list) or Relabel (to the suggestion or any class).
Each decision is an annotation row by the signed-in reviewer (storage.reviews), so the next training uses it.

Keys act on the first item listed: Enter accepts the suggestion, K keeps the label, a class's key relabels to it
(Streamlit's button shortcuts, which do not fire while typing in a field)."""
from pathlib import Path

import streamlit as st
from sqlalchemy.exc import OperationalError

from app import job_kinds, ui
from app.page_table import page
from storage import reviews
from storage.errors import StorageError

SHOWN = 10  # flagged items listed at once; each decision brings in the next
ACCEPT_KEY = "Enter"
KEEP_KEY = "k"
IMAGE_WIDTH = 180

wb, project_id, annotator = ui.open_page("review")


def _allowed(what: str) -> bool:
    """The page's role, checked again in a callback: callbacks run before the page's own access check."""
    if ui.has_access("reviewer"):
        return True
    ui.flash("error", f"{what}: needs the reviewer role")
    return False


def start_scan(project_id: int) -> None:
    if not _allowed("Scan for likely mistakes"):
        return
    if any(job.kind == "review" for job in wb.status(project_id).jobs):
        ui.flash("info", "A scan is already queued or running.")
        return
    try:
        with wb.db.write() as s:
            job = job_kinds.enqueue(s, "review", project_id)
    except OperationalError as error:
        ui.flash("error", f"Scan for likely mistakes: {ui.database_problem(error)}")
    else:
        ui.flash("success", f"Scan queued as job {job.id}.")


def decide(item: reviews.Flagged, decision: str, value: int | None, reviewer: str, classes: list[str]) -> None:
    """Store one decision; `value` None takes the class picked in the item's "Relabel as" box."""
    name = Path(item.key).name
    if not _allowed(f"Review of {name}"):
        return
    if decision == "relabel" and value is None:
        value = st.session_state.get(f"pick_{item.item_id}", item.suggested)
    if ui.name_is_signed_in():  # the person signed in now, whoever drew the button
        reviewer = ui.current_sign_in().name
    try:
        with wb.db.write() as s:
            row = reviews.record_review(s, project_id, item.item_id, reviewer, decision,
                                        None if value is None else [value], seen_annotation_id=item.annotation_id)
    except StorageError as error:
        ui.flash("error", f"Review of {name}: {error}")
    except OperationalError as error:
        ui.flash("error", f"Review of {name}: {ui.database_problem(error)}")
    else:
        # Sentences that never start with the file name: a line starting "0217." would read as a Markdown list.
        if row.kind == "confirm":
            ui.flash("success", f"Kept {name} as {classes[item.given]}.")
        else:
            ui.flash("success", f"Relabeled {name}: {classes[item.given]} → {classes[row.value[0]]}.")


def share(p: float) -> str:
    return f"{p:.0%}" if p >= 0.005 else "<1%"


def class_keys(classes: list[str]) -> list[str | None]:
    """The Label page's key of each class (app.ui.shortcut_keys), minus the one Keep uses."""
    return [None if key == KEEP_KEY else key for key in ui.shortcut_keys(classes)]


def show_image(project, item: reviews.Flagged) -> None:
    path = Path(project.data_root) / item.key
    problem = ui.image_problem(path, project.data_root)
    if problem is not None:
        st.warning(ui.text(f"{Path(item.key).name} cannot be shown: {problem}"))
        return
    st.image(ui.load_for_display(path), width=IMAGE_WIDTH)
    st.caption(ui.text(f"file {Path(item.key).name}"))


def show_item(project, item: reviews.Flagged, first: bool) -> None:
    classes = project.classes
    given, suggested = classes[item.given], classes[item.suggested]
    with st.container(border=True):
        image_col, info_col = st.columns([1, 3])
        with image_col:
            show_image(project, item)
        with info_col:
            st.markdown(f"**#{item.rank + 1}** · labeled **{ui.text(given)}** by {ui.text(item.labeled_by)} "
                        f"(the model gives it {share(item.given_probability)})")
            st.markdown(f"The model suggests **{ui.text(suggested)}** ({share(item.probability)})")
            args = (annotator, classes)
            with st.container(horizontal=True):
                if item.suggested != item.given:
                    st.button(ui.text(f"Relabel as {suggested}"), key=f"accept_{item.item_id}", type="primary",
                              on_click=decide, args=(item, "relabel", item.suggested, *args),
                              shortcut=ACCEPT_KEY if first else None)
                st.button(ui.text(f"Keep {given}"), key=f"keep_{item.item_id}", on_click=decide,
                          args=(item, "confirm", None, *args), shortcut=KEEP_KEY if first else None)
            if first:  # a button per class that has a key, on its key
                with st.container(horizontal=True):
                    for k, key in enumerate(class_keys(classes)):
                        if key is not None:
                            st.button(ui.text(classes[k]), key=f"class_{item.item_id}_{k}", on_click=decide,
                                      args=(item, "relabel", k, *args), shortcut=key, type="tertiary")
            pick_col, button_col = st.columns([2, 1], vertical_alignment="bottom")
            pick_col.selectbox("Relabel as", range(len(classes)), index=item.suggested,
                               format_func=classes.__getitem__, key=f"pick_{item.item_id}")
            button_col.button("Relabel", key=f"relabel_{item.item_id}", on_click=decide,
                              args=(item, "relabel", None, *args))
            st.page_link(page("grid").file, label="More like this", icon=":material/grid_view:",
                         query_params={"like": str(item.item_id), "project": str(project_id)},
                         help="This item and its nearest unlabeled pool items, to label several at once")


ui.show_flash()
project = wb.project(project_id)
if project.task != "single_label":
    st.info("The scan for likely label mistakes covers single-label projects only: a multi-label project's labels "
            "are sets of tags, which it does not check.")
    st.stop()

# ----- the scan -----------------------------------------------------------------------------------------------------
active = [job for job in wb.status(project_id).jobs if job.kind == "review"]
st.button("Scan for likely mistakes", key="scan", type="primary", on_click=start_scan, args=(project_id,),
          disabled=bool(active),
          help="Predicts every labeled pool item with the project's head trained on the other labels only "
               "(up to 5 folds), then ranks the items whose label those predictions contradict (cleanlab).")


ui.job_progress(wb, project_id, "review", active)

with wb.db.read() as s:
    scan = reviews.latest_scan(s, project_id)
if scan is None:
    st.info("No scan yet: scan the labels to list the items whose label is likely wrong.")
    st.stop()

st.caption(f"Scan of job {scan.job_id} ({scan.created_at:%Y-%m-%d %H:%M} UTC): {scan.flagged} of {scan.labels} "
           f"pool labels flagged ({scan.folds}-fold out-of-fold predictions); {scan.confirmed} kept, "
           f"{scan.changed} relabeled or changed since, {len(scan.open)} to review.")
if scan.labels_changed_since:
    st.info(f"{scan.labels_changed_since} pool label(s) were given, changed or withdrawn after this scan: scan "
            "again to check them.")
if not scan.open:
    st.success("Nothing left to review in this scan.")
    st.stop()

st.caption(f"Keys act on the first item: {ACCEPT_KEY} accepts the suggestion, {KEEP_KEY.upper()} keeps the label, "
           "a class's key relabels to it.")
for position, item in enumerate(scan.open[:SHOWN]):
    show_item(project, item, first=position == 0)
if len(scan.open) > SHOWN:
    st.caption(f"{len(scan.open) - SHOWN} more below these; each decision brings in the next.")
