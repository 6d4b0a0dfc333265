"""Simulation: the oracle answers only what the loop asks, the same seed gives the same curve, the job stores
results the page and CLI read, and the efficiency summary follows the spec."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

import app.simulation as simulation
from app.settings import Settings
from app.simulation import SimulationConfig, run_simulation
from app.workbench import ProjectConfig, Workbench, WorkbenchError
from app.worker import Worker, job_runner
from learners.efficiency import summarize


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, int]:
    home = tmp_path_factory.mktemp("sim")
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'wb.sqlite'}")
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Demo digits", eval_size=200), "demo")
    worker = Worker(settings, device="cpu", quiet=True)
    while worker.run_once():
        pass
    return settings, pid


def test_the_oracle_answers_only_the_items_the_loop_hands_it(demo, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, pid = demo
    oracles: list[simulation.Oracle] = []

    class RecordingOracle(simulation.Oracle):
        def __init__(self, gold):
            super().__init__(gold)
            oracles.append(self)

    monkeypatch.setattr(simulation, "Oracle", RecordingOracle)
    config = SimulationConfig(strategies=["margin"], seeds=[0], round_size=10, rounds=2)
    result = run_simulation(settings, pid, config, job_runner("cpu"))
    (oracle,) = oracles
    assert len(oracle.asked) == len(set(oracle.asked)) == 30  # 3 rounds of 10, each item asked once
    wb = Workbench(settings)
    eval_ids = {i for i, _ in wb.labels(pid, split="eval").items()}
    assert not set(oracle.asked) & eval_ids
    assert [p["labels"] for p in result["points"]] == [10, 20, 30]
    assert [p["round_strategy"] for p in result["points"]] == ["random", "margin", "margin"]
    assert all(p["eval_n"] == 200 for p in result["points"])
    assert not (settings.home / "projects" / str(pid) / "simulation-runs" / "margin-seed0").exists()


def test_the_same_seed_gives_the_same_curve(demo) -> None:
    settings, pid = demo
    config = SimulationConfig(strategies=["random", "entropy"], seeds=[3], round_size=10, rounds=1)
    first = run_simulation(settings, pid, config, job_runner("cpu"))["points"]
    again = run_simulation(settings, pid, config, job_runner("cpu"))["points"]
    assert first == again


def test_a_simulation_job_stores_results_with_a_summary(demo) -> None:
    settings, pid = demo
    wb = Workbench(settings)
    with pytest.raises(WorkbenchError, match="unknown strategies"):
        wb.start_simulation(pid, ["nope"], [0], 10, 1)
    job_id = wb.start_simulation(pid, ["random", "margin"], [0, 1], 10, 2)
    worker = Worker(settings, device="cpu", quiet=True)
    while worker.run_once():
        pass
    (result,) = [r for r in wb.simulations(pid) if r.job_id == job_id]
    assert len(result.points) == 2 * 2 * 3
    summary = summarize(asdict(result), "accuracy")
    assert set(summary["curves"]) == {"random", "margin"}
    random_row = next(r for r in summary["table"] if r["strategy"] == "random")
    assert random_row["label_savings_vs_random"] == pytest.approx(0.0)
    assert all(len(c["se"]) == 3 for c in summary["curves"].values())

    # the Simulate page shows the curves, the savings table and the downloads of every point
    import os

    from streamlit.testing.v1 import AppTest

    os.environ["WORKBENCH_HOME"], os.environ["WORKBENCH_DB_URL"] = str(settings.home), settings.db_url
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "streamlit_app.py"), default_timeout=60)
        at.session_state["project_id"] = pid
        at.run()
        at.switch_page("app/pages/simulate.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.title[0].value == "Simulate"
        strategies_in_table = set(at.dataframe[0].value["strategy"])
        assert strategies_in_table == {"random", "margin"}
        at.radio[0].set_value("balanced_accuracy").run()
        assert not at.exception
    finally:
        del os.environ["WORKBENCH_HOME"], os.environ["WORKBENCH_DB_URL"]


def test_simulation_refuses_a_project_without_gold(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "flat"
    images.mkdir()
    for i in range(6):
        Image.new("L", (8, 8), i * 40).save(images / f"{i}.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "\n".join(f"flat/{i}.png,{'ab'[i % 2] if i < 4 else ''}" for i in range(6)))
    settings = Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'wb.sqlite'}")
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="partial", eval_size=1, round_size=2), manifest)
    with pytest.raises(WorkbenchError, match="gold labels on every item; 2 of 6"):
        wb.start_simulation(pid, ["random"], [0], 2, 1)
