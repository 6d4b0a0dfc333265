"""Simulate: run the loop with an oracle (gold labels) for several strategies and seeds, measured on a held-out
gold split, then compare their label efficiency against random (standard errors over seeds, savings with a
bootstrap interval over seeds), with the project's own human rounds on the same chart."""
import json
import math
from dataclasses import asdict

import altair as alt
import pandas as pd
import streamlit as st

from app import ui
from app.simulation import holdout_size, measured_on, saving_words
from app.workbench import WorkbenchError
from learners.catalog import METHOD_NAMES, TASK_METRICS
from learners.efficiency import summarize

wb, project_id, _ = ui.open_page("simulate")
project = wb.project(project_id)
METRICS = TASK_METRICS[project.task]
st.caption(
    "Each run labels with an oracle that answers from the project's gold labels, through the same rounds, "
    "training and selection as people use: a random seed round, then rounds chosen by the strategy. Every run is "
    "measured on the same held-out gold split, which never enters the pool, never trains and never selects."
)
item_count = sum(wb.status(project_id).items.values())
DEFAULT_B, DEFAULT_R = 20, 5

# ----- start --------------------------------------------------------------------------------------------------------
names = ui.strategy_names(wb)
with st.form("simulate"):
    strategies = st.multiselect("Strategies", names, default=[n for n in ("random", "margin", "entropy") if n in names])
    methods = st.multiselect(
        "Training methods (optional)", list(METHOD_NAMES), key="sim_methods",
        help="Each strategy runs once per method chosen here (e.g. margin with none and with pseudo_label); "
             "none chosen: the project's own training method.",
    )
    c1, c2, c3, c4 = st.columns(4)
    seeds = c1.number_input("Seeds", 1, 20, 3)
    round_size = c2.number_input("Round size (B)", 1, 10_000, DEFAULT_B)
    rounds = c3.number_input("Rounds after the seed round (R)", 1, 200, DEFAULT_R)
    try:
        default_holdout = f"default: {holdout_size(item_count, DEFAULT_B * (DEFAULT_R + 1))[0]}"
    except ValueError:
        default_holdout = "too few items for the default rounds"
    holdout = c4.number_input(
        "Held-out eval items", min_value=1, value=None, step=1, placeholder=default_holdout,
        help=f"Gold items every run is measured on, never in the pool. Empty: 20% of the {item_count} items or 500, "
             "whichever is larger, capped at half the items and so that the pool keeps B x (R + 1) items.",
    )
    if st.form_submit_button("Start simulation", type="primary"):
        try:
            size = None if holdout is None else int(holdout)
            holdout_size(item_count, int(round_size) * (int(rounds) + 1), size)  # refused now, not by the job
            runs = [f"{name}+{method}" for name in strategies for method in methods] if methods else strategies
            job_id = wb.start_simulation(project_id, runs, list(range(int(seeds))), int(round_size), int(rounds), size)
        except (WorkbenchError, ValueError) as error:
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
def strict_json(value):
    """`value` with its non-finite numbers (a savings interval's -inf, nan with one seed) written as the strings
    "-inf" and "nan": plain JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


results = wb.simulations(project_id)
if not results:
    st.info("No finished simulation yet.")
    st.stop()
labels = {r.job_id: f"job {r.job_id}: {', '.join(r.config['strategies'])} x {len(r.config['seeds'])} seeds "
          f"(B={r.config['round_size']}, R={r.config['rounds']}, "
          f"held-out {r.config.get('holdout_split', {}).get('size', 'none')})" for r in results}
chosen = st.selectbox("Simulation", list(labels), format_func=labels.get)
result = asdict(next(r for r in results if r.job_id == chosen))  # plain data: for the summary and the downloads
metric = st.radio("Metric", list(METRICS), format_func=METRICS.get, horizontal=True)
summary = summarize(result, metric)
seed_counts = sorted({row["seeds"] for row in summary["table"]})
st.markdown(f"**{' or '.join(map(str, seed_counts))} seeds** per strategy; {METRICS[metric]} measured on "
            f"**{ui.text(measured_on(result, summary['eval_n']))}**.")

rows = []
for name, curve in summary["curves"].items():
    for x, m, e in zip(curve["labels"], curve["mean"], curve["se"]):
        rows.append({"strategy": name, "labels": x, "mean": m, "se": e, "low": m - e, "high": m + e})
frame = pd.DataFrame(rows)
base = alt.Chart(frame).encode(
    x=alt.X("labels:Q", title="pool labels spent"), color=alt.Color("strategy:N", title="strategy")
)
band = base.mark_area(opacity=0.15).encode(y=alt.Y("low:Q", title=METRICS[metric]), y2="high:Q")
bars = base.mark_errorbar(ticks=True).encode(y=alt.Y("low:Q", title=METRICS[metric]), y2="high:Q")
lines = base.mark_line(point=True).encode(
    y=alt.Y("mean:Q", scale=alt.Scale(zero=False)),
    strokeDash=alt.condition(alt.datum.strategy == "random", alt.value([6, 4]), alt.value([1, 0])),
    tooltip=["strategy", "labels", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("se:Q", title="± SE", format=".3f")],
)
layers = [band, bars, lines]
human = [p for p in wb.chart_data(project_id) if p.metric(metric) is not None]
if human:
    people = pd.DataFrame([{"labels": p.labels, "mean": p.metric(metric), "strategy": "this project (people)"} for p in human])
    layers.append(alt.Chart(people).mark_point(shape="diamond", size=120, filled=True).encode(
        x="labels:Q", y="mean:Q", color=alt.Color("strategy:N"), tooltip=["labels", "mean"]))
st.altair_chart(alt.layer(*layers), width="stretch")
st.caption("Mean over seeds with a band and error bars of one standard error over seeds; random is dashed. No "
           "running-max smoothing. The project's own rounds (diamonds) are measured on its own evaluation set, "
           "not on the held-out split.")

level = f"{summary['level']:.0%}"
table = pd.DataFrame([{
    "strategy": row["strategy"], "seeds": row["seeds"], "final": row["final"], "± SE": row["final_se"],
    "auc": row["auc"], "labels_to_reach_random_final": row.get("labels_to_reach_random_final"),
    **dict(zip(("label savings vs random", f"{level} interval", "significance"), saving_words(row))),
} for row in summary["table"]])
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "final": st.column_config.NumberColumn(f"final {METRICS[metric]}", format="%.3f"),
    "± SE": st.column_config.NumberColumn(format="%.3f"),
    "auc": st.column_config.NumberColumn("AUC (normalised)", format="%.3f"),
    "labels_to_reach_random_final": st.column_config.NumberColumn("labels to reach random's final", format="%.0f"),
})
st.caption(f"Saving: 1 - labels the strategy needs / labels random needs to reach random's final value (mean "
           f"curves). Its {level} interval is a percentile bootstrap over seeds ({summary['resamples']} resamples, "
           "seeds drawn with replacement, the same seeds for the strategy and random); it is significant when the "
           "interval leaves out 0. A lower end of -inf: some resamples never reach random's final value.")
points = pd.DataFrame(result["points"])
c1, c2 = st.columns(2)
c1.download_button("Every point (CSV)", points.to_csv(index=False).encode(), f"simulation-{chosen}.csv", "text/csv", on_click="ignore")
c2.download_button("Every point and the summary (JSON)", json.dumps({**result, "summary": strict_json(summary)}, default=str, indent=1).encode(),
                   f"simulation-{chosen}.json", "application/json", on_click="ignore")
