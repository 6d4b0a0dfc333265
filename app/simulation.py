"""Simulation: the human loop run with an oracle that answers from gold labels, to compare strategies on a
project's own data before spending labels.

Each (strategy, seed) run is a fresh workbench database beside the project (same items, same ids, same cached
features, no gold labels in it) driven through the same verbs and job handlers as people use; the caller hands in
the job runner (app.worker.job_runner), so this module never loads the worker. The oracle is the
only holder of gold labels and answers only items the loop hands it.

The runs are measured on a held-out gold split, not on the project's own evaluation set (often small): by default
20% of the items or 500, whichever is larger, capped so a pool remains (`holdout_size`), drawn once with a fixed
seed so every strategy and seed is measured on the same items. In each run's database those items are the evaluation set,
labeled up front from the gold labels; every other item is the pool. They never enter the pool, never train,
never select, and the loop's oracle does not hold their labels.
"""
from __future__ import annotations

import math
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
from learners.efficiency import summarize
from storage import simulation_runs
from storage.files import latest_artifact, load_matrix
from storage.models import Artifact, Item, Project

ORACLE = "oracle"
HOLDOUT_FRACTION = 0.2  # the default held-out split: this share of the items ...
HOLDOUT_MINIMUM = 500  # ... or this many, whichever is larger (capped: see holdout_size)
HOLDOUT_SEED = 0  # one fixed draw: every strategy and seed is measured on the same held-out items
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
    holdout: int | None = None  # held-out gold items the runs are measured on; None: holdout_size's default

    @classmethod
    def from_dict(cls, d: dict) -> SimulationConfig:
        return cls(**d)


def holdout_size(items: int, spend: int, requested: int | None = None) -> tuple[int, str]:
    """(size of the held-out split, how it was chosen) for a project of `items` gold-labelled items whose runs
    each label `spend` pool items. Default: max(20% of the items, 500), capped at half the items and at
    items - spend, so a pool remains to choose from. A requested size must leave `spend` items in the pool."""
    room = items - spend
    if requested is not None:
        if not 1 <= requested <= room:
            raise ValueError(f"a held-out split of {requested} items leaves too small a pool: the runs label {spend} "
                             f"of the {items} items, so it must be between 1 and {max(room, 0)}")
        return requested, f"{requested} items as asked"
    share = math.ceil(HOLDOUT_FRACTION * items)
    size = min(max(share, HOLDOUT_MINIMUM), items // 2, room)
    if size < 1:
        raise ValueError(f"the project's {items} items leave no held-out split: the runs label {spend} of them "
                         "(fewer rounds or a smaller round size)")
    rule = f"{HOLDOUT_FRACTION:.0%} of {items} items is {share}, at least {HOLDOUT_MINIMUM}"
    if size < max(share, HOLDOUT_MINIMUM):
        rule += f", capped at {size} so a pool of {items - size} remains"
    return size, rule


def holdout_split(item_ids: list[int], size: int) -> list[int]:
    """The held-out item ids (sorted): `size` of `item_ids` drawn with HOLDOUT_SEED, the same for every run."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    return sorted(int(i) for i in rng.choice(np.sort(np.asarray(item_ids, dtype=np.int64)), size, replace=False))


def run_simulation(
    settings: Settings, project_id: int, config: SimulationConfig, job_runner: JobRunner,
    progress: Callable[[float, str], None] | None = None,
) -> dict:
    """Every (strategy, seed) run; returns {"config", "points": [...], "human": [...]} (points: one per round).
    config["holdout_split"] says what the runs were measured on: {"size", "items", "pool", "seed", "rule",
    "item_ids"}."""
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
    size, rule = holdout_size(len(items), config.round_size * (config.rounds + 1), config.holdout)
    held = holdout_split([it.id for it in items], size)
    runs = [(strategy, seed) for strategy in config.strategies for seed in config.seeds]
    points: list[dict] = []
    started = time.time()
    for n, (strategy, seed) in enumerate(runs):
        def run_progress(fraction: float, message: str, n: int = n) -> None:
            if progress:
                progress((n + fraction) / len(runs), f"{message} ({n + 1}/{len(runs)}, {time.time() - started:.0f} s)")

        points += _one_run(settings, project, items, gold, set(held), features, source_head, config, strategy, seed,
                           job_runner, run_progress)
    split = {"size": size, "items": len(items), "pool": len(items) - size, "seed": HOLDOUT_SEED, "rule": rule,
             "item_ids": held}
    return {"config": {**asdict(config), "holdout_split": split}, "points": points,
            "human": [asdict(p) for p in source.chart_data(project_id)]}


def _one_run(
    settings: Settings, project: Project, items: list[Item], gold: dict[int, list[int]], held: set[int],
    features: Artifact, source_head: Artifact | None, config: SimulationConfig, strategy: str, seed: int,
    job_runner: JobRunner, progress: Callable[[float, str], None],
) -> list[dict]:
    # A scratch folder of this run's own (mkdtemp: unique even for two jobs of the same strategy and seed on two
    # workers), removed when the run ends.
    runs = settings.home / "projects" / str(project.id) / "simulation-runs"
    runs.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix=f"{strategy.replace('+', '_')}-seed{seed}-", dir=runs))
    sim_settings = Settings(home=home, db_url=f"sqlite:///{home / 'sim.sqlite'}", lease_seconds=settings.lease_seconds)
    wb = Workbench(sim_settings)
    try:
        pid = _copy_project(wb, project, items, gold, held, features, source_head, config, strategy, seed)
        run_next_job = job_runner(sim_settings, f"simulation-{strategy}-{seed}")
        oracle = Oracle({item_id: value for item_id, value in gold.items() if item_id not in held})
        target = config.rounds + 1
        trained, seq = 0, 0
        while trained < target:
            # The oracle answers what the queue holds as one numbered batch, the label surface's exactly-once path
            # (one transaction for the batch instead of two per answer).
            held = wb.hold(pid, ORACLE, config.round_size)
            if held:
                batch = [{"seq": seq + n, "entry_id": c.entry_id, "kind": "label", "value": oracle.answer(c.item_id)}
                         for n, c in enumerate(held, start=1)]
                seq += len(batch)
                refused = [o for o in wb.answer_batch(pid, ORACLE, "oracle", batch).outcomes if o.status != "applied"]
                if refused:
                    raise RuntimeError(f"simulation of {strategy} (seed {seed}): answers refused: {refused[0].reason}")
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
    wb: Workbench, project: Project, items: list[Item], gold: dict[int, list[int]], held: set[int],
    features: Artifact, source_head: Artifact | None, config: SimulationConfig, entry: str, seed: int,
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
        splits = {it.id: "eval" if it.id in held else "pool" for it in items}
        simulation_runs.copy_project(s, sim, items, splits,
                                     [features] + ([source_head] if source_head is not None else []))
        # The held-out split is the run's evaluation set, labeled first as people do; it never trains or selects.
        simulation_runs.add_labels(s, sim.id, ORACLE, {item_id: gold[item_id] for item_id in sorted(held)})
        open_round(s, sim)
        return sim.id


def measured_on(result: dict, eval_n: list[int]) -> str:
    """What a simulation's points were measured on, in words (results stored before held-out splits were measured
    on the project's own evaluation set)."""
    split = result["config"].get("holdout_split")
    if split is None:
        return f"the project's evaluation set (n = {', '.join(map(str, eval_n)) or '?'}), before held-out splits"
    return (f"{split['size']} held-out gold items ({split['rule']}; drawn with seed {split['seed']}), "
            f"never in the pool of {split['pool']}")


def report_lines(result: dict, metric: str = "accuracy") -> list[str]:
    """A simulation's summary as text (the CLI's and the benchmark's): what it was measured on, each strategy's
    mean ± standard error at every label count, then per strategy its final value ± SE, the labels it needs to
    reach random's final value and its saving against random with the bootstrap interval over seeds."""
    summary = summarize(result, metric)
    table, curves = summary["table"], summary["curves"]
    seeds = sorted({row["seeds"] for row in table})
    lines = [f"{' or '.join(map(str, seeds))} seeds per strategy; {metric} measured on "
             f"{measured_on(result, summary['eval_n'])}",
             f"{metric}, mean ± standard error over seeds, by pool labels spent:"]
    names = list(curves)
    width = max(15, *(len(n) for n in names))
    lines.append((f"  {'labels':>6}  " + "  ".join(f"{n:<{width}}" for n in names)).rstrip())
    cells = {name: dict(zip(c["labels"], zip(c["mean"], c["se"]))) for name, c in curves.items()}
    for x in sorted({x for c in curves.values() for x in c["labels"]}):
        row = [f"{cells[n][x][0]:.3f} ± {cells[n][x][1]:.3f}" if x in cells[n] else "" for n in names]
        lines.append((f"  {x:>6.0f}  " + "  ".join(f"{cell:<{width}}" for cell in row)).rstrip())
    level = f"{summary['level']:.0%}"
    lines.append(f"  {'strategy':<{width}}  {'final ± SE':<13}  {'AUC':>5}  {'labels to random final':>22}  "
                 f"{'saving vs random':>16}  {level} interval ({summary['resamples']} bootstrap resamples of seeds)")
    for row in table:
        reach = row.get("labels_to_reach_random_final")
        point, interval, verdict = saving_words(row)
        lines.append(f"  {row['strategy']:<{width}}  {row['final']:.3f} ± {row['final_se']:.3f}  {row['auc']:>5.3f}  "
                     f"{'never' if reach is None else f'{reach:.0f}':>22}  {point:>16}  {interval} {verdict}".rstrip())
    return lines


def saving_words(row: dict) -> tuple[str, str, str]:
    """(saving, its interval, significance) of a summary row, in words: '+20.8%', '[+3.1%, +35.0%]',
    'significant'. A lower end of -inf (some resamples never reach random's final value) reads '-inf'."""
    if "label_savings_vs_random" not in row:
        return "n/a", "", "no random run to compare with"
    if row["strategy"] == "random":
        return "reference", "", ""
    saving = row["label_savings_vs_random"]
    low, high = row["savings_interval"]
    point = "never reaches" if saving is None else f"{saving:+.1%}"
    if math.isnan(low):
        return point, "", "n/a (one seed: nothing to resample)"
    if high == -math.inf:  # no resample reaches random's final value
        return point, "", "worse than random: never reaches its final value"
    interval = f"[{'-inf' if low == -math.inf else f'{low:+.1%}'}, {high:+.1%}]"
    return point, interval, "significant" if row["savings_significant"] else "not significant"


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
