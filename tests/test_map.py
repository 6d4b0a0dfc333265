"""The map: the projection math (learners.projection), the map job on the demo project (app.jobs.map), the Map
page with AppTest, and once in Chromium (draw, recolour, box-select, open the selection for labeling)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import select

from app import job_kinds
from app.jobs.map import NOT_PICKED, UNLABELED, map_view
from app.settings import Settings
from app.workbench import DEMO_PROJECT, ProjectConfig, Workbench
from app.worker import Worker
from learners.errors import LearnerError
from learners.projection import drawn_sample, project_2d, umap_installed
from storage.files import artifacts, load_matrix
from storage.models import Item, Job
from tests.test_pages import demo_id, demo_template, open_page, wb  # noqa: F401  (fixtures)


# ----- the math ---------------------------------------------------------------------------------------------------
def plane_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points t*u + s*v + c in 3-D with orthonormal u, v, centred uncorrelated t, s and var(t) > var(s): PCA's
    two axes are u and v, its coordinates t and s."""
    rng = np.random.default_rng(seed)
    t, s = rng.normal(0, 5, n), rng.normal(0, 1, n)
    t, s = t - t.mean(), s - s.mean()
    s -= (s @ t) / (t @ t) * t  # uncorrelated in the sample itself, so the sample's axes are exactly u and v
    u, v = np.array([2, 1, 2]) / 3, np.array([1, 2, -2]) / 3
    return np.outer(t, u) + np.outer(s, v) + np.array([10.0, -3.0, 7.0]), t, s


def test_pca_recovers_the_two_axes_of_points_on_a_plane_with_fixed_signs() -> None:
    x, t, s = plane_data(400)
    projection = project_2d(x, method="pca")
    assert projection.method == "pca" and projection.coords.shape == (400, 2)
    # each axis is signed so that its largest loading is positive: u and v as written, so no flip
    np.testing.assert_allclose(projection.coords[:, 0], t, atol=1e-3)
    np.testing.assert_allclose(projection.coords[:, 1], s, atol=1e-3)
    again = project_2d(x[::-1].copy()[::-1], method="pca")  # another copy of the same data: the same picture
    np.testing.assert_array_equal(projection.coords, again.coords)


def test_a_large_input_is_fitted_on_a_seeded_sample_and_the_rest_transformed() -> None:
    x, t, s = plane_data(3000)
    a = project_2d(x, seed=3, fit_sample=200, have_umap=False)
    b = project_2d(x, seed=3, fit_sample=200, have_umap=False)
    assert a.coords.shape == (3000, 2) and a.fitted_on == 200
    np.testing.assert_array_equal(a.coords, b.coords)  # same seed, same sample, same map
    # the sample spans the same plane, so every point, fitted or transformed, gets the same affine function of its
    # plane coordinates (t, s): the axes of a sample are only turned a little within the plane
    design = np.column_stack([t, s, np.ones_like(t)])
    fit, residual, *_ = np.linalg.lstsq(design, a.coords.astype(np.float64), rcond=None)
    assert residual.max() < 1e-6 * len(t) and abs(fit[0, 0]) > 0.99 and abs(fit[1, 1]) > 0.99
    other = project_2d(x, seed=4, fit_sample=200, have_umap=False)
    assert not np.array_equal(a.coords, other.coords)  # another seed's sample has another mean


def test_without_umap_learn_auto_falls_back_to_pca_and_umap_is_refused() -> None:
    x, _, _ = plane_data(300)
    projection = project_2d(x, umap_min_items=100, have_umap=False)
    assert projection.method == "pca" and "umap-learn is not installed" in projection.note
    small = project_2d(x, umap_min_items=1000, have_umap=True)
    assert small.method == "pca" and "fewer than 1000 items" in small.note
    with pytest.raises(LearnerError, match="umap-learn"):
        project_2d(x, method="umap", have_umap=False)
    with pytest.raises(LearnerError, match="NaN"):
        project_2d(np.vstack([x, np.full((1, 3), np.nan)]))


@pytest.mark.skipif(not umap_installed(), reason="umap-learn is not installed")
def test_umap_keeps_separated_clusters_apart_and_places_the_unfitted_rows() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 20, size=(3, 60))
    cluster = np.repeat(np.arange(3), 150)
    x = centres[cluster] + rng.normal(0, 1, size=(450, 60))
    projection = project_2d(x, seed=0, umap_min_items=100, fit_sample=300)
    assert projection.method == "umap" and projection.fitted_on == 300 and projection.coords.shape == (450, 2)
    assert np.isfinite(projection.coords).all()
    # every point's nearest other point on the map is of its own cluster (fitted and transformed rows alike)
    d = np.linalg.norm(projection.coords[:, None] - projection.coords[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert (cluster[d.argmin(axis=1)] == cluster).mean() > 0.98


def test_the_drawn_sample_keeps_every_picked_item_and_each_stratum_its_share() -> None:
    strata = np.array(["a"] * 9000 + ["b"] * 1000, dtype=object)
    always = np.zeros(10_000, dtype=bool)
    always[[5, 9500, 9999]] = True
    rows = drawn_sample(strata, always, limit=1003, seed=0)
    assert len(rows) == 1003 and len(set(rows)) == 1003 and {5, 9500, 9999} <= set(rows)
    rest = np.setdiff1d(rows, [5, 9500, 9999])
    assert (strata[rest] == "a").sum() == 900 and (strata[rest] == "b").sum() == 100
    np.testing.assert_array_equal(rows, drawn_sample(strata, always, limit=1003, seed=0))
    everything = drawn_sample(strata[:50], always[:50], limit=1003)
    np.testing.assert_array_equal(everything, np.arange(50))
    crowded = drawn_sample(strata, np.ones(10_000, dtype=bool), limit=100)  # more to keep than the limit
    assert len(crowded) == 100


def test_the_web_process_reads_the_map_without_loading_torch_or_umap() -> None:
    import subprocess
    import sys

    code = ("import sys, app.jobs.map, learners.projection; "
            "assert 'torch' not in sys.modules and 'umap' not in sys.modules, 'loaded'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


# ----- the job ----------------------------------------------------------------------------------------------------
def drain(worker: Worker) -> None:
    while worker.run_once():
        pass


def test_the_map_job_projects_every_item_of_the_demo_once(settings: Settings) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Demo digits", round_size=10, eval_size=10, pick_ahead=0), "demo")
    worker = Worker(settings, device="cpu")
    drain(worker)  # embed, select round 0
    with wb.db.write() as s:
        first = job_kinds.enqueue(s, "map", pid).id
    drain(worker)
    with wb.db.read() as s:
        (artifact,) = artifacts(s, pid, "projection")
        assert s.get(Job, first).state == "done" and "map of 1797 items: PCA" in s.get(Job, first).message
        item_ids = sorted(s.scalars(select(Item.id).where(Item.project_id == pid)))
    coords, ids = load_matrix(artifact)
    assert coords.shape == (1797, 2) and sorted(ids.tolist()) == item_ids and np.isfinite(coords).all()
    assert artifact.meta["method"] == "pca" and artifact.meta["job_id"] == first

    with wb.db.write() as s:  # a second job of the same features computes nothing
        again = job_kinds.enqueue(s, "map", pid).id
    drain(worker)
    with wb.db.read() as s:
        assert len(artifacts(s, pid, "projection")) == 1
        assert "nothing to do" in s.get(Job, again).message

    task = wb.next_assignment(pid, "script")
    wb.submit(pid, task.entry_id, "script", [3])
    view = map_view(wb.db, pid)
    assert len(view.item_ids) == 1797 and not view.stale and view.round_index == 0
    row = int(np.flatnonzero(view.item_ids == task.item_id)[0])
    assert view.label[row] == wb.project(pid).classes[3] and (view.label != UNLABELED).sum() == 1
    assert (view.picked != NOT_PICKED).sum() == 20 and view.picked[row] == "eval"  # the eval set is queued first
    assert set(view.split) == {"pool", "eval"} and np.isnan(view.uncertainty).all()  # no model yet


# ----- the page (AppTest) -----------------------------------------------------------------------------------------
def chart_rows(at) -> "pa.Table":
    """The points the Map page's chart was given (its one dataset, as Arrow)."""
    (chart,) = at.get("vega_lite_chart")
    (dataset,) = chart.proto.datasets
    return pa.ipc.open_stream(io.BytesIO(dataset.data.data)).read_all()


def test_the_map_page_computes_then_draws_the_demo_and_samples_when_asked(wb: Workbench, demo_id: int) -> None:  # noqa: F811
    from tests.test_pages import _run_worker

    at = open_page("map", demo_id)
    assert at.title[0].value == "Map" and "No map yet" in at.info[0].value
    at.button(key="compute_map").click().run()
    assert "Map queued as job" in at.success[0].value
    _run_worker()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = chart_rows(at)
    assert table.num_rows == 1797 and "Drawing all 1797 items." in at.caption[0].value
    assert all(uri.startswith("data:image/png;base64,") for uri in table.column("image").to_pylist())
    picked = [p for p in table.column("picked").to_pylist() if p != NOT_PICKED]
    assert len(picked) == 20  # round 0's queue: the evaluation set and the first picks

    at.selectbox(key="map_limit").set_value(1000).run()
    table = chart_rows(at)
    assert table.num_rows == 1000 and "Drawing 1000 of 1797 items" in at.caption[0].value
    assert len([p for p in table.column("picked").to_pylist() if p != NOT_PICKED]) == 20  # always drawn

    at.selectbox(key="map_colour").set_value("uncertainty").run()
    (chart,) = at.get("vega_lite_chart")
    assert '"field": "uncertainty"' in chart.proto.spec and '"scheme": "viridis"' in chart.proto.spec
    assert not at.exception


# ----- the page in Chromium ---------------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
POINTS = "[data-testid='stVegaLiteChart'] g.mark-symbol.role-mark path"  # one SVG path per point drawn


def point_colours(page) -> list[str]:
    return page.locator(POINTS).evaluate_all("paths => paths.map(p => p.getAttribute('fill'))")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_the_map_in_a_browser_draws_recolours_and_opens_a_box_selection(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import _open_page, _settle, _wait, app_server

    home = tmp_path / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{home / 'wb.sqlite'}"}
    with app_server(env, tmp_path / "server.log") as url, sync_playwright() as pw:
        wb = Workbench(Settings(home=home, db_url=env["WORKBENCH_DB_URL"]))
        pid = wb.project_id(DEMO_PROJECT)
        _wait(lambda: wb.rounds(pid) and wb.rounds(pid)[0].state == "labeling", 120, "the demo's round 0")
        n = sum(wb.status(pid).items.values())
        browser, page = _open_page(pw)
        page.goto(f"{url}/map")
        compute = page.get_by_role("button", name="Compute the map")
        expect(compute).to_be_visible(timeout=120_000)
        compute.click()
        expect(page.get_by_text(f"Drawing all {n} items.")).to_be_visible(timeout=120_000)
        expect(page.locator(POINTS)).to_have_count(n, timeout=60_000)
        _settle(page)
        assert set(point_colours(page)) == {"#c8c8c8"}  # by label: nothing is labeled yet, all grey
        page.get_by_label("Colour by").click()  # the selectbox opens its list
        page.get_by_role("option", name="Evaluation set / pool").click()
        _wait(lambda: len(set(point_colours(page))) == 2, 30, "the points recoloured by split")
        fills = point_colours(page)
        evaluation = wb.status(pid).items["eval"]
        assert sorted(fills.count(c) for c in set(fills)) == [evaluation, n - evaluation]  # the eval set stands out

        page.locator("[data-testid='stVegaLiteChart'] svg").first.scroll_into_view_if_needed()
        page.mouse.move(1, 1)
        point = page.locator(POINTS).nth(n // 2).bounding_box()
        page.mouse.move(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)
        thumb = page.locator("#vg-tooltip-element img")
        expect(thumb).to_be_visible(timeout=10_000)  # hovering a point shows its thumbnail
        assert thumb.get_attribute("src").startswith("data:image/png;base64,")

        page.mouse.click(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)  # one point
        expect(page.get_by_text("1 selected", exact=True)).to_be_visible(timeout=30_000)
        expect(page.get_by_role("button", name="More like this")).to_be_visible()
        expect(page.locator("[data-testid='stImage'] img")).to_have_count(1)  # its thumbnail below the chart

        chart = page.locator("[data-testid='stVegaLiteChart'] svg").first.bounding_box()
        page.mouse.move(chart["x"] + chart["width"] * 0.3, chart["y"] + chart["height"] * 0.3)
        page.mouse.down()
        page.mouse.move(chart["x"] + chart["width"] * 0.55, chart["y"] + chart["height"] * 0.55, steps=10)
        page.mouse.up()
        expect(page.get_by_text("1 selected", exact=True)).to_be_hidden(timeout=30_000)  # the box's points too
        _settle(page)
        label_these = page.get_by_role("button", name="Label these")
        expect(label_these).to_be_visible()
        chosen = int(label_these.inner_text().split()[-1])
        assert 1 <= chosen <= 200
        label_these.click()
        page.wait_for_url("**/grid?items=*", timeout=60_000)
        ids = page.url.split("items=")[1].split("&")[0].replace("%2C", ",").split(",")
        assert len(ids) == chosen and all(i.isdigit() for i in ids)
        with wb.db.read() as s:
            known = set(s.scalars(select(Item.id).where(Item.project_id == pid)))
        assert {int(i) for i in ids} <= known
        browser.close()
