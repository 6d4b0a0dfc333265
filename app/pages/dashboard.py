"""Dashboard: accuracy per label spent (one point per trained round) and how the labels spread over the classes."""
from collections import Counter

import altair as alt
import pandas as pd
import streamlit as st

from app import ui

METRICS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy"}

wb = ui.get_workbench()
project_id, annotator = ui.sidebar(wb)
st.title("Dashboard")
project_id = ui.require_project(project_id)

project = wb.project(project_id)
status = wb.status(project_id)
points = wb.chart_data(project_id)

# ----- headline numbers -----------------------------------------------------------------------------------------------
latest = points[-1] if points else {}
c1, c2, c3, c4 = st.columns(4)
c1.metric("pool labels", status["labeled_pool"])
c2.metric("eval labels", f"{status['labeled_eval']} of {status['items'].get('eval', 0)}")
c3.metric("trained rounds", len(points))
c4.metric("eval accuracy", ui.pct(latest.get("accuracy")))

# ----- label efficiency ---------------------------------------------------------------------------------------------
st.subheader("Accuracy per label spent")
if not points:
    st.info("No round has been trained yet: the first point appears when round 0 closes and the model is trained.")
else:
    frame = pd.DataFrame(points)
    long = frame.melt(
        id_vars=["round", "strategy", "labels"], value_vars=list(METRICS), var_name="metric", value_name="value"
    )
    long["metric"] = long["metric"].map(METRICS)
    chart = (
        alt.Chart(long.dropna(subset=["value"]))
        .mark_line(point=True)
        .encode(
            x=alt.X("labels:Q", title="pool labels spent", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("value:Q", title="on the eval set", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("metric:N", title=None),
            tooltip=["round", "strategy", "labels", "metric", alt.Tooltip("value:Q", format=".1%")],
        )
    )
    st.altair_chart(chart, width="stretch")
    st.dataframe(
        frame.rename(columns={"balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1", "eval_n": "eval n"}),
        hide_index=True,
        width="stretch",
    )

# ----- labels per class ---------------------------------------------------------------------------------------------
st.subheader("Labels per class")
counts: Counter = Counter()
for split in ("pool", "eval"):
    for value in wb.labels(project_id, split=split).values():
        for k in value:
            counts[(project.classes[k], split)] += 1
per_class = pd.DataFrame(
    [
        {"class": name, "split": split, "labels": counts[(name, split)]}
        for name in project.classes
        for split in ("pool", "eval")
    ]
)
if per_class["labels"].sum() == 0:
    st.info("No labels yet.")
else:
    bars = (
        alt.Chart(per_class)
        .mark_bar()
        .encode(
            x=alt.X("class:N", sort=list(project.classes)),
            y=alt.Y("labels:Q", title="labels", stack=True),
            color=alt.Color("split:N", title=None),
            tooltip=["class", "split", "labels"],
        )
    )
    st.altair_chart(bars, width="stretch")
