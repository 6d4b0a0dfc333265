"""Simulation: the oracle answers only what the loop asks, the runs are measured on a held-out gold split that
never enters the pool, the same seed gives the same curve, the job stores results the page and CLI read with
standard errors and savings intervals, and the efficiency summary follows the spec."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

import app.simulation as simulation
from app.settings import Settings
from app.simulation import SimulationConfig, holdout_size, holdout_split, report_lines, run_simulation
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


def test_holdout_size_is_a_fifth_or_500_capped_so_a_pool_remains() -> None:
    assert holdout_size(1797, 120) == (500, "20% of 1797 items is 360, at least 500")  # the digits demo
    assert holdout_size(5000, 120)[0] == 1000  # 20% is more than 500
    size, rule = holdout_size(600, 120)  # 500 would leave 100 items: capped at half the items
    assert size == 300 and rule.endswith("capped at 300 so a pool of 300 remains")
    assert holdout_size(200, 150)[0] == 50  # capped at what the runs do not label
    assert holdout_size(1797, 120, 42) == (42, "42 items as asked")
    with pytest.raises(ValueError, match="between 1 and 1677"):
        holdout_size(1797, 120, 1700)
    with pytest.raises(ValueError, match="between 1 and 1677"):
        holdout_size(1797, 120, 0)
    with pytest.raises(ValueError, match="no held-out split"):
        holdout_size(100, 100)


def test_holdout_split_is_one_fixed_draw() -> None:
    ids = list(range(100, 300))
    held = holdout_split(ids, 50)
    assert len(set(held)) == 50 and set(held) <= set(ids) and held == sorted(held)
    assert holdout_split(list(reversed(ids)), 50) == held  # the same items whatever the order they come in


def test_the_runs_are_measured_on_a_held_out_split_the_loop_never_sees(demo, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, pid = demo
    oracles: list[simulation.Oracle] = []

    class RecordingOracle(simulation.Oracle):
        def __init__(self, gold):
            super().__init__(gold)
            oracles.append(self)

    monkeypatch.setattr(simulation, "Oracle", RecordingOracle)
    run_db: dict = {}

    def runner(run: Settings, name: str):  # the real job runner, after a look at the run's fresh database
        run_wb = Workbench(run)
        run_db["items"] = run_wb.status(pid).items
        run_db["eval_labels"] = set(run_wb.labels(pid, split="eval"))
        run_db["pool_labels"] = set(run_wb.labels(pid, split="pool"))
        run_wb.db.dispose()
        return job_runner("cpu")(run, name)

    config = SimulationConfig(strategies=["margin"], seeds=[0], round_size=10, rounds=2)
    result = run_simulation(settings, pid, config, runner)
    items = sum(Workbench(settings).status(pid).items.values())
    split = result["config"]["holdout_split"]
    held = set(split["item_ids"])
    size = min(max(-(-items // 5), 500), items // 2)
    assert split["size"] == len(held) == size and split["pool"] == items - size and split["items"] == items
    # the run's database: the held-out items are its evaluation set, labeled up front; every other item is pool
    assert run_db["items"] == {"pool": items - size, "eval": size}
    assert run_db["eval_labels"] == held and not run_db["pool_labels"]
    (oracle,) = oracles
    assert not set(oracle._gold) & held  # the loop's oracle cannot answer a held-out item
    assert len(oracle.asked) == len(set(oracle.asked)) == 30  # 3 rounds of 10, each item asked once
    assert not set(oracle.asked) & held
    assert [p["labels"] for p in result["points"]] == [10, 20, 30]
    assert [p["round_strategy"] for p in result["points"]] == ["random", "margin", "margin"]
    assert all(p["eval_n"] == size for p in result["points"])
    assert not (settings.home / "projects" / str(pid) / "simulation-runs" / "margin-seed0").exists()


def test_the_same_seed_gives_the_same_curve(demo) -> None:
    settings, pid = demo
    config = SimulationConfig(strategies=["random", "entropy"], seeds=[3], round_size=10, rounds=1)
    first = run_simulation(settings, pid, config, job_runner("cpu"))["points"]
    again = run_simulation(settings, pid, config, job_runner("cpu"))["points"]
    assert first == again


# Recorded before the simulation was made cheaper (issue 15: cached labels and features, built-once statements):
# {(strategy, seed): (accuracy per round, the items the oracle was asked, in order)} for the demo digits with an
# evaluation set of 200, rounds of 10, 2 rounds after the seed round: a batch strategy on predictions, one on
# features, a sequential one (a select job after each label) and a semi-supervised method. A speed change must leave
# them as they are; a deliberate change of what a learner computes re-records them. (Not TAILOR: its default arms
# are every registered strategy, so adding one changes its picks.)
RECORDED = {
    ("margin", 0): ([0.434, 0.53, 0.728],
        [708, 37, 415, 1783, 1084, 120, 245, 345, 1104, 471, 1687, 1653, 1268, 1691, 1684, 1290, 1690, 1555, 192, 1683, 757, 1001, 1023, 328, 840, 1053, 1717, 1700, 1701, 1437]),
    ("margin", 1): ([0.474, 0.718, 0.8],
        [1526, 1406, 1279, 260, 1197, 857, 159, 1791, 1637, 950, 418, 1560, 438, 628, 964, 266, 133, 877, 1506, 57, 538, 1121, 708, 1752, 1607, 584, 1479, 607, 925, 1092]),
    ("coreset", 0): ([0.434, 0.466, 0.59],
        [708, 37, 415, 1783, 1084, 120, 245, 345, 1104, 471, 817, 308, 412, 825, 805, 1215, 1774, 1566, 818, 795, 1062, 487, 1364, 812, 647, 1691, 899, 446, 1225, 241]),
    ("coreset", 1): ([0.474, 0.502, 0.54],
        [1526, 1406, 1279, 260, 1197, 857, 159, 1791, 1637, 950, 308, 817, 412, 825, 805, 1566, 1774, 1215, 818, 795, 241, 487, 812, 1062, 1310, 647, 979, 1558, 278, 1693]),
    ("galaxy", 0): ([0.434, 0.54, 0.714],
        [708, 37, 415, 1783, 1084, 120, 245, 345, 1104, 471, 557, 238, 511, 1744, 324, 887, 990, 136, 1203, 1162, 1023, 430, 1548, 1276, 1057, 1449, 1762, 955, 1387, 332]),
    ("galaxy", 1): ([0.474, 0.68, 0.8],
        [1526, 1406, 1279, 260, 1197, 857, 159, 1791, 1637, 950, 1284, 726, 431, 1065, 478, 1508, 1671, 1130, 704, 1070, 406, 1784, 32, 266, 677, 453, 1143, 98, 1538, 52]),
    ("margin+pseudo_label", 0): ([0.438, 0.604, 0.74],
        [708, 37, 415, 1783, 1084, 120, 245, 345, 1104, 471, 964, 1342, 1688, 1442, 1318, 1073, 1074, 186, 1321, 1268, 1531, 670, 825, 1480, 1728, 1623, 1722, 1510, 1632, 638]),
    ("margin+pseudo_label", 1): ([0.48, 0.634, 0.736],
        [1526, 1406, 1279, 260, 1197, 857, 159, 1791, 1637, 950, 98, 1482, 1487, 1123, 160, 63, 1493, 374, 1608, 1557, 562, 1490, 1570, 1078, 816, 1559, 1465, 431, 725, 1139]),
}


def test_a_fixed_seed_gives_the_results_recorded_before_the_speed_work(demo, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, pid = demo
    oracles: list[simulation.Oracle] = []

    class RecordingOracle(simulation.Oracle):
        def __init__(self, gold):
            super().__init__(gold)
            oracles.append(self)

    monkeypatch.setattr(simulation, "Oracle", RecordingOracle)
    # Several strategies and seeds in one call: what one run leaves in the process's caches must not change the next.
    config = SimulationConfig(strategies=["margin", "coreset", "galaxy", "margin+pseudo_label"], seeds=[0, 1],
                              round_size=10, rounds=2)
    points = run_simulation(settings, pid, config, job_runner("cpu"))["points"]
    runs = [(strategy, seed) for strategy in config.strategies for seed in config.seeds]
    found = {run: ([p["accuracy"] for p in points if (p["strategy"], p["seed"]) == run], oracle.asked)
             for run, oracle in zip(runs, oracles)}
    assert found == RECORDED


def test_a_simulation_job_stores_results_with_a_summary(demo) -> None:
    settings, pid = demo
    wb = Workbench(settings)
    with pytest.raises(WorkbenchError, match="unknown strategies"):
        wb.start_simulation(pid, ["nope"], [0], 10, 1)
    with pytest.raises(WorkbenchError, match="at least one item"):
        wb.start_simulation(pid, ["random"], [0], 10, 1, holdout=0)
    job_id = wb.start_simulation(pid, ["random", "margin"], [0, 1], 10, 2, holdout=300)
    worker = Worker(settings, device="cpu", quiet=True)
    while worker.run_once():
        pass
    (result,) = [r for r in wb.simulations(pid) if r.job_id == job_id]
    assert len(result.points) == 2 * 2 * 3
    assert result.config["holdout_split"]["size"] == 300
    assert all(p["eval_n"] == 300 for p in result.points)
    summary = summarize(asdict(result), "accuracy")
    assert summary["eval_n"] == [300]
    assert set(summary["curves"]) == {"random", "margin"}
    rows = {r["strategy"]: r for r in summary["table"]}
    assert rows["random"]["label_savings_vs_random"] == pytest.approx(0.0)
    assert rows["random"]["savings_interval"] == [0.0, 0.0]  # random against itself, paired by seed
    assert all(len(c["se"]) == 3 for c in summary["curves"].values())
    for name, row in rows.items():  # the final standard error is the last point's
        assert row["final_se"] == summary["curves"][name]["se"][-1]
        finals = [p["accuracy"] for p in result.points if p["strategy"] == name and p["labels"] == 30]
        assert row["final_se"] == pytest.approx(abs(finals[0] - finals[1]) / 2)  # two seeds: |a - b| / 2
    low, high = rows["margin"]["savings_interval"]
    assert low <= high and rows["margin"]["savings_significant"] == (low > 0 or high < 0)

    # the CLI's text: seeds, the held-out size, mean ± SE per label count, the saving with its interval
    text = "\n".join(report_lines(asdict(result), "accuracy"))
    assert "2 seeds per strategy; accuracy measured on 300 held-out gold items (300 items as asked" in text
    assert f"{summary['curves']['margin']['mean'][0]:.3f} ± {summary['curves']['margin']['se'][0]:.3f}" in text
    margin_line = next(line for line in text.splitlines() if line.strip().startswith("margin "))
    assert f"{rows['margin']['final']:.3f} ± {rows['margin']['final_se']:.3f}" in margin_line
    verdict = "significant" if rows["margin"]["savings_significant"] else "not significant"
    low_text = "-inf" if low == float("-inf") else f"{low:+.1%}"
    assert margin_line.endswith(f"[{low_text}, {high:+.1%}] {verdict}")

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
        table = at.dataframe[0].value
        assert set(table["strategy"]) == {"random", "margin"}
        margin = table[table["strategy"] == "margin"].iloc[0]
        assert margin["± SE"] == pytest.approx(rows["margin"]["final_se"])
        assert margin["significance"] in ("significant", "not significant")
        assert margin["95% interval"].startswith("[") and margin["label savings vs random"].endswith("%")
        said = " ".join(m.value for m in at.markdown)
        assert "2 seeds" in said and "300 held-out gold items" in said
        holdout_field = next(n for n in at.number_input if n.label == "Held-out eval items")
        assert holdout_field.value is None  # empty: the default rule
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
