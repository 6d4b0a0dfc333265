"""Dashboard: accuracy per label spent (one point per trained round) and how the labels spread over the classes."""
from collections import Counter

import altair as alt
import pandas as pd
import streamlit as st

from app import ui

wb = ui.get_workbench()
ui.require_access("annotator")  # a sign-in box and nothing else without the token
project_id, annotator = ui.sidebar(wb)
st.title("Dashboard")
project_id = ui.require_project(project_id)

project = wb.project(project_id)
metrics = ui.TASK_METRICS[project.task]
status = wb.status(project_id)
points = wb.chart_data(project_id)

# ----- headline numbers -----------------------------------------------------------------------------------------------
latest = points[-1] if points else {}
c1, c2, c3, c4 = st.columns(4)
c1.metric("pool labels", status["labeled_pool"])
c2.metric("eval labels", f"{status['labeled_eval']} of {status['items'].get('eval', 0)}")
c3.metric("trained rounds", len(points))
headline = next(iter(metrics))
c4.metric(f"eval {metrics[headline]}", ui.pct(latest.get(headline)))

# ----- label efficiency ---------------------------------------------------------------------------------------------
st.subheader(f"{metrics[headline][0].upper() + metrics[headline][1:]} per label spent")
if not points:
    st.info("No round has been trained yet: the first point appears when round 0 closes and the model is trained.")
else:
    frame = pd.DataFrame(points).drop(columns=["labels_per_class"])
    long = frame.melt(
        id_vars=["round", "strategy", "labels"], value_vars=list(metrics), var_name="metric", value_name="value"
    )
    long["metric"] = long["metric"].map(metrics)
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
        frame.dropna(axis=1, how="all").rename(columns={**ui.METRIC_NAMES, "eval_n": "eval n"}),
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

# ----- TAILOR's arms ------------------------------------------------------------------------------------------------
tailor = wb.tailor_panel(project_id)
if tailor is not None:
    st.subheader("TAILOR: which algorithm suits this data")
    st.caption(
        "Each arm is one selection algorithm (per-class arms name their class). TAILOR draws an arm per slot by "
        "Thompson sampling, favouring arms whose past picks were of classes still rare among the labels. "
        "Expected reward: the arm's posterior class distribution weighted by the current class rewards."
    )
    arms = pd.DataFrame(tailor["arms"])
    top = arms.head(15)
    st.altair_chart(
        alt.Chart(top).mark_bar().encode(
            x=alt.X("expected_reward:Q", title="posterior expected reward"),
            y=alt.Y("arm:N", sort="-x", title=None),
            tooltip=["arm", alt.Tooltip("expected_reward:Q", format=".3f"), "pulls", "labeled"],
        ),
        width="stretch",
    )
    pulls = pd.DataFrame(tailor["pulls"])
    if not pulls.empty:
        st.markdown("**Pulls per arm per round**")
        if st.toggle("Group the per-class arms by algorithm", value=True, key="tailor_group_arms"):
            pulls["arm"] = pulls["arm"].str.replace(r"\[.*\]$", "", regex=True)
            pulls = pulls.groupby(["round", "arm"], as_index=False)["pulls"].sum()
        st.altair_chart(
            alt.Chart(pulls).mark_bar().encode(
                x=alt.X("round:O", title="round", axis=alt.Axis(labelAngle=0)),
                y=alt.Y("pulls:Q", stack=True),
                color=alt.Color("arm:N", title="arm"),
                tooltip=["round", "arm", "pulls"],
            ),
            width="stretch",
        )
    classes = pd.DataFrame(tailor["classes"])
    if not classes.empty:
        st.markdown("**Classes each arm brought in** (labeled picks)")
        st.dataframe(
            classes.pivot_table(index="arm", columns="class", values="labels", fill_value=0, aggfunc="sum"),
            width="stretch",
        )
    with st.expander("Arm table and reward per class"):
        st.dataframe(arms, hide_index=True, width="stretch")
        st.dataframe(pd.DataFrame([tailor["reward"]]), hide_index=True, width="stretch")
