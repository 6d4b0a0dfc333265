"""The one table of the web UI's pages: navigation (streamlit_app.py), page links, each page's title and the role
it needs (app.ui.open_page) and the access tests all read it. A new page is its file under app/pages/ plus a row here.

Roles: "annotator" pages need WORKBENCH_TOKEN when it is set; "admin" pages need WORKBENCH_ADMIN_TOKEN (see
app.ui's access section).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageSpec:
    url_path: str  # also the name a page opens itself with: ui.open_page("label")
    file: str  # relative to the repository root
    title: str
    icon: str
    role: str  # "annotator", "reviewer" or "admin"


PAGES = (
    PageSpec("projects", "app/pages/projects.py", "Projects", ":material/folder_open:", "annotator"),
    PageSpec("label", "app/pages/label.py", "Label", ":material/label:", "annotator"),
    PageSpec("grid", "app/pages/grid.py", "Grid", ":material/grid_view:", "annotator"),
    PageSpec("rounds", "app/pages/rounds.py", "Rounds", ":material/autorenew:", "annotator"),
    PageSpec("dashboard", "app/pages/dashboard.py", "Dashboard", ":material/monitoring:", "annotator"),
    PageSpec("jobs", "app/pages/jobs.py", "Jobs", ":material/work_history:", "annotator"),
    PageSpec("map", "app/pages/map.py", "Map", ":material/scatter_plot:", "annotator"),
    PageSpec("review", "app/pages/review.py", "Review", ":material/fact_check:", "reviewer"),
    PageSpec("agreement", "app/pages/agreement.py", "Agreement", ":material/handshake:", "reviewer"),
    PageSpec("adjudicate", "app/pages/adjudicate.py", "Adjudicate", ":material/gavel:", "reviewer"),
    PageSpec("simulate", "app/pages/simulate.py", "Simulate", ":material/science:", "admin"),
    PageSpec("export", "app/pages/export.py", "Export", ":material/download:", "admin"),
)


def page(url_path: str) -> PageSpec:
    """The table's row for a page."""
    for spec in PAGES:
        if spec.url_path == url_path:
            return spec
    raise KeyError(f"no page {url_path!r} in app/page_table.py")
