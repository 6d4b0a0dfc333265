"""Label: the label surface (app/label_surface, a client-side component) for single- and multi-label projects.

The surface holds the next few items of the annotator (claimed ahead), draws the next one in the frame of the key
press, keeps its answers in an outbox until the server acknowledges them and renews its leases with a heartbeat
(a closed tab's items return to the queue within WORKBENCH_LEASE_SECONDS). When nothing is held this page says why
and looks again by itself; a failed embedding is shown with its fix instead of a page that waits forever.
"""
import streamlit as st

from app import labeling, ui
from app.label_surface import like_request, show_label_surface
from app.page_table import page
from app.read_models import JobView, ProjectStatus
from app.settings import Settings

WAIT_POLL_SECONDS = 0.5  # while the next round is on its way, look for items this often (a cheap query)

wb, project_id, annotator = ui.open_page("label")


def failed_embedding(failed: list[JobView]) -> bool:
    """Show a failed embed job with its fix; True when the project cannot get items until it is fixed."""
    embed = [job for job in failed if job.kind == "embed"]
    for job in embed:
        st.error(ui.text(f"This project's items cannot be offered: its embedding (job {job.id}) failed: {job.error}"))
        st.markdown(
            "**To fix it:** if the backbone cannot be loaded (for example pretrained weights that are not on this "
            "machine, offline), change the project's backbone in its settings on the Projects page (`pixels` works "
            "offline) or put the weights in the timm cache; then retry the job on the Jobs or Rounds page "
            "(an admin action).")
        with st.container(horizontal=True):
            ui.page_link("projects", "Project settings")
            ui.page_link("jobs", "Jobs (retry)")
            ui.page_link("rounds", "Rounds")
    others = [job for job in failed if job.kind != "embed"]
    if others:
        what = ", ".join(f"{job.kind} job {job.id}: {job.error}" for job in others)
        st.warning(ui.text(f"{len(others)} job(s) failed ({what}); see the Jobs or Rounds page to retry."))
    return bool(embed)


def worker_busy(status: ProjectStatus) -> bool:
    state = None if status.round is None else status.round.state
    return bool(status.jobs) or state in ("selecting", "training", "labeling")


def waiting_view() -> None:
    """Nothing held: say why (the round's state, the worker's jobs) and look again until items come."""
    busy = worker_busy(wb.status(project_id))

    @st.fragment(run_every=WAIT_POLL_SECONDS if busy else None)
    def body() -> None:
        status = wb.status(project_id)
        if labeling.can_claim(wb.db, project_id, annotator) or worker_busy(status) != busy:
            st.rerun()  # items to label (or nothing more to wait for): the whole page again, the surface claims
        round_ = status.round
        if round_ is None:
            st.info("This project has no round yet.")
        elif round_.state == "selecting":
            st.info(f"Round {round_.index} is being selected ({round_.strategy}); items appear once it is queued.")
        elif round_.state == "training":
            then = ", then the next round is selected" if wb.project(project_id).auto_next_round else ""
            st.info(f"Round {round_.index} is closed: the model is training on the labels so far{then}.")
        elif round_.state == "labeling":
            st.info(f"Every item of round {round_.index} left for you is taken by another annotator, or is an "
                    "overlap copy of an item you answered (it goes to someone else); free items will show up here "
                    "(an item held by a closed tab comes back when its hold runs out).")
        else:
            st.success(f"Round {round_.index} is closed and done.")
            ui.page_link("rounds", "Start the next round on the Rounds page")
        ui.show_jobs(status.jobs)

    body()


# ----- the page -------------------------------------------------------------------------------------------------------
if (like := like_request()) is not None:  # the surface's "More like this": the item and its neighbours, as a grid
    st.switch_page(page("grid").file, query_params={"like": str(like), "project": str(project_id)})
ui.show_flash()
if failed_embedding(wb.failed_jobs(project_id)):
    st.stop()
options = labeling.SurfaceOptions.from_settings(Settings.from_env())  # lease, guard time, items ahead
data = show_label_surface(wb.db, project_id, annotator, options, signed_in=ui.name_is_signed_in())
st.session_state["_label_holder"] = (project_id, annotator)  # a rename in the sidebar gives these items back
if not data["items"]:
    waiting_view()
