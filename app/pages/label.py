"""Label: one item at a time, a button (and a key) per class, skip and undo; the next item appears at once."""
import time
from pathlib import Path

import streamlit as st

from app import ui
from app.read_models import ProjectStatus
from app.workbench import Workbench, WorkbenchError
from storage.queue import QueueError

wb, project_id, annotator = ui.open_page("label")


# ----- actions (on_click callbacks: they run once per click, before the page is drawn again) -------------------
def seconds_on(entry_id: int) -> float | None:
    shown = st.session_state.get("_shown")
    if shown and shown[0] == entry_id:
        return round(time.monotonic() - shown[1], 2)
    return None


def give_label(wb: Workbench, project_id: int, entry_id: int, annotator: str, value: list[int], text: str) -> None:
    try:
        wb.submit(project_id, entry_id, annotator, value, seconds=seconds_on(entry_id))
    except (WorkbenchError, QueueError) as error:  # e.g. a second press on an item already labeled
        ui.flash("warning", f"Label not stored: {error}")
    else:
        st.session_state["_last_action"] = f"labeled {text}"
        st.session_state.pop("_tags", None)


def toggle_tag(entry_id: int, k: int) -> None:
    """Multi-label: switch tag k on or off for the item on screen (nothing is stored before Submit)."""
    tags = st.session_state.get("_tags")
    if not tags or tags[0] != entry_id:
        tags = (entry_id, set())
    tags[1].symmetric_difference_update({k})
    st.session_state["_tags"] = tags


def skip(wb: Workbench, project_id: int, entry_id: int, annotator: str, text: str) -> None:
    try:
        wb.skip(project_id, entry_id, annotator, seconds=seconds_on(entry_id))
    except (WorkbenchError, QueueError) as error:
        ui.flash("warning", f"Skip not stored: {error}")
    else:
        st.session_state["_last_action"] = f"skipped {text}"


def undo(wb: Workbench, project_id: int, annotator: str) -> None:
    try:
        undone = wb.undo(project_id, annotator)
    except (WorkbenchError, QueueError) as error:
        ui.flash("warning", f"Nothing undone: {error}")
        return
    if undone is None:
        ui.flash("info", "Nothing to undo.")
    else:
        what = "skip" if undone.kind == "skip" else "label"
        st.session_state["_last_action"] = f"undid your last {what}"


# ----- no item: say why, and look again every few seconds while the worker is busy ---------------------------------
def explain_wait(status: ProjectStatus) -> None:
    round_ = status.round
    if round_ is None:
        st.info("This project has no round yet.")
    elif round_.state == "selecting":
        st.info(f"Round {round_.index} is being selected ({round_.strategy}); items appear once it is queued.")
    elif round_.state == "training":
        then = ", then the next round is selected" if wb.project(project_id).auto_next_round else ""
        st.info(f"Round {round_.index} is closed: the model is training on the labels so far{then}.")
    elif round_.state == "labeling":
        st.info(f"Every item of round {round_.index} is taken by another annotator; free items will show up here.")
    else:
        st.success(f"Round {round_.index} is closed and done.")
        ui.page_link("rounds", "Start the next round on the Rounds page")
    ui.show_jobs(status.jobs)
    failed = wb.failed_jobs(project_id)
    if failed:
        st.error(f"{len(failed)} job(s) failed; see the Rounds page to retry.")


def worker_busy(status: ProjectStatus) -> bool:
    state = None if status.round is None else status.round.state
    return bool(status.jobs) or state in ("selecting", "training", "labeling")


def waiting_view() -> None:
    busy = worker_busy(wb.status(project_id))

    @st.fragment(run_every=ui.POLL_SECONDS if busy else None)
    def body() -> None:
        status = wb.status(project_id)
        # Something to label now, or nothing more to wait for: draw the whole page again.
        labeling = status.round is not None and status.round.state == "labeling"
        if labeling and wb.next_assignment(project_id, annotator) is not None:
            st.rerun()
        if worker_busy(status) != busy:
            st.rerun()
        explain_wait(status)

    body()


# ----- the page -------------------------------------------------------------------------------------------------------
ui.show_flash()
task = wb.next_assignment(project_id, annotator)  # a refusal is shown as a worded error by the page frame

if task is None:
    waiting_view()
    st.stop()

project = wb.project(project_id)
classes = project.classes
if st.session_state.get("_shown", (None,))[0] != task.entry_id:
    st.session_state["_shown"] = (task.entry_id, time.monotonic())

image_col, side_col = st.columns([3, 2], gap="large")
with image_col:
    problem = ui.image_problem(task.path, project.data_root)
    if problem:
        st.error(f"{Path(task.key).name}: {problem}. The file changed after import; skip it (s).")
    else:
        st.image(ui.load_for_display(task.path), caption=Path(task.key).name)  # the file name only: a class folder in the path would give the answer away

with side_col:
    st.progress(
        task.done_in_round / max(task.total_in_round, 1),
        text=f"round {task.round_index}: {task.done_in_round} of {task.total_in_round}",
    )
    if task.guess is not None:
        guessed = ", ".join(f"**{classes[k]}** ({p:.0%})" for k, p in task.guess) or "**none of these**"
        st.markdown(f"model guesses {guessed}")
    else:
        st.caption("no model guess yet (before the first training)")
    # A per-class arm ("most_likely:3") would hint at the answer: show only the algorithm.
    arm = task.arm.partition(":")[0]
    chosen_by = "the evaluation set (random, never trained on)" if task.split == "eval" else (
        f"{task.round_strategy} ({arm} arm)" if arm != task.round_strategy else arm)
    st.caption(f"chosen by: {chosen_by}")

    # Streamlit draws each button's shortcut key on the button itself, so the label is just the class name.
    if project.task == "multi_label":
        tags = st.session_state.get("_tags")
        chosen = tags[1] if tags and tags[0] == task.entry_id else set()
        st.caption("Toggle every tag that applies (its key), then Submit (Enter).")
        with st.container(horizontal=True, wrap=True):
            for k, (name, key) in enumerate(zip(classes, ui.shortcut_keys(classes))):
                st.button(f"✅ {name}" if k in chosen else name, key=f"tag_{k}", shortcut=key,
                          type="primary" if k in chosen else "secondary",
                          on_click=toggle_tag, args=(task.entry_id, k))
        names = ", ".join(classes[k] for k in sorted(chosen)) or "none of these"
        with st.container(horizontal=True):
            st.button(f"Submit: {names}", key="submit_tags", shortcut="Enter", type="primary", on_click=give_label,
                      args=(wb, project_id, task.entry_id, annotator, sorted(chosen), f"{Path(task.key).name} as {names}"))
            st.button("None of these", key="no_tags", shortcut="Shift+N", on_click=give_label,
                      args=(wb, project_id, task.entry_id, annotator, [], f"{Path(task.key).name} as none of these"))
    else:
        with st.container(horizontal=True, wrap=True):
            for k, (name, key) in enumerate(zip(classes, ui.shortcut_keys(classes))):
                st.button(
                    name,
                    key=f"class_{k}",
                    shortcut=key,
                    on_click=give_label,
                    args=(wb, project_id, task.entry_id, annotator, [k], f"{Path(task.key).name} as {name}"),
                )

    st.write("")
    with st.container(horizontal=True):
        st.button("Skip", key="skip", shortcut="s", on_click=skip,
                  args=(wb, project_id, task.entry_id, annotator, Path(task.key).name))
        st.button("Undo", key="undo", shortcut="u", on_click=undo, args=(wb, project_id, annotator),
                  help="Take back your last label or skip.")
        # A button takes one shortcut: this twin gives Undo its Ctrl+Z as well.
        st.button("Undo", key="undo_ctrl_z", shortcut="ctrl+z", on_click=undo, args=(wb, project_id, annotator),
                  type="tertiary", help="Take back your last label or skip.")
    if "_last_action" in st.session_state:
        st.caption(f"last: {st.session_state['_last_action']}")
