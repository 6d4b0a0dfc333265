"""The Streamlit pages, driven with AppTest against a real SQLite workbench in a temp folder.

The demo project (1797 digits, its round 0 selected by the in-process worker) is built once per test session and its
database copied for each test, so every test starts from the same state in its own WORKBENCH_HOME.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.exc import OperationalError
from streamlit.testing.v1 import AppTest

from app import ui
from app.page_table import PAGES, page
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from learners.metrics import wilson_interval
from storage import jobs
from storage.db import Database, sqlite_url
from tests.conftest import answer, surface

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 30
ROUND0_SIZE = 20  # demo defaults: 10 eval items + 10 pool items in round 0


def _run_worker() -> None:
    from app.worker import Worker

    worker = Worker(device="cpu")
    while worker.run_once():
        pass


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> Settings:
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url(home / "workbench.sqlite"))
    return Settings.from_env()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workbench home holding the demo project with round 0 queued (embedded and selected by the worker)."""
    home = tmp_path_factory.mktemp("template")
    with pytest.MonkeyPatch.context() as mp:
        wb = Workbench(_use_home(mp, home))
        # pick_ahead=0: these page tests count items per round as one round at a time (tests/test_round_boundary.py
        # covers the next round opening while one trains)
        wb.create_project(ProjectConfig(name="Demo digits", pick_ahead=0, eval_size=10), "demo")
        _run_worker()
        wb.db.dispose()
    return home


@pytest.fixture
def wb(demo_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    """This test's own workbench: a copy of the template database (image files stay in the template's home)."""
    home = tmp_path / "home"
    home.mkdir()
    src = sqlite3.connect(demo_template / "workbench.sqlite")
    dst = sqlite3.connect(home / "workbench.sqlite")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    workbench = Workbench(_use_home(monkeypatch, home))
    yield workbench
    workbench.db.dispose()


@pytest.fixture
def demo_id(wb: Workbench) -> int:
    return wb.project_id("Demo digits")


def open_page(url_path: str | None = None, project_id: int | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(query)
    if project_id is not None:
        at.session_state["project_id"] = project_id
    at.run()
    if url_path is not None:
        at.switch_page(page(url_path).file).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_key(at: AppTest) -> str:
    assert len(at.image) == 1
    return at.image[0].captions[0]


def gold_of(key: str) -> int:
    return int(key.split("/")[0])  # the demo's images live in one folder per digit


def label_whole_round(wb: Workbench, project_id: int) -> None:
    while (task := wb.next_assignment(project_id, "oracle")) is not None:
        wb.submit(project_id, task.entry_id, "oracle", [gold_of(task.key)], seconds=1.0)


@pytest.fixture
def trained(wb: Workbench, demo_id: int) -> int:
    """Round 0 fully labeled, trained and evaluated by the in-process worker (round 1 queued after it)."""
    label_whole_round(wb, demo_id)
    _run_worker()
    assert wb.rounds(demo_id)[0].state == "done"
    return demo_id


def write_pngs(folder: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


# ----- Projects -------------------------------------------------------------------------------------------------------
def test_projects_page_lists_the_demo(wb: Workbench) -> None:
    at = open_page()
    assert at.title[0].value == "Projects"
    table = at.dataframe[0].value
    row = table[table["name"] == "Demo digits"].iloc[0]
    assert row["pool items"] == 1787 and row["eval items"] == 10
    assert row["round"] == 0 and row["round state"] == "labeling"
    assert at.sidebar.selectbox(key="_project_pick").value == wb.project_id("Demo digits")


def test_create_project_from_an_image_folder(wb: Workbench, tmp_path: Path) -> None:
    folder = write_pngs(tmp_path / "pets")
    at = open_page()
    at.text_input(key="new_name").input("Pets")
    at.radio(key="new_source").set_value("folder").run()
    at.text_input(key="new_folder").input(str(folder))
    at.number_input(key="new_round_size").set_value(3)
    at.number_input(key="new_eval_size").set_value(2)
    at.button(key="create_project").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    pets = wb.project(wb.project_id("Pets"))
    assert pets.classes == ["cat", "dog"] and pets.round_size == 3 and pets.eval_size == 2
    assert wb.status(pets.id).items == {"pool": 6, "eval": 2}
    assert "Created project 'Pets'" in at.success[0].value
    assert at.session_state["project_id"] == pets.id  # the new project is selected
    assert "Pets" in at.dataframe[0].value["name"].tolist()


def test_create_project_with_a_bad_path_shows_an_error(wb: Workbench, tmp_path: Path) -> None:
    before = [p.name for p in wb.projects()]
    at = open_page()
    at.text_input(key="new_name").input("Nowhere")
    at.radio(key="new_source").set_value("folder").run()
    at.text_input(key="new_folder").input(str(tmp_path / "missing"))
    at.button(key="create_project").click().run()
    assert not at.exception
    assert "no such file or folder" in at.error[0].value
    assert [p.name for p in wb.projects()] == before


def test_create_project_from_a_folder_with_a_corrupt_image_stores_nothing(wb: Workbench, tmp_path: Path) -> None:
    folder = write_pngs(tmp_path / "pets")
    (folder / "cat" / "broken.png").write_bytes(b"not a png at all")
    before = [p.name for p in wb.projects()]
    at = open_page()
    at.text_input(key="new_name").input("Broken pets")
    at.radio(key="new_source").set_value("folder").run()
    at.text_input(key="new_folder").input(str(folder))
    at.button(key="create_project").click().run()
    assert not at.exception
    assert "broken.png" in at.error[0].value
    assert [p.name for p in wb.projects()] == before


# ----- Label ----------------------------------------------------------------------------------------------------------
# The Label page is the label surface (a components-v2 element): AppTest sees the data it is mounted with; what the
# browser sends back (a batch of answers) is applied with app.labeling.receive, the function its callback calls.
# tests/test_label_page.py drives the same page in real Chromium.
def test_label_page_shows_the_surface_with_one_key_per_class(wb: Workbench, demo_id: int) -> None:
    at = open_page("label")
    assert at.title[0].value == "Label"
    data = surface(at)
    assert data["task"] == "single_label" and data["project_id"] == demo_id
    assert [(c["name"], c["key"]) for c in data["classes"]] == [(str(k), str(k)) for k in range(10)]  # "3" on key 3
    assert len(data["items"]) == 5  # claimed ahead, each with its image
    item = data["items"][0]
    assert item["image"].startswith("data:image/png;base64,") and "/" not in item["caption"]
    assert item["chosen_by"] == "the evaluation set (random, never trained on)"
    assert data["round"] == {"index": 0, "state": "labeling", "done": 0, "total": ROUND0_SIZE}
    assert data["settings"]["guard_ms"] == 120 and data["settings"]["heartbeat_ms"] <= 15_000
    assert not at.info  # no waiting view while items are held


def test_shortcut_keys() -> None:
    assert ui.shortcut_keys(["cat", "dog", "bird"]) == ["1", "2", "3"]
    assert ui.shortcut_keys([str(k) for k in range(10)]) == [str(k) for k in range(10)]
    assert ui.shortcut_keys(["b", "cow", "1"]) == ["b", "2", "1"]  # single-key names keep their key
    keys = ui.shortcut_keys([f"class {k}" for k in range(40)])
    assert keys[:11] == list("1234567890a") and keys[11] == "b" and keys[12] == "d"  # no c (reserved)
    assert not {"c", "r", "s", "u"} & set(keys) and keys[-1] is None  # 32 keys for 40 classes


def test_label_skip_and_undo(wb: Workbench, demo_id: int) -> None:
    at = open_page("label", annotator="alice")
    assert at.session_state["annotator"] == "alice"
    data = surface(at)
    first, second = data["items"][0], data["items"][1]
    answer(wb, data, "tab", 1, "label", first["entry_id"], [3])  # what a key press sends
    at.run()
    assert wb.labels(demo_id) == {first["item_id"]: [3]}
    data = surface(at)
    assert data["items"][0]["entry_id"] == second["entry_id"] and data["round"]["done"] == 1
    assert [h["entry_id"] for h in data["history"]] == [first["entry_id"]]
    at.run()  # a plain rerun labels nothing again
    assert len(wb.labels(demo_id)) == 1 and surface(at)["items"][0]["entry_id"] == second["entry_id"]

    answer(wb, data, "tab", 2, "skip", second["entry_id"])
    at.run()
    data = surface(at)
    assert second["entry_id"] not in [i["entry_id"] for i in data["items"]]
    assert [h["kind"] for h in data["history"]] == ["skip", "label"]
    answer(wb, data, "tab", 3, "undo", second["entry_id"])  # takes back the skip: the item is held again
    answer(wb, data, "tab", 4, "undo", first["entry_id"])  # and the label
    at.run()
    data = surface(at)
    assert {first["entry_id"], second["entry_id"]} <= {i["entry_id"] for i in data["items"]}
    assert data["history"] == [] and wb.labels(demo_id) == {}
    assert not at.exception


def test_renaming_the_annotator_gives_the_items_back(wb: Workbench, demo_id: int) -> None:
    at = open_page("label", annotator="alice")
    held = [i["entry_id"] for i in surface(at)["items"]]
    at.sidebar.text_input(key="_annotator_field").input("bob").run()
    assert at.session_state["annotator"] == "bob"
    data = surface(at)
    assert data["annotator"] == "bob"
    assert [i["entry_id"] for i in data["items"]] == held  # alice's were released, so bob holds the same ones
    answer(wb, data, "tab-b", 1, "label", held[0], [1])
    assert list(wb.labels(demo_id).values()) == [[1]]


def test_label_page_explains_why_there_is_no_item(wb: Workbench, tmp_path: Path) -> None:
    pid = wb.create_project(ProjectConfig(name="Pets", round_size=2, eval_size=2, pick_ahead=0),
                            write_pngs(tmp_path / "pets"))
    _run_worker()
    at = open_page("label", project_id=pid, annotator="alice")
    held = [i["entry_id"] for i in surface(at)["items"]]
    other = open_page("label", project_id=pid, annotator="bob")  # alice holds every item: bob waits, told why
    assert surface(other)["items"] == [] and "taken by another annotator" in other.info[0].value
    from app import labeling

    labeling.release_held(wb.db, pid, "alice")
    wb.close_round(pid)  # no pick-ahead: nothing to label while the model trains
    at.run()
    data = surface(at)
    assert held and data["items"] == [] and "training" in data["empty_reason"]
    assert "model is training" in at.info[0].value
    bars = at.get("progress")
    assert bars and "train job" in bars[0].proto.text


def test_label_page_shows_a_failed_embedding_with_its_fix(wb: Workbench, tmp_path: Path) -> None:
    pid = wb.create_project(ProjectConfig(name="Pets", round_size=2, eval_size=2), write_pngs(tmp_path / "pets"))
    with wb.db.write() as s:
        job = jobs.claim(s, "test-worker")
        while (job.project_id, job.kind) != (pid, "embed"):  # the demo's own queued jobs come first
            job = jobs.claim(s, "test-worker")
        jobs.fail(s, job.id, "LearnerError: pretrained weights for timm/resnet18 are not on this machine")
    at = open_page("label", project_id=pid)
    assert "embedding (job" in at.error[0].value and "timm/resnet18" in at.error[0].value
    assert any("Project settings" in str(link.proto) for link in at.get("page_link"))
    assert not [e for e in at.main if getattr(e, "type", None) == "bidi_component"]  # no items offered


# ----- Rounds ---------------------------------------------------------------------------------------------------------
def test_rounds_page_closes_the_round(wb: Workbench, demo_id: int) -> None:
    at = open_page("rounds")
    table = at.dataframe[0].value
    assert table.iloc[0]["round"] == 0 and table.iloc[0]["state"] == "labeling"
    assert table.iloc[0]["pending"] == ROUND0_SIZE
    assert at.button(key="start_round").disabled

    at.button(key="close_round").click().run()
    assert not at.exception
    assert wb.current_round(demo_id).state == "training"
    assert at.dataframe[0].value.iloc[0]["state"] == "training"
    assert at.button(key="close_round").disabled
    assert any("train job" in bar.proto.text for bar in at.get("progress"))


def test_rounds_page_retries_a_failed_job(wb: Workbench, demo_id: int) -> None:
    wb.close_round(demo_id)
    with wb.db.write() as s:  # play a worker whose train job blew up
        job = jobs.claim(s, "test-worker")
        jobs.fail(s, job.id, "RuntimeError: out of memory")
    at = open_page("rounds")
    assert f"train job {job.id}" in at.error[0].value and "out of memory" in at.error[0].value

    at.button(key=f"retry_{job.id}").click().run()
    assert not at.exception and not at.error
    retried = [j for j in wb.jobs(demo_id) if j.kind == "train" and j.id > job.id]
    (round_index,) = [r.index for r in wb.rounds(demo_id) if r.id == job.round_id]
    assert len(retried) == 1 and retried[0].state == "queued" and retried[0].round_index == round_index


def test_rounds_page_starts_the_next_round_with_another_strategy(wb: Workbench, tmp_path: Path) -> None:
    config = ProjectConfig(name="Pets", round_size=3, eval_size=2, auto_next_round=False)
    pets = wb.create_project(config, write_pngs(tmp_path / "pets"))
    _run_worker()  # embed, select round 0
    while (task := wb.next_assignment(pets, "oracle")) is not None:
        wb.submit(pets, task.entry_id, "oracle", [["cat", "dog"].index(task.key.split("/")[0])])
    _run_worker()  # train; no automatic next round for this project
    assert wb.current_round(pets).state == "done"

    at = open_page("rounds", project_id=pets)
    assert at.dataframe[0].value.iloc[0]["metrics"].startswith("acc ")
    assert at.selectbox(key="next_strategy").options == wb.strategy_names()
    at.selectbox(key="next_strategy").set_value("entropy")
    at.checkbox(key="make_default").check()
    at.button(key="start_round").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    latest = wb.current_round(pets)
    assert latest.index == 1 and latest.strategy == "entropy" and latest.state == "selecting"
    assert wb.project(pets).strategy == "entropy"
    assert "Round 1 started with entropy" in at.success[0].value
    assert at.button(key="start_round").disabled


# ----- Dashboard ------------------------------------------------------------------------------------------------------
def test_dashboard_before_training(wb: Workbench, demo_id: int) -> None:
    at = open_page("dashboard")
    assert "No round has been trained yet" in at.info[0].value


def test_dashboard_shows_the_trained_round(wb: Workbench, trained: int) -> None:
    at = open_page("dashboard")
    points = at.dataframe[0].value
    assert points["round"].tolist() == [0]
    assert points["labels"].tolist() == [10]
    assert 0.0 <= points["accuracy"].iloc[0] <= 1.0
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2  # label efficiency + labels per class
    assert '"domain": [0, 1]' in charts[0].proto.spec
    assert at.metric[0].value == "10"


def test_dashboard_draws_each_point_with_its_interval_and_says_when_changes_are_noise(wb: Workbench, trained: int) -> None:
    label_whole_round(wb, trained)
    _run_worker()  # a second trained round: two points
    points = wb.chart_data(trained)
    at = open_page("dashboard")
    table = at.dataframe[0].value
    for point, shown in zip(points, table["accuracy 95%"]):
        low, high = wilson_interval(round(point.accuracy * point.eval_n), point.eval_n)
        assert point.interval("accuracy") == pytest.approx([low, high])
        assert shown == f"{low:.1%} – {high:.1%}"
    assert table["eval n"].tolist() == [10, 10]
    widest = max(p.interval("accuracy")[1] - p.interval("accuracy")[0] for p in points)
    change = abs(points[1].accuracy - points[0].accuracy)
    warned = any("not significant" in w.value for w in at.warning)
    assert warned == (widest > change)


def test_dashboard_shows_tailors_arms(wb: Workbench, demo_id: int) -> None:
    wb.set_strategy(demo_id, "tailor", {"arms": ["margin", "most_likely*", "coreset"], "update": "round"})
    label_whole_round(wb, demo_id)
    _run_worker()  # trains round 0; TAILOR chooses round 1
    at = open_page("dashboard")
    assert "TAILOR: which algorithm suits this data" in [h.value for h in at.subheader]
    arms = at.dataframe[-2].value
    assert len(arms) == 12 and {"margin", "coreset", "most_likely[7]"} <= set(arms["arm"])
    assert arms["pulls"].sum() == 10  # round 1's picks, each recorded with its arm


# ----- Jobs -----------------------------------------------------------------------------------------------------------
def test_jobs_page_lists_the_jobs_and_retries_a_failed_one(wb: Workbench, demo_id: int) -> None:
    wb.close_round(demo_id)
    with wb.db.write() as s:  # play a worker whose train job blew up
        job = jobs.claim(s, "test-worker")
        jobs.fail(s, job.id, "RuntimeError: out of memory")
    at = open_page("jobs")
    table = at.dataframe[0].value
    assert {"embed", "select", "train"} <= set(table["kind"])
    row = table[table["job"] == job.id].iloc[0]
    assert (row["kind"], row["state"], row["round"], row["attempts"], row["worker"]) == (
        "train", "failed", 0, 1, "test-worker")
    assert "out of memory" in row["error"]
    assert f"train job {job.id} (round 0) failed" in at.error[0].value  # the round's index, never its id

    at.button(key=f"retry_{job.id}").click().run()
    assert not at.exception and f"train job {job.id} queued again as job" in at.success[0].value
    assert not any(b.key == f"retry_{job.id}" for b in at.button)  # replaced by the retry
    assert at.dataframe[0].value.iloc[0]["state"] == "queued"  # newest first


# ----- the page frame -------------------------------------------------------------------------------------------------
TEXT_ELEMENTS = ("title", "markdown", "caption", "text", "code", "info", "success", "warning", "error", "exception")


def test_a_database_fault_is_a_worded_message_on_every_page(wb: Workbench, demo_id: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def locked(self: Database):
        raise OperationalError("SELECT projects.id FROM projects", {}, sqlite3.OperationalError("database is locked"))

    for spec in PAGES:
        at = open_page(spec.url_path)  # opened while the database answers
        monkeypatch.setattr(Database, "read", locked)
        at.run()
        monkeypatch.undo()
        assert not at.exception, spec.url_path
        assert "The database is busy" in at.error[0].value, spec.url_path
        shown = " ".join(str(element.value) for kind in TEXT_ELEMENTS for element in at.get(kind))
        assert not {"SQL", "SELECT", "Traceback", "sqlite3"} & set(shown.replace(".", " ").split()), spec.url_path


def test_database_problems_are_worded() -> None:
    unreachable = OperationalError("SELECT 1", {}, sqlite3.OperationalError("unable to open database file"))
    assert "cannot be reached" in ui.database_problem(unreachable) and "SELECT" not in ui.database_problem(unreachable)


# ----- Export ---------------------------------------------------------------------------------------------------------
def test_export_page_before_training(wb: Workbench, demo_id: int) -> None:
    at = open_page("export")
    buttons = {b.key: b for b in at.get("download_button")}
    assert not buttons["download_csv"].disabled and not buttons["download_jsonl"].disabled
    assert "download_parquet" not in buttons  # a row per item: built when asked, never on a draw
    assert buttons["download_predictions"].disabled
    assert any("after the first training" in c.value for c in at.caption)

    for name in ("zip", "parquet"):
        at.button(key=f"build_{name}").click().run()
        assert not at.exception and not at.error
        assert f"download_{name}" in {b.key for b in at.get("download_button")}


def test_export_page_offers_predictions_after_training(wb: Workbench, trained: int) -> None:
    at = open_page("export")
    buttons = {b.key: b for b in at.get("download_button")}
    assert set(buttons) == {"download_csv", "download_jsonl", "download_agreement", "download_head"}
    assert not any(b.disabled for b in buttons.values())
    at.button(key="build_predictions").click().run()
    assert not at.exception and not at.error
    assert not {b.key: b for b in at.get("download_button")}["download_predictions"].disabled


def test_export_page_offers_no_zip_for_a_multi_label_project(wb: Workbench, tmp_path: Path) -> None:
    tags = wb.create_project(ProjectConfig(name="Tags", eval_size=2, task="multi_label"), write_pngs(tmp_path / "tags"))
    at = open_page("export", project_id=tags)
    assert {b.key for b in at.get("download_button")} == {
        "download_csv", "download_jsonl", "download_agreement", "download_predictions", "download_head"}
    assert "build_parquet" in {b.key for b in at.button}
    assert "build_zip" not in {b.key for b in at.button}
    assert any("ImageFolder zip is not offered" in c.value and "cannot hold tags" in c.value for c in at.caption)


# ----- shared sidebar -------------------------------------------------------------------------------------------------
def test_project_choice_and_annotator_survive_page_switches(wb: Workbench, tmp_path: Path) -> None:
    second = wb.create_project(ProjectConfig(name="Pets", eval_size=2), write_pngs(tmp_path / "pets"))
    at = open_page()
    at.sidebar.selectbox(key="_project_pick").set_value(second).run()
    at.sidebar.text_input(key="_annotator_field").input("bob").run()
    for spec in PAGES:
        at.switch_page(spec.file).run()
        assert not at.exception, (spec.url_path, [e.value for e in at.exception])
        assert at.sidebar.selectbox(key="_project_pick").value == second
        assert at.sidebar.text_input(key="_annotator_field").value == "bob"


def test_pages_without_any_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_home(monkeypatch, tmp_path / "empty")
    for spec in PAGES:
        at = open_page(spec.url_path)
        assert at.info, spec.url_path


def test_label_page_refuses_a_file_that_changed_after_import(wb: Workbench, tmp_path: Path) -> None:
    folder = write_pngs(tmp_path / "pets")
    pid = wb.create_project(ProjectConfig(name="Pets", round_size=2, eval_size=2), folder)
    _run_worker()
    task = wb.next_assignment(pid, "annotator")
    task.path.write_bytes(b"<html>not an image any more</html>")
    at = open_page("label", project_id=pid, annotator="annotator")
    data = surface(at)
    shown = data["items"][0]
    assert shown["entry_id"] == task.entry_id and shown["image"] is None
    assert shown["problem"]  # the surface says why and offers only Skip
    answer(wb, data, "tab", 1, "skip", task.entry_id)  # the annotator can still move on
    at.run()
    assert not at.exception and surface(at)["items"][0]["entry_id"] != task.entry_id
