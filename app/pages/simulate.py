"""Simulate: run the loop with an oracle (gold labels) for several strategies and seeds, then compare their
label efficiency against random, with the project's own human rounds on the same chart."""
import json
from dataclasses import asdict

import altair as alt
import pandas as pd
import streamlit as st

from app import ui
from app.workbench import WorkbenchError
from learners.catalog import METHOD_NAMES, TASK_METRICS
from learners.efficiency import summarize

wb, project_id, _ = ui.open_page("simulate")
project = wb.project(project_id)
METRICS = TASK_METRICS[project.task]
st.caption(
    "Each run labels with an oracle that answers from the project's gold labels, through the same rounds, "
    "training and selection as people use: a random seed round, then rounds chosen by the strategy."
)

# ----- start --------------------------------------------------------------------------------------------------------
names = ui.strategy_names(wb)
with st.form("simulate"):
    strategies = st.multiselect("Strategies", names, default=[n for n in ("random", "margin", "entropy") if n in names])
    methods = st.multiselect(
        "Training methods (optional)", list(METHOD_NAMES), key="sim_methods",
        help="Each strategy runs once per method chosen here (e.g. margin with none and with pseudo_label); "
             "none chosen: the project's own training method.",
    )
    c1, c2, c3 = st.columns(3)
    seeds = c1.number_input("Seeds", 1, 20, 3)
    round_size = c2.number_input("Round size (B)", 1, 10_000, 20)
    rounds = c3.number_input("Rounds after the seed round (R)", 1, 200, 5)
    if st.form_submit_button("Start simulation", type="primary"):
        try:
            runs = [f"{name}+{method}" for name in strategies for method in methods] if methods else strategies
            job_id = wb.start_simulation(project_id, runs, list(range(int(seeds))), int(round_size), int(rounds))
        except WorkbenchError as error:
            st.error(ui.text(error))
        else:
            st.success(f"Simulation job {job_id} queued.")


@st.fragment(run_every=ui.POLL_SECONDS)
def progress() -> None:
    active = [j for j in wb.status(project_id).jobs if j.kind == "simulate"]
    ui.show_jobs(active)
    if st.session_state.get("_sim_active") and not active:
        st.session_state["_sim_active"] = False
        st.rerun()  # a simulation just finished: draw its results
    st.session_state["_sim_active"] = bool(active)


progress()
for job in wb.failed_jobs(project_id):
    if job.kind == "simulate":
        st.error(ui.text(f"Simulation job {job.id} failed: {job.error}"))

# ----- results ------------------------------------------------------------------------------------------------------
results = wb.simulations(project_id)
if not results:
    st.info("No finished simulation yet.")
    st.stop()
labels = {r.job_id: f"job {r.job_id}: {', '.join(r.config['strategies'])} x {len(r.config['seeds'])} seeds "
          f"(B={r.config['round_size']}, R={r.config['rounds']})" for r in results}
chosen = st.selectbox("Simulation", list(labels), format_func=labels.get)
result = asdict(next(r for r in results if r.job_id == chosen))  # plain data: for the summary and the downloads
metric = st.radio("Metric", list(METRICS), format_func=METRICS.get, horizontal=True)
summary = summarize(result, metric)

rows = []
for name, curve in summary["curves"].items():
    for x, m, e in zip(curve["labels"], curve["mean"], curve["se"]):
        rows.append({"strategy": name, "labels": x, "mean": m, "low": m - e, "high": m + e})
frame = pd.DataFrame(rows)
base = alt.Chart(frame).encode(
    x=alt.X("labels:Q", title="pool labels spent"), color=alt.Color("strategy:N", title="strategy")
)
band = base.mark_area(opacity=0.15).encode(y=alt.Y("low:Q", title=METRICS[metric]), y2="high:Q")
lines = base.mark_line(point=True).encode(
    y=alt.Y("mean:Q", scale=alt.Scale(zero=False)),
    strokeDash=alt.condition(alt.datum.strategy == "random", alt.value([6, 4]), alt.value([1, 0])),
    tooltip=["strategy", "labels", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")],
)
layers = [band, lines]
human = [p for p in wb.chart_data(project_id) if p.metric(metric) is not None]
if human:
    people = pd.DataFrame([{"labels": p.labels, "mean": p.metric(metric), "strategy": "this project (people)"} for p in human])
    layers.append(alt.Chart(people).mark_point(shape="diamond", size=120, filled=True).encode(
        x="labels:Q", y="mean:Q", color=alt.Color("strategy:N"), tooltip=["labels", "mean"]))
st.altair_chart(alt.layer(*layers), width="stretch")
st.caption("Mean over seeds with a band of one standard error; random is dashed. No running-max smoothing.")

table = pd.DataFrame(summary["table"])
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "final": st.column_config.NumberColumn(format="%.3f"),
    "auc": st.column_config.NumberColumn("AUC (normalised)", format="%.3f"),
    "labels_to_reach_random_final": st.column_config.NumberColumn("labels to reach random's final", format="%.0f"),
    "label_savings_vs_random": st.column_config.NumberColumn("label savings vs random", format="percent"),
})
points = pd.DataFrame(result["points"])
c1, c2 = st.columns(2)
c1.download_button("Every point (CSV)", points.to_csv(index=False).encode(), f"simulation-{chosen}.csv", "text/csv", on_click="ignore")
c2.download_button("Every point and the summary (JSON)", json.dumps({**result, "summary": summary}, default=str, indent=1).encode(),
                   f"simulation-{chosen}.json", "application/json", on_click="ignore")
