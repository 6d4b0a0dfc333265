"""Rounds: the table of rounds, the worker's jobs, and the buttons that close, start and retrain."""
import pandas as pd
import streamlit as st

from app import ui
from app.workbench import Workbench, WorkbenchError

wb, project_id, _ = ui.open_page("rounds")


def act(what: str, verb, *args) -> None:
    """Run a verb from a button callback; its outcome is shown at the top of the next run."""
    if not ui.has_access("admin"):
        ui.flash("error", f"{what}: needs the admin token")
        return
    try:
        result = verb(*args)
    except WorkbenchError as error:
        ui.flash("error", f"{what}: {error}")
    else:
        ui.flash("success", what if result is None else f"{what}: {result}")


def start_next(wb: Workbench, project_id: int) -> None:
    if not ui.has_access("admin"):
        ui.flash("error", "Start next round: needs the admin token")
        return
    strategy = st.session_state["next_strategy"]
    try:
        if st.session_state.get("make_default"):
            wb.set_strategy(project_id, strategy)
        index = wb.start_round(project_id, strategy)
    except WorkbenchError as error:
        ui.flash("error", f"Start next round: {error}")
    else:
        ui.flash("success", f"Round {index} started with {strategy}; the worker is selecting its items.")


def metrics_summary(metrics: dict) -> str:
    if not metrics:
        return ""
    parts = []
    if metrics.get("accuracy") is not None:
        parts.append(f"acc {ui.pct(metrics['accuracy'])}")
    if metrics.get("balanced_accuracy") is not None:
        parts.append(f"bal. acc {ui.pct(metrics['balanced_accuracy'])}")
    if metrics.get("macro_f1") is not None:
        parts.append(f"macro F1 {metrics['macro_f1']:.2f}")
    if metrics.get("n"):
        parts.append(f"on {metrics['n']} eval items")
    if metrics.get("labels") is not None:
        parts.append(f"{metrics['labels']} pool labels")
    return " · ".join(parts)


def picked_ahead(row) -> str:
    """Who chose the round's first items when it opened while the round before trained (app.rounds)."""
    if not row.picked_ahead:
        return ""
    waiting = ", own selection after that training" if row.awaiting_selection else ""
    return f"{row.picked_ahead} by round {row.picked_ahead_by}'s ranking{waiting}"


ui.show_flash()
project = wb.project(project_id)
status = wb.status(project_id)
current = status.round

# ----- the table ----------------------------------------------------------------------------------------------------
rounds = wb.round_table(project_id)
if rounds:
    table = pd.DataFrame(
        [
            {
                "round": r.index,
                "strategy": r.strategy,
                "state": r.state,
                "metrics": metrics_summary(r.metrics),
                "labels at start": r.labels_at_start,
                "pending": r.queue.pending,
                "claimed": r.queue.claimed,
                "labeled": r.queue.labeled,
                "skipped": r.queue.skipped,
                "dropped": r.queue.dropped,
                "picked ahead": picked_ahead(r),
            }
            for r in reversed(rounds)  # newest first
        ]
    )
    # Fits the page at 1400 px (about 920 px beside the sidebar; the widths add up to 918): compact count
    # columns; a long text is cut inside its cell (hover shows it whole), and each round's note, a sentence or
    # more, is written out below the table instead of widening it.
    count = st.column_config.NumberColumn(width=64)
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "round": st.column_config.NumberColumn(width=56), "strategy": st.column_config.TextColumn(width=80),
        "state": st.column_config.TextColumn(width=76), "metrics": st.column_config.TextColumn(width=180),
        "labels at start": st.column_config.NumberColumn(width=96),
        **{name: count for name in ("pending", "claimed", "labeled", "skipped", "dropped")},
        "picked ahead": st.column_config.TextColumn(width=110),
    })
    notes = [(r.index, r.note) for r in reversed(rounds) if r.note]
    if notes:
        with st.expander("Round notes", expanded=True):
            for index, note in notes[:10]:
                st.markdown(f"**Round {index}**: {ui.text(note)}")
else:
    st.info("No round yet.")

# ----- jobs ---------------------------------------------------------------------------------------------------------
st.subheader("Worker jobs")


@st.fragment(run_every=ui.POLL_SECONDS if status.jobs else None)
def job_progress() -> None:
    jobs = wb.active_jobs(project_id)
    if not jobs:
        if status.jobs:  # the jobs this page was drawn with have finished: redraw the table and buttons
            st.rerun()
        st.caption("No job running or queued.")
        return
    ui.show_jobs(jobs)


job_progress()

for job in wb.failed_jobs(project_id):
    ui.failed_job(wb, job)

# ----- actions ------------------------------------------------------------------------------------------------------
st.subheader("Actions")
ui.require_access("admin", "Closing, starting and retraining rounds")  # the rest is for admins only
state = None if current is None else current.state
close_col, retrain_col = st.columns(2)
with close_col:
    st.button(
        "Close round now", key="close_round", disabled=state != "labeling", on_click=act,
        args=("Closed round", wb.close_round, project_id),
        help="Unlabeled items of the round are dropped; the model trains on the labels so far.",
    )
with retrain_col:
    st.button(
        "Retrain now", key="retrain", on_click=act, args=("Training job queued", wb.retrain, project_id),
        help="Train on the labels so far without closing the round.",
    )

strategies = ui.strategy_names(wb)
with st.container(border=True):
    st.selectbox(
        "Strategy for the next round", strategies, key="next_strategy",
        index=strategies.index(project.strategy) if project.strategy in strategies else 0,
    )
    st.checkbox(f"also make it the project's default (now {project.strategy})", key="make_default")
    can_start = state in (None, "done")
    st.button("Start next round", key="start_round", disabled=not can_start, on_click=start_next, args=(wb, project_id))
    if not can_start:
        st.caption(f"Round {current.index} is {state}; a new round starts once it is done.")
