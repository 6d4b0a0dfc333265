"""Simulation: the human loop run with an oracle that answers from gold labels, to compare strategies on a
project's own data before spending labels.

Each (strategy, seed) run is a fresh workbench database beside the project (same items, same ids, same cached
features, no gold labels in it) driven through the same verbs and job handlers as people use; the caller hands in
the job runner (app.worker.job_runner), so this module never loads the worker. The oracle is the
only holder of gold labels and answers only items the loop hands it; the evaluation set is labeled by the oracle
up front, as annotators label it first in a real project.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from app.rounds import open_round
from app.settings import Settings
from app.workbench import Workbench
from storage import simulation_runs
from storage.files import latest_artifact, load_matrix
from storage.models import Artifact, Item, Project

ORACLE = "oracle"
# Given a simulated run's settings and a worker name: the function that runs that database's next queued job to
# completion, False when none is queued (app.worker.job_runner).
JobRunner = Callable[[Settings, str], Callable[[], bool]]


class Oracle:
    """The simulated annotator: answers the item it is handed from the gold labels, and nothing else."""

    def __init__(self, gold: dict[int, list[int]]) -> None:
        self._gold = gold
        self.asked: list[int] = []

    def answer(self, item_id: int) -> list[int]:
        self.asked.append(item_id)
        return list(self._gold[item_id])


@dataclass
class SimulationConfig:
    strategies: list[str]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    round_size: int = 20  # B: the seed round and every later round
    rounds: int = 5  # R rounds after the seed round
    head: dict | None = None  # default: the project's head
    training: dict | None = None  # default: the project's training settings
    # Named runs beyond "strategy" and "strategy+method": {"<name>": {"strategy": "<registered name>",
    # "params": {...}, "ssl": None}}; an entry of `strategies` found here runs as described.
    variants: dict[str, dict] | None = None

    @classmethod
    def from_dict(cls, d: dict) -> SimulationConfig:
        return cls(**d)


def run_simulation(
    settings: Settings, project_id: int, config: SimulationConfig, job_runner: JobRunner,
    progress: Callable[[float, str], None] | None = None,
) -> dict:
    """Every (strategy, seed) run; returns {"config", "points": [...], "human": [...]} (points: one per round)."""
    source = Workbench(settings)
    project = source.project(project_id)
    with source.db.read() as s:
        items = simulation_runs.project_items(s, project_id)
        features = latest_artifact(s, project_id, "features")
        source_head = simulation_runs.source_head(s, project_id)
    gold = {it.id: it.gold for it in items if it.gold is not None}  # [] is a multi-label answer: none of the tags
    if len(gold) < len(items):
        raise ValueError(
            f"project {project.name!r}: simulation needs a gold label on every item; {len(items) - len(gold)} have none"
        )
    if features is None:
        raise ValueError(f"project {project.name!r}: its features are not computed yet (the embed job runs first)")
    runs = [(strategy, seed) for strategy in config.strategies for seed in config.seeds]
    points: list[dict] = []
    started = time.time()
    for n, (strategy, seed) in enumerate(runs):
        def run_progress(fraction: float, message: str, n: int = n) -> None:
            if progress:
                progress((n + fraction) / len(runs), f"{message} ({n + 1}/{len(runs)}, {time.time() - started:.0f} s)")

        points += _one_run(settings, project, items, gold, features, source_head, config, strategy, seed, job_runner,
                           run_progress)
    return {"config": asdict(config), "points": points, "human": [asdict(p) for p in source.chart_data(project_id)]}


def _one_run(
    settings: Settings, project: Project, items: list[Item], gold: dict[int, list[int]], features: Artifact,
    source_head: Artifact | None, config: SimulationConfig, strategy: str, seed: int, job_runner: JobRunner,
    progress: Callable[[float, str], None],
) -> list[dict]:
    # A scratch folder of this run's own (mkdtemp: unique even for two jobs of the same strategy and seed on two
    # workers), removed when the run ends.
    runs = settings.home / "projects" / str(project.id) / "simulation-runs"
    runs.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix=f"{strategy.replace('+', '_')}-seed{seed}-", dir=runs))
    sim_settings = Settings(home=home, db_url=f"sqlite:///{home / 'sim.sqlite'}", lease_seconds=settings.lease_seconds)
    wb = Workbench(sim_settings)
    try:
        pid = _copy_project(wb, project, items, gold, features, source_head, config, strategy, seed)
        run_next_job = job_runner(sim_settings, f"simulation-{strategy}-{seed}")
        oracle = Oracle(gold)
        target = config.rounds + 1
        trained = 0
        while trained < target:
            task = wb.next_assignment(pid, ORACLE)
            if task is not None:
                wb.submit(pid, task.entry_id, ORACLE, oracle.answer(task.item_id))
                continue
            if not run_next_job():
                failed = [f"{j.kind}: {j.error}" for j in wb.failed_jobs(pid)]
                raise RuntimeError(f"simulation of {strategy} (seed {seed}) stalled: {failed or wb.status(pid)}")
            trained = len(wb.chart_data(pid))
            progress(trained / target, f"{strategy}, seed {seed}")
        pool_acc = _pool_accuracies(wb, pid, gold) if project.task == "single_label" else {}
        arms = _arm_pulls(wb, pid)
        return [
            {**asdict(point), "round_strategy": point.strategy, "strategy": strategy, "seed": seed,
             "pool_accuracy": pool_acc.get(point.round), "arms": arms.get(point.round, {})}
            for point in wb.chart_data(pid)[:target]
        ]
    finally:
        wb.db.dispose()
        shutil.rmtree(home, ignore_errors=True)


def run_variant(entry: str, variants: dict[str, dict] | None = None) -> tuple[str, dict | None, str | None]:
    """(strategy, its parameters or None for the defaults, training method or None for the project's) of a run:
    a named variant, or 'entropy+pseudo_label' -> ('entropy', None, 'pseudo_label'), or 'margin' -> ('margin', None, None)."""
    if variants and entry in variants:
        variant = variants[entry]
        return variant["strategy"], dict(variant.get("params") or {}), variant.get("ssl")
    strategy, _, method = entry.partition("+")
    return strategy, None, method or None


def _copy_project(
    wb: Workbench, project: Project, items: list[Item], gold: dict[int, list[int]], features: Artifact,
    source_head: Artifact | None, config: SimulationConfig, entry: str, seed: int,
) -> int:
    strategy, params, method = run_variant(entry, config.variants)
    training = dict(config.training or project.training or {})
    if method is not None:  # the method's own settings (e.g. vpa_lr) are kept from the project where given
        ssl = training.get("ssl", "none")
        training["ssl"] = {**ssl, "method": method} if isinstance(ssl, dict) else method
    if params is None:
        params = dict(project.strategy_params or {}) if strategy == project.strategy else {}
    with wb.db.write() as s:
        sim = Project(
            id=project.id, name=f"{project.name} / {entry} / seed {seed}", task=project.task,
            classes=list(project.classes), data_root=project.data_root, backbone=dict(project.backbone),
            head=dict(config.head or project.head), training=training,
            strategy=strategy, strategy_params=params, round_size=config.round_size, eval_size=0,
            # No picking ahead: every round is chosen by the head of the round before, so the label-efficiency
            # curves keep their meaning and stay comparable (pick-ahead would mix older heads' picks into rounds).
            auto_next_round=True, pick_ahead=0, seed=seed,
        )
        # A source model, when the project started from one, chooses round 0 as in the project.
        simulation_runs.copy_project(s, sim, items, [features] + ([source_head] if source_head is not None else []))
        # The evaluation set, labeled first as people do; it never trains or selects.
        simulation_runs.add_labels(s, sim.id, ORACLE, {it.id: gold[it.id] for it in items if it.split == "eval"})
        open_round(s, sim)
        return sim.id


def _arm_pulls(wb: Workbench, project_id: int) -> dict[int, dict[str, int]]:
    """Per round: how many labeled picks each arm made (the strategy's name, or the arm names of a strategy that composes others)."""
    with wb.db.read() as s:
        return simulation_runs.labeled_picks_per_arm(s, project_id)


def _pool_accuracies(wb: Workbench, project_id: int, gold: dict[int, list[int]]) -> dict[int, float]:
    """Transductive accuracy of each round's head on the whole pool (simulation only: it reads gold labels)."""
    out = {}
    with wb.db.read() as s:
        predictions = simulation_runs.round_predictions(s, project_id)
        pool = simulation_runs.pool_item_ids(s, project_id)
    for index, artifact in predictions.items():
        probs, ids = load_matrix(artifact)
        keep = np.array([int(i) in pool for i in ids])
        truth = np.array([gold[int(i)][0] for i in ids[keep]])
        out[index] = float((probs[keep].argmax(1) == truth).mean())
    return out
