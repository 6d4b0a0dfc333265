"""Dashboard: accuracy per label spent (one point per trained round) and how the labels spread over the classes."""
from collections import Counter
from itertools import groupby

import altair as alt
import pandas as pd
import streamlit as st

from app import ui
from learners.catalog import METRIC_NAMES, TASK_METRICS
from learners.strategies.panel import Bars, Pivot, StackedBars

wb, project_id, _ = ui.open_page("dashboard")

project = wb.project(project_id)
metrics = TASK_METRICS[project.task]
status = wb.status(project_id)
points = wb.chart_data(project_id)

# ----- headline numbers -----------------------------------------------------------------------------------------------
c1, c2, c3, c4 = st.columns(4)
c1.metric("pool labels", status.labeled_pool)
c2.metric("eval labels", f"{status.labeled_eval} of {status.items.get('eval', 0)}")
c3.metric("trained rounds", len(points))
headline = next(iter(metrics))
c4.metric(f"eval {metrics[headline]}", ui.pct(points[-1].metric(headline) if points else None))

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
        frame.dropna(axis=1, how="all").rename(columns={**METRIC_NAMES, "eval_n": "eval n"}),
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

# ----- the panels of the project's stateful strategies ----------------------------------------------------------------
def draw_bars(block: Bars) -> None:
    rows = pd.DataFrame(block.rows).sort_values(block.value, ascending=False, kind="stable")
    rows = rows.head(block.limit) if block.limit else rows
    tooltip = [alt.Tooltip(f"{c}:Q", format=block.value_format) if c == block.value and block.value_format else c
               for c in rows.columns]
    st.altair_chart(
        alt.Chart(rows).mark_bar().encode(
            x=alt.X(f"{block.value}:Q", title=block.value_title or block.value),
            y=alt.Y(f"{block.label}:N", sort="-x", title=None),
            tooltip=tooltip,
        ),
        width="stretch",
    )


def draw_stacked_bars(block: StackedBars, key: str) -> None:
    rows = pd.DataFrame(block.rows)
    if block.groups and st.toggle(block.group_label, value=True, key=key):
        rows[block.color] = rows[block.color].map(lambda value: block.groups.get(value, value))
        rows = rows.groupby([block.x, block.color], as_index=False)[block.y].sum()
    st.altair_chart(
        alt.Chart(rows).mark_bar().encode(
            x=alt.X(f"{block.x}:O", title=block.x, axis=alt.Axis(labelAngle=0)),
            y=alt.Y(f"{block.y}:Q", stack=True),
            color=alt.Color(f"{block.color}:N", title=block.color),
            tooltip=[block.x, block.color, block.y],
        ),
        width="stretch",
    )


def draw_block(block, key: str) -> None:
    if not block.rows:
        return
    if block.title:
        st.markdown(f"**{block.title}** {getattr(block, 'note', '')}".strip())
    if isinstance(block, Bars):
        draw_bars(block)
    elif isinstance(block, StackedBars):
        draw_stacked_bars(block, key)
    elif isinstance(block, Pivot):
        st.dataframe(pd.DataFrame(block.rows).pivot_table(index=block.index, columns=block.columns,
                                                          values=block.values, fill_value=0, aggfunc="sum"),
                     width="stretch")
    else:
        st.dataframe(pd.DataFrame(block.rows), hide_index=True, width="stretch")


for n, panel in enumerate(wb.strategy_panels(project_id)):
    st.subheader(panel.title)
    st.caption(panel.caption)
    # consecutive tables that name the same expander share it
    for expander, blocks in groupby(enumerate(panel.blocks), key=lambda item: getattr(item[1], "expander", "")):
        with st.expander(expander) if expander else st.container():
            for i, block in blocks:
                draw_block(block, key=f"panel_{n}_{i}")
