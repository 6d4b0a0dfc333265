"""Project settings after creation (app.project_admin): each change does what it says, and deleting a project
removes its rows and its own folder only. Through the verbs, the CLI (in-process), the Projects page (AppTest) and
one real browser check of the Streamlit chrome (pages by URL, no Deploy button, a local favicon)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest
from test_browser import CHROMIUM, _open_page, _settle, workbench_server  # noqa: F401 (a fixture)

from app import cli
from app.project_admin import SettingsChange
from app.workbench import ProjectConfig, Workbench, WorkbenchError
from app.worker import Worker
from storage import jobs
from storage.files import latest_artifact
from storage.models import Artifact, Base, Item, Job, Project, QueueEntry
from storage.source_heads import backbone_key

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def write_shapes(folder: Path, per_class: int = 12) -> Path:
    """One sub-folder per class of small images whose colour gives the class."""
    for k, (name, colour) in enumerate(COLOURS.items()):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            shade = tuple(max(0, min(255, c + 4 * i - 20)) for c in colour)
            image = Image.new("RGB", (12, 12), shade)
            image.putpixel((i % 12, k), (255, 255, 255))
            image.save(folder / name / f"{name}{i}.png")
    return folder


def run_worker() -> None:
    worker = Worker(device="cpu", quiet=True)
    while worker.run_once():
        pass


def gold(wb: Workbench, project_id: int, key: str) -> int:
    return wb.project(project_id).classes.index(key.split("/")[0])


def label(wb: Workbench, project_id: int, count: int | None = None, split: str | None = None) -> int:
    """Answer up to `count` items of the labeling round with their gold class (only `split` items, when given)."""
    done = 0
    while count is None or done < count:
        task = wb.next_assignment(project_id, "tester")
        if task is None or (split is not None and task.split != split):
            if task is not None:
                wb.release(task.entry_id, "tester")
            break
        wb.submit(project_id, task.entry_id, "tester", [gold(wb, project_id, task.key)], seconds=1.0)
        done += 1
    return done


@pytest.fixture
def wb(settings) -> Workbench:
    workbench = Workbench(settings)
    yield workbench
    workbench.db.dispose()


@pytest.fixture
def shapes(wb: Workbench, tmp_path: Path) -> int:
    """A 36-image, 3-class folder project (6 eval items, rounds of 6), round 0 queued by the worker."""
    folder = write_shapes(tmp_path / "shapes")
    pid = wb.create_project(ProjectConfig(name="shapes", round_size=6, eval_size=6, training={"warm_start": True}),
                            folder)
    run_worker()
    assert wb.current_round(pid).state == "labeling"
    return pid


def count_rows(wb: Workbench, project_id: int) -> dict[str, int]:
    """Rows naming the project in every table that has a project_id column (plus its queue entries)."""
    counts = {}
    with wb.db.read() as s:
        for table in Base.metadata.sorted_tables:
            if "project_id" in table.c:
                counts[table.name] = s.scalar(select(func.count()).select_from(table)
                                              .where(table.c.project_id == project_id))
        counts["queue_entries"] = s.scalar(select(func.count()).select_from(QueueEntry).join(
            Item, Item.id == QueueEntry.item_id).where(Item.project_id == project_id))
        counts["projects"] = s.scalar(select(func.count()).select_from(Project).where(Project.id == project_id))
    return counts


# ----- backbone -----------------------------------------------------------------------------------------------------
def test_a_new_backbone_queues_an_embed_and_the_next_training_starts_fresh(wb: Workbench, shapes: int) -> None:
    label(wb, shapes)  # round 0 whole
    run_worker()
    assert [r.state for r in wb.rounds(shapes)] == ["done", "labeling"]
    with wb.db.read() as s:
        assert latest_artifact(s, shapes, "head") is not None

    lines = wb.change_settings(shapes, SettingsChange(backbone={"name": "pixels", "image_size": 8}))
    assert len(lines) == 1 and "embed job" in lines[0] and "retired" in lines[0] and "fresh head" in lines[0]
    with wb.db.read() as s:
        assert latest_artifact(s, shapes, "head") is None and latest_artifact(s, shapes, "predictions") is None
        assert s.scalar(select(func.count()).select_from(Artifact).where(
            Artifact.project_id == shapes, Artifact.kind == "retired_head")) == 1
    assert {j.kind for j in wb.status(shapes).jobs} == {"embed", "train"}
    assert not wb.has_predictions(shapes)  # the Label page shows no guess from the old feature space
    assert "settings changed: backbone" in wb.current_round(shapes).note

    run_worker()
    trained = next(j for j in wb.jobs(shapes) if j.kind == "train")
    assert trained.state == "done" and "fresh start: no earlier head" in trained.message
    with wb.db.read() as s:
        head = latest_artifact(s, shapes, "head")
        assert head.meta["backbone"] == backbone_key({"name": "pixels", "image_size": 8})
        assert latest_artifact(s, shapes, "features", backbone=backbone_key({"name": "pixels", "image_size": 8}))

    label(wb, shapes)  # round 1: its training warm-starts from the head of the new feature space
    run_worker()
    assert ", warm start" in wb.rounds(shapes)[1].note
    history = wb.settings_history(shapes)
    assert len(history) == 1 and history[0].round_index == 1 and "backbone pixels -> pixels" in history[0].changes[0]


def test_the_same_feature_space_is_no_change(wb: Workbench, shapes: int) -> None:
    assert wb.change_settings(shapes, SettingsChange(backbone={"name": "pixels", "image_size": 16})) == []
    assert wb.change_settings(shapes, SettingsChange(backbone={"name": "pixels"})) == []  # 16 px is the default
    assert wb.settings_history(shapes) == []


# ----- head, training, strategy, round size ------------------------------------------------------------------------
def test_head_training_strategy_and_round_size_apply_from_the_next_round(wb: Workbench, shapes: int) -> None:
    plan = wb.settings_plan(shapes, SettingsChange(head="mlp", strategy="entropy", round_size=4))
    assert len(plan) == 3
    lines = wb.change_settings(shapes, SettingsChange(head="mlp", ssl="pseudo_label", strategy="entropy",
                                                      round_size=4))
    assert [line.split(" ")[0] for line in lines] == ["head", "training", "strategy", "round"]
    assert "round 0 keeps its strategy (random) and queue" in lines[2]
    project = wb.project(shapes)
    assert (project.head["kind"], project.training["ssl"], project.strategy, project.round_size) == (
        "mlp", "pseudo_label", "entropy", 4)
    assert wb.current_round(shapes).strategy == "random"
    assert wb.status(shapes).round.queue.pending == 12  # round 0 keeps its queue (6 eval + 6 pool)

    label(wb, shapes)
    run_worker()
    first, second = wb.rounds(shapes)
    assert "trained mlp head (pseudo_label" in first.note
    queue = wb.status(shapes).round.queue  # some of its items may have been picked ahead and labeled already
    assert second.strategy == "entropy" and queue.pending + queue.claimed + queue.labeled + queue.skipped == 4


def test_bad_settings_are_refused_in_words_and_nothing_changes(wb: Workbench, shapes: int) -> None:
    for change, words in [
        (SettingsChange(strategy="nosuch"), "unknown strategy 'nosuch'"),
        (SettingsChange(round_size=0), "round size must be at least 1"),
        (SettingsChange(eval_size=-1), "eval-set size at least 0"),
        (SettingsChange(backbone={"name": "resnet18"}), "use 'pixels' or 'timm/<model name>'"),
        (SettingsChange(backbone={"name": "timm/resnet18", "checkpoint": "/no/such.safetensors"}), "no such checkpoint"),
        (SettingsChange(head="huge"), "unknown head kind 'huge'"),
        (SettingsChange(strategy="margin", strategy_params={"nosuch": 1}), "nosuch"),
    ]:
        with pytest.raises(WorkbenchError, match=None) as refused:
            wb.change_settings(shapes, change)
        assert words in str(refused.value)
    project = wb.project(shapes)
    assert (project.strategy, project.round_size, project.backbone["name"]) == ("margin", 6, "pixels")
    assert wb.settings_history(shapes) == []


# ----- the evaluation set ------------------------------------------------------------------------------------------
def test_eval_size_grows_by_free_pool_items_queued_now_and_shrinks_only_by_unlabeled_ones(wb: Workbench,
                                                                                         shapes: int) -> None:
    assert label(wb, shapes, 3, split="eval") == 3
    labeled_eval = set(wb.labels(shapes, split="eval"))
    assert len(labeled_eval) == 3
    with wb.db.read() as s:
        queued_before = set(s.scalars(select(QueueEntry.item_id)))

    lines = wb.change_settings(shapes, SettingsChange(eval_size=10))
    assert "eval-set size 6 -> 10: 4 random unlabeled pool item(s) added, queued in round 0" in lines[0]
    with wb.db.read() as s:
        eval_ids = set(s.scalars(select(Item.id).where(Item.project_id == shapes, Item.split == "eval")))
        added = eval_ids - set(s.scalars(select(QueueEntry.item_id).where(QueueEntry.item_id.in_(queued_before))))
        entries = {e.item_id: e for e in s.scalars(select(QueueEntry).where(QueueEntry.item_id.in_(added)))}
    assert len(eval_ids) == 10 and labeled_eval <= eval_ids and len(added) == 4
    assert not added & queued_before and not added & set(wb.labels(shapes))  # free pool items only
    assert all(e.arm == "eval" and e.state == "pending" for e in entries.values())

    lines = wb.change_settings(shapes, SettingsChange(eval_size=0))
    assert "eval-set size 10 -> 3: 7 unlabeled evaluation item(s) given back to the pool" in lines[0]
    assert "labeled evaluation items are never given back" in lines[0]
    with wb.db.read() as s:
        still = set(s.scalars(select(Item.id).where(Item.project_id == shapes, Item.split == "eval")))
    assert still == labeled_eval and wb.project(shapes).eval_size == 3
    assert wb.status(shapes).round.queue.dropped == 7 and wb.current_round(shapes).state == "labeling"
    assert [len(r.changes) for r in wb.settings_history(shapes)] == [1, 1]


def test_eval_size_grown_between_rounds_is_queued_by_a_later_round(wb: Workbench, shapes: int) -> None:
    label(wb, shapes)  # round 0 whole: it goes to training (the next round may open at once with items ahead)
    lines = wb.change_settings(shapes, SettingsChange(eval_size=8))
    assert "eval-set size 6 -> 8: 2 random unlabeled pool item(s) added" in lines[0]
    run_worker()
    with wb.db.read() as s:
        eval_ids = set(s.scalars(select(Item.id).where(Item.project_id == shapes, Item.split == "eval")))
        open_ids = set(s.scalars(select(QueueEntry.item_id).where(QueueEntry.state.in_(("pending", "claimed")))))
    labeled = set(wb.labels(shapes, split="eval"))
    assert len(eval_ids) == 8 and len(labeled) == 6 and eval_ids - labeled <= open_ids  # all labeled or queued


# ----- running jobs -------------------------------------------------------------------------------------------------
def test_a_running_job_blocks_deletion_and_a_backbone_change_in_words(wb: Workbench, shapes: int) -> None:
    with wb.db.write() as s:
        job = jobs.enqueue(s, "train", shapes, None, {"on_demand": True}, priority=5)
        job_id = job.id
    with wb.db.write() as s:
        claimed = jobs.claim(s, "worker-x")
        assert claimed.id == job_id
    with pytest.raises(WorkbenchError, match=f"train job {job_id} of project 'shapes' is running on worker worker-x"):
        wb.delete_project(shapes, "shapes")
    with pytest.raises(WorkbenchError, match=f"train job {job_id} of this project is running"):
        wb.change_settings(shapes, SettingsChange(backbone={"name": "pixels", "image_size": 8}))
    assert wb.change_settings(shapes, SettingsChange(strategy="entropy"))  # read when a selection starts: allowed
    assert wb.project(shapes).backbone["name"] == "pixels" and wb.project_id("shapes") == shapes


# ----- deletion -----------------------------------------------------------------------------------------------------
def test_delete_removes_every_row_and_the_project_folder_only(wb: Workbench, shapes: int, tmp_path: Path) -> None:
    other_folder = write_shapes(tmp_path / "other")
    other = wb.create_project(ProjectConfig(name="other", round_size=3, eval_size=3), other_folder)
    run_worker()
    label(wb, shapes, 4)
    label(wb, other, 2)
    wb.change_settings(shapes, SettingsChange(round_size=5))
    before_other = count_rows(wb, other)
    home = wb.settings.home
    assert (home / "projects" / str(shapes)).is_dir() and (home / "projects" / str(other)).is_dir()
    images = sorted(p.relative_to(tmp_path) for p in (tmp_path / "shapes").rglob("*.png"))

    with pytest.raises(WorkbenchError, match="type its name exactly; nothing was deleted"):
        wb.delete_project(shapes, "Shapes")
    lines = wb.delete_project(shapes, "shapes")
    assert lines[0].startswith("project 'shapes' deleted with its rows (")
    assert "annotations" in lines[0] and "queue entries" in lines[0] and "artifacts" in lines[0]
    assert "removed" in lines[1] and f"imported images in {tmp_path / 'shapes'} were not touched" in lines[2]

    assert [p.name for p in wb.projects()] == ["other"]
    with wb.db.read() as s:
        for table in Base.metadata.sorted_tables:
            if "project_id" in table.c:
                assert s.scalar(select(func.count()).select_from(table).where(table.c.project_id == shapes)) == 0
        assert s.scalar(select(func.count()).select_from(Job).where(Job.project_id == shapes)) == 0
    assert count_rows(wb, other) == before_other
    assert not (home / "projects" / str(shapes)).exists() and (home / "projects" / str(other)).is_dir()
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "shapes").rglob("*.png")) == images
    with pytest.raises(WorkbenchError, match="no project named 'shapes'"):
        wb.project_id("shapes")


# ----- the CLI ------------------------------------------------------------------------------------------------------
def test_cli_project_set_show_delete_and_status(wb: Workbench, shapes: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["project", "set", "shapes", "--strategy", "entropy", "--round-size", "4", "--head", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "strategy margin (its defaults) -> entropy" in out and "round size 6 -> 4" in out and "head linear -> mlp" in out
    assert cli.main(["project", "set", "shapes", "--round-size", "4"]) == 0
    assert "nothing to change" in capsys.readouterr().out
    assert cli.main(["project", "set", "shapes", "--strategy", "nosuch"]) == 2
    assert "error: unknown strategy 'nosuch'" in capsys.readouterr().err
    assert cli.main(["project", "show", "shapes"]) == 0
    assert "settings history:" in (out := capsys.readouterr().out) and "round size 6 -> 4" in out

    assert cli.main(["status", "shapes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("shapes (project") and "round 0 (random): labeling; queue 12 pending" in out
    assert cli.main(["status", "shapes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["round"]["queue"]["pending"] == 12
    assert cli.main(["status", "--json"]) == 0
    assert [p["project"] for p in json.loads(capsys.readouterr().out)] == ["shapes"]

    assert cli.main(["project", "delete", "shapes"]) == 2
    assert "add --yes to do it" in capsys.readouterr().err and wb.project_id("shapes") == shapes
    assert cli.main(["project", "delete", "shapes", "--yes"]) == 0
    assert "project 'shapes' deleted" in capsys.readouterr().out and wb.projects() == []


# ----- the Projects page --------------------------------------------------------------------------------------------
def projects_page(project_id: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["project_id"] = project_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Projects"
    return at


def test_projects_page_previews_applies_and_records_a_settings_change(wb: Workbench, shapes: int) -> None:
    at = projects_page(shapes)
    assert at.button(key="apply_settings").disabled  # nothing changed yet
    at.number_input(key=f"set_{shapes}_round_size").set_value(4).run()
    at.selectbox(key=f"set_{shapes}_strategy").set_value("entropy").run()
    preview = at.info[0].value.replace("\\", "")  # as the browser shows it (the names are escaped Markdown)
    assert "round size 6 -> 4: from the next selection" in preview and "strategy margin -> entropy" in preview
    at.button(key="apply_settings").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = at.success[0].value.replace("\\", "")
    assert "Settings of 'shapes' changed" in shown and "round size 6 -> 4" in shown
    assert (wb.project(shapes).round_size, wb.project(shapes).strategy) == (4, "entropy")
    history = at.dataframe[1].value  # the list, then the settings history
    assert any("round size 6 -> 4" in change for change in history["change"])
    assert at.button(key="apply_settings").disabled  # the inputs start from the stored settings again


def test_projects_page_deletes_after_the_name_is_typed(wb: Workbench, shapes: int) -> None:
    at = projects_page(shapes)
    assert at.button(key="delete_project").disabled
    at.text_input(key=f"delete_confirm_{shapes}").input("shape").run()
    assert at.button(key="delete_project").disabled
    at.text_input(key=f"delete_confirm_{shapes}").input("shapes").run()
    at.button(key="delete_project").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "project 'shapes' deleted" in at.success[0].value and "were not touched" in at.success[0].value
    assert wb.projects() == []
    assert "No project yet" in at.info[0].value


# ----- the Streamlit chrome in a real browser -----------------------------------------------------------------------
def test_pages_open_by_their_url_without_a_deploy_button_or_a_remote_favicon(tmp_path: Path, request) -> None:
    pytest.importorskip("playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    server = request.getfixturevalue("workbench_server")
    url = server[0]
    with sync_playwright() as pw:
        browser, page = _open_page(pw)
        page.set_viewport_size({"width": 1400, "height": 900})
        try:
            for path, title in (("rounds", "Rounds"), ("jobs", "Jobs"), ("projects", "Projects"), ("", "Projects")):
                page.goto(f"{url}/{path}")
                page.get_by_role("heading", name=title, exact=True).wait_for()
                _settle(page)
                assert page.get_by_text("Page not found").count() == 0, path
                assert page.locator("[data-testid='stAppDeployButton']").count() == 0
                assert page.get_by_role("button", name="Deploy").count() == 0
                icon = page.locator("link[rel~='icon']").first.get_attribute("href") or ""
                assert not icon.startswith("http") or icon.startswith(url), icon
            page.goto(f"{url}/rounds")
            page.get_by_role("heading", name="Rounds", exact=True).wait_for()
            _settle(page)
            table = page.locator("[data-testid='stDataFrame']").first.bounding_box()
            main = page.locator("[data-testid='stMainBlockContainer']").first.bounding_box()
            assert table["x"] + table["width"] <= main["x"] + main["width"] + 1
            if shots := __import__("os").environ.get("WORKBENCH_SCREENSHOTS"):
                page.screenshot(path=str(Path(shots) / "rounds-1400.png"), full_page=True)
        finally:
            browser.close()
