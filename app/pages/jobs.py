"""Jobs: the project's recent worker jobs (kind, state, progress, message, error, attempts, worker) and a Retry
button for each failed one that no later job replaced (an admin action)."""
import pandas as pd
import streamlit as st

from app import ui

RECENT = 50  # jobs listed, newest first

wb, project_id, _ = ui.open_page("jobs")
ui.show_flash()

jobs = wb.jobs(project_id, limit=RECENT)
if not jobs:
    st.info("No job yet: the worker's jobs (embed, select, train, simulate) show up here.")
else:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "job": job.id,
                    "kind": job.kind,
                    "round": job.round_index,
                    "state": job.state,
                    "progress": job.progress,
                    "message": job.message,
                    "error": job.error or "",
                    "attempts": job.attempts,
                    "worker": job.worker or "",
                    "queued at": job.created_at,
                }
                for job in jobs
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)},
    )

failed = wb.failed_jobs(project_id)
if failed:
    st.subheader("Failed jobs")
    for job in failed:
        ui.failed_job(wb, job)
