"""Map: the project's items as points on a 2-D projection of their features (the map job, app.jobs.map: UMAP, or
PCA for a small pool), coloured by label, prediction, uncertainty, split or by what the latest round picked.
Hovering a point shows its thumbnail; a box drag (or clicks, shift-click for more) selects points, which open on
the Grid page for labeling ("Label these N", "More like this").

A large pool is drawn as a sample (learners.projection.drawn_sample): every picked and labeled item, then a
stratified sample of the rest; the page says how many of how many it draws."""
import base64
import io
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image
from sqlalchemy.exc import OperationalError

from app import job_kinds, ui
from app.jobs.map import NO_PREDICTION, NOT_PICKED, UNLABELED, MapView, map_view
from app.page_table import page
from learners.images import read_image
from learners.projection import drawn_sample
from storage.images import file_problem

DRAW_LIMITS = (1000, 2000, 5000, 10000)
THUMB_SIDE = 48
GRID_IDS = 200  # item ids carried to the Grid page at most
STRIP = 24  # thumbnails of the selection shown below the chart
MISSING_COLOUR = "#c8c8c8"
TABLEAU = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
           "#bab0ac"]
CATEGORY20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
              "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
              "#17becf", "#9edae5"]
COLOUR_BY = {
    "label": "Label",
    "prediction": "Model prediction",
    "uncertainty": "Uncertainty (1 − top probability)",
    "split": "Evaluation set / pool",
    "picked": "Picked by the latest round",
}
GREY = {"label": UNLABELED, "prediction": NO_PREDICTION, "picked": NOT_PICKED}

wb, project_id, annotator = ui.open_page("map")


def compute_map(project_id: int) -> None:
    if any(job.kind == "map" for job in wb.status(project_id).jobs):
        ui.flash("info", "The map is already queued or being computed.")
        return
    try:
        with wb.db.write() as s:
            job = job_kinds.enqueue(s, "map", project_id)
    except OperationalError as error:
        ui.flash("error", f"Compute the map: {ui.database_problem(error)}")
    else:
        ui.flash("success", f"Map queued as job {job.id}.")


@st.cache_data(max_entries=50_000, show_spinner=False)
def thumbnail(path: str, mtime_ns: int) -> str | None:
    """A small PNG data URI of the image (None when it cannot be read); keyed by the file's version."""
    try:
        image = read_image(path)
    except Exception:  # any file that fails to decode simply has no thumbnail
        return None
    if max(image.size) < THUMB_SIDE:  # tiny images (the 8x8 demo digits) enlarged with sharp pixels
        factor = THUMB_SIDE // max(image.size)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    else:
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnails(data_root: str, keys: list[str]) -> list[str | None]:
    out = []
    for key in keys:
        path = Path(data_root) / key
        if file_problem(path, data_root) is not None:
            out.append(None)
            continue
        out.append(thumbnail(str(path), path.stat().st_mtime_ns))
    return out


def palette(values: list[str], grey: str | None) -> alt.Scale:
    """A categorical scale: the missing value (unlabeled, no model, not picked) grey, the others distinct."""
    names = sorted(v for v in set(values) if v != grey)
    scheme = TABLEAU if len(names) <= len(TABLEAU) else CATEGORY20
    colours = [scheme[k % len(scheme)] for k in range(len(names))]
    if grey in values:
        names, colours = [*names, grey], [*colours, MISSING_COLOUR]
    return alt.Scale(domain=names, range=colours)


def points_frame(view: MapView, rows: np.ndarray, with_thumbnails: bool) -> pd.DataFrame:
    frame = pd.DataFrame({
        "item": view.item_ids[rows].astype(int),
        "x": view.coords[rows, 0].astype(float),
        "y": view.coords[rows, 1].astype(float),
        "file": [view.keys[r] for r in rows],
        "label": view.label[rows],
        "prediction": view.prediction[rows],
        "uncertainty": np.round(view.uncertainty[rows].astype(float), 3),
        "split": view.split[rows],
        "picked": view.picked[rows],
    })
    if with_thumbnails:
        frame["image"] = thumbnails(project.data_root, list(frame["file"]))
    # Grey (missing) points first, so the labeled and picked ones are drawn on top of them.
    frame["_back"] = (frame["picked"] == NOT_PICKED) & (frame["label"] == UNLABELED)
    return frame.sort_values("_back", ascending=False, kind="stable").drop(columns="_back")


def chart(frame: pd.DataFrame, colour_by: str) -> alt.Chart:
    if colour_by == "uncertainty":
        colour = alt.Color("uncertainty:Q", title="uncertainty", scale=alt.Scale(scheme="viridis", domain=[0, 1]))
    else:
        colour = alt.Color(f"{colour_by}:N", title=COLOUR_BY[colour_by],
                           scale=palette(list(frame[colour_by]), GREY.get(colour_by)))
    tooltip = [alt.Tooltip("image:N", title="image")] if "image" in frame else []
    tooltip += [alt.Tooltip(name, title=name) for name in ("file", "label", "prediction", "uncertainty", "split",
                                                            "picked")]
    return (
        alt.Chart(frame)
        .mark_circle(opacity=0.85, aria=False)  # no per-point aria-label: it would repeat every thumbnail
        .encode(
            x=alt.X("x:Q", axis=None, scale=alt.Scale(zero=False, nice=False)),
            y=alt.Y("y:Q", axis=None, scale=alt.Scale(zero=False, nice=False)),
            color=colour,
            size=alt.condition(alt.datum.picked != NOT_PICKED, alt.value(70), alt.value(22)),
            tooltip=tooltip,
        )
        .add_params(alt.selection_interval(name="box", encodings=["x", "y"]),
                    alt.selection_point(name="pick", fields=["item"], on="click"))
        .properties(height=560)
    )


def selected_items(event, frame: pd.DataFrame) -> list[int]:
    """The drawn items inside the box, then those clicked, in the frame's order."""
    selection = getattr(event, "selection", None) or {}
    chosen = np.zeros(len(frame), dtype=bool)
    box = selection.get("box") or {}
    if "x" in box and "y" in box:
        (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
        chosen |= frame["x"].between(x0, x1).to_numpy() & frame["y"].between(y0, y1).to_numpy()
    clicked = {int(point["item"]) for point in selection.get("pick") or [] if "item" in point}
    chosen |= frame["item"].isin(clicked).to_numpy()
    return [int(i) for i in frame["item"][chosen]]


def open_on_grid(query: dict[str, str], items: list[int]) -> None:
    st.session_state["grid_items"] = items
    st.switch_page(page("grid").file, query_params=query)


def selection_actions(chosen: list[int], frame: pd.DataFrame) -> None:
    carried = chosen[:GRID_IDS]
    st.markdown(f"**{len(chosen)} selected**" + (f" (the first {GRID_IDS} open for labeling)"
                                                  if len(chosen) > GRID_IDS else ""))
    with st.container(horizontal=True):
        if st.button(f"Label these {len(carried)}", key="label_selected", type="primary"):
            open_on_grid({"items": ",".join(map(str, carried))}, carried)
        if len(chosen) == 1 and st.button("More like this", key="more_like_this"):
            open_on_grid({"like": str(chosen[0])}, carried)
    if "image" in frame:
        strip = frame.set_index("item").loc[chosen[:STRIP]]
        images = [base64.b64decode(uri.partition(",")[2]) for uri in strip["image"] if uri]
        if images:
            st.image(images, width=THUMB_SIDE + 16)


ui.show_flash()
project = wb.project(project_id)

active = [job for job in wb.status(project_id).jobs if job.kind == "map"]
view = map_view(wb.db, project_id)
if view is None or view.stale:  # a current map needs no recomputing: labels, predictions and picks are read live
    st.button("Compute the map" if view is None else "Recompute the map", key="compute_map", type="primary",
              on_click=compute_map, args=(project_id,), disabled=bool(active),
              help="The worker projects the cached features to 2-D: UMAP (umap-learn) for 2,000 items or more, "
                   "PCA below that or without umap-learn. Fitted on at most 20,000 items; the others are placed "
                   "by the fit.")


ui.job_progress(wb, project_id, "map", active)

if view is None:
    st.info("No map yet: compute it to see the items laid out by their features.")
    st.stop()
if view.stale:
    st.warning("This map was computed from features the project no longer uses (its backbone changed): "
               "recompute it.")

left, middle, right = st.columns([2, 1, 1], vertical_alignment="bottom")
colour_by = left.selectbox("Colour by", list(COLOUR_BY), format_func=COLOUR_BY.__getitem__, key="map_colour")
limit = middle.selectbox("Points drawn at most", DRAW_LIMITS, index=1, key="map_limit")
with_thumbnails = right.toggle("Thumbnails on hover", value=True, key="map_thumbnails")

labeled = view.label != UNLABELED
picked = view.picked != NOT_PICKED
strata = np.array([f"{s}|{p}" for s, p in zip(view.split, view.prediction)], dtype=object)
rows = drawn_sample(strata, picked | labeled, limit, seed=project.seed)
n = len(view.item_ids)
round_note = "" if view.round_index is None else f" Picked: the queue of round {view.round_index} (larger points)."
if len(rows) < n:
    st.caption(f"Drawing {len(rows)} of {n} items: every picked and labeled item"
               f"{'' if (picked | labeled).sum() <= len(rows) else ' (a sample of them: more than the limit)'}, "
               "then a stratified sample of the rest in which each split and predicted class keeps its share."
               + round_note)
else:
    st.caption(f"Drawing all {n} items." + round_note)
st.caption(f"Map: {ui.text(view.note)}, computed {view.created_at:%Y-%m-%d %H:%M} UTC. Drag a box or click points "
           "(shift-click for more) to select; double-click clears.")

frame = points_frame(view, rows, with_thumbnails)
event = st.altair_chart(chart(frame, colour_by), on_select="rerun", key="map_chart", width="stretch")
chosen = selected_items(event, frame)
if chosen:
    selection_actions(chosen, frame)
