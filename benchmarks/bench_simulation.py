"""Label savings against random on the bundled digits, through the workbench's own simulation (the human loop with
an oracle), beside a plain scikit-learn baseline run in the same script.

Protocol (issues 4 and 14): `pixels` features, a held-out gold split for evaluation (app.simulation.holdout_size:
500 of the 1797 digits by default, never in the pool), a random seed round of 20, rounds of 20 up to 300 labels,
several seeds; each strategy's final accuracy ± standard error over seeds and its label saving against random with
a 95% bootstrap interval over seeds. Baseline: LogisticRegression on standardized 8x8 pixels, top-20 margin picks,
held-out split of the same size.

Run: .venv/bin/python benchmarks/bench_simulation.py [--seeds 5] [--strategies random,margin,...] [--max-labels 300]
     [--holdout N]

Speed (issue 15, `--speed`): what a simulated round costs against a bare loop doing the same learning. The bare
loop reads the project's cached features once and, per round, trains the same head (learners.ssl.train_head_ssl,
same config and seed), evaluates it on the same held-out split (the train job's metrics and intervals) and runs the
same strategy with the same random generator, in plain numpy/torch with no database: it makes the same picks and
reaches the same accuracies, which the run checks. Printed: per round, mean ± standard error over seeds of each
loop's time, their ratio, and the simulation's phases: hold (claiming the queued entries), answer (the oracle's
batch), the select job, the train job's fit (train), predictions and metrics (eval) and the rest of it
(bookkeeping: reading labels, storing the head, opening the next round); "other" is the job queue and the loop.

     .venv/bin/python benchmarks/bench_simulation.py --speed [--seeds 3] [--strategies margin] [--max-labels 300]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app.jobs.select as select_job  # noqa: E402
import app.jobs.train as train_job  # noqa: E402
import app.simulation as simulation  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.simulation import SimulationConfig, holdout_size, holdout_split, report_lines, run_simulation  # noqa: E402
from app.workbench import ProjectConfig, Workbench  # noqa: E402
from app.worker import Worker, job_runner  # noqa: E402
from learners.catalog import SSLConfig  # noqa: E402
from learners.efficiency import label_savings, mean_and_se, savings_interval  # noqa: E402
from learners.embedding import standardize  # noqa: E402
from learners.heads import HeadConfig, TrainedHead  # noqa: E402
from learners.metrics import classification_intervals, classification_metrics  # noqa: E402
from learners.ssl import train_head_ssl  # noqa: E402
from learners.strategies import StrategyInputs, get_strategy  # noqa: E402
from storage.files import latest_artifact, load_matrix  # noqa: E402
from storage.items import item_rows  # noqa: E402
from storage.models import Item  # noqa: E402

PHASES = ("hold", "answer", "select", "train", "eval", "bookkeeping")
clock = time.perf_counter  # --clock cpu: time.process_time (this process's CPU seconds, all its threads)
BARE_PHASES = ("select", "train", "eval")


def sklearn_baseline(seeds: list[int], batch: int, max_labels: int, eval_size: int) -> dict[str, list]:
    """Per rule ("random", "margin"): one (labels, held-out accuracy) curve per seed."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    curves: dict[str, list] = {"random": [], "margin": []}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y))
        held, pool = order[:eval_size], order[eval_size:]
        x_pool = StandardScaler().fit(x[pool]).transform(x)
        for rule in curves:
            labeled = list(rng.choice(pool, batch, replace=False))
            xs, ys = [], []
            while True:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = LogisticRegression(max_iter=2000).fit(x_pool[labeled], y[labeled])
                xs.append(len(labeled))
                ys.append(model.score(x_pool[held], y[held]))
                if len(labeled) >= max_labels:
                    break
                rest = np.setdiff1d(pool, labeled)
                if rule == "random":
                    picks = rng.choice(rest, batch, replace=False)
                else:
                    p = np.sort(model.predict_proba(x_pool[rest]), axis=1)
                    picks = rest[np.argsort(p[:, -1] - p[:, -2])[:batch]]
                labeled += list(picks)
            curves[rule].append((np.array(xs, float), np.array(ys)))
    return curves


def bare_loop(x: np.ndarray, pool_ids: np.ndarray, pool_rows: np.ndarray, eval_rows: np.ndarray, y: np.ndarray,
              num_classes: int, head: dict, strategy: str, seed: int, batch: int, rounds: int) -> tuple[list, dict]:
    """The learning of one simulated run without the workbench: (accuracy per round, seconds per phase). `x`: the
    features standardized with the pool's statistics; `y`: every row's gold class; `pool_ids`: the pool's item
    ids in id order (row `pool_rows[i]` of x). Round 0 is random, as the workbench's, then `strategy`."""
    config = HeadConfig.from_dict({**head, "seed": seed})
    ssl = SSLConfig.from_dict("none")
    labeled: list[int] = []  # pool positions, in pick order
    accuracies, seconds = [], {"train": 0.0, "eval": 0.0, "select": 0.0}
    probs = None
    for index in range(rounds + 1):
        started = clock()
        rule = get_strategy("random" if index == 0 else strategy)
        taken = np.zeros(len(pool_ids), dtype=bool)
        taken[labeled] = True
        ordered = np.sort(np.asarray(labeled, dtype=np.int64))  # the select job lists labeled items by id
        inputs = StrategyInputs(candidates=np.flatnonzero(~taken), labeled=ordered, labels=y[pool_rows[ordered]],
                                item_ids=pool_ids, probs=None if probs is None else probs[pool_rows])
        selection = rule.select(inputs, batch, np.random.default_rng([seed, index, 0]))
        labeled += [int(p) for p in selection.positions]
        seconds["select"] += clock() - started
        started = clock()
        rows = pool_rows[np.asarray(labeled, dtype=np.int64)]  # in the order answered, as the train job reads them
        model = train_head_ssl(x, rows, y[rows], num_classes, config, ssl, None, eval_excluded=eval_rows, device="cpu")
        seconds["train"] += clock() - started
        started = clock()
        probs = model.predict_proba(x)
        predicted = probs[eval_rows].argmax(1)
        metrics = classification_metrics(y[eval_rows], predicted, num_classes)
        classification_intervals(y[eval_rows], predicted, num_classes, seed=seed)
        accuracies.append(metrics["accuracy"])
        seconds["eval"] += clock() - started
    return accuracies, seconds


def timed(owner, name: str, phase: str, spent: dict[str, float]) -> None:
    """Wrap `owner.name` so its calls add their seconds to spent[phase] (the benchmark's stopwatch only)."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started = clock()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[phase] += clock() - started

    setattr(owner, name, wrapper)


def speed(args: argparse.Namespace) -> None:
    global clock
    if args.clock == "cpu":
        # CPU seconds of this process: what the loops cost, also on a machine whose other work slows the wall
        # clock. One torch thread, so that no thread's waiting counts as work.
        import torch

        torch.set_num_threads(1)
        clock = time.process_time
    seeds, rounds = list(range(args.seeds)), args.max_labels // args.batch - 1
    head = json.loads(args.head)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), db_url=f"sqlite:///{tmp}/wb.sqlite")
        wb = Workbench(settings)
        pid = wb.create_project(ProjectConfig(name="digits", head=head), "demo")
        worker = Worker(settings, device="cpu", quiet=True)
        while worker.run_once():
            pass
        with wb.db.read() as s:
            features, ids = load_matrix(latest_artifact(s, pid, "features"))
            items = item_rows(s, pid)
            gold = {item_id: value[0] for item_id, value in s.query(Item.id, Item.gold).filter(Item.project_id == pid)}
        size, _ = holdout_size(len(items), args.batch * (rounds + 1), args.holdout)
        held = set(holdout_split([it.id for it in items], size))
        row_of = {int(i): r for r, i in enumerate(ids)}
        pool_ids = np.array([it.id for it in items if it.id not in held], dtype=np.int64)
        pool_rows = np.array([row_of[i] for i in pool_ids], dtype=np.int64)
        eval_rows = np.array(sorted(row_of[i] for i in held), dtype=np.int64)
        y = np.array([gold[int(i)] for i in ids], dtype=np.int64)
        num_classes = int(y.max()) + 1

        spent = {phase: 0.0 for phase in (*PHASES, "fit", "predict")}
        timed(Workbench, "hold", "hold", spent)
        timed(Workbench, "answer_batch", "answer", spent)
        timed(select_job, "select_round", "select", spent)
        timed(train_job, "train", "train", spent)
        timed(train_job, "_fit", "fit", spent)
        timed(TrainedHead, "predict_proba", "predict", spent)
        timed(train_job, "_evaluate", "eval", spent)
        table: dict[str, dict[str, list[float]]] = {}
        for strategy in args.strategies.split(","):
            rows = table.setdefault(strategy, {name: [] for name in ("bare", "simulation", "ratio", *PHASES, "other",
                                                                     *(f"bare {p}" for p in BARE_PHASES))})
            for seed in seeds:
                started = clock()
                x = standardize(features, fit_rows=pool_rows)[0]
                accuracies, bare = bare_loop(x, pool_ids, pool_rows, eval_rows, y, num_classes, head, strategy, seed,
                                             args.batch, rounds)
                bare_round = (clock() - started) / (rounds + 1)
                for phase in spent:
                    spent[phase] = 0.0
                started = clock()
                config = SimulationConfig(strategies=[strategy], seeds=[seed], round_size=args.batch, rounds=rounds,
                                          head=head, holdout=args.holdout)
                result = simulation.run_simulation(settings, pid, config, job_runner("cpu"))
                sim_round = (clock() - started) / (rounds + 1)
                same = [p["accuracy"] for p in result["points"]] == accuracies
                if not same:
                    print(f"  {strategy} seed {seed}: the bare loop's accuracies differ from the simulation's")
                rows["bare"].append(bare_round)
                for phase in BARE_PHASES:
                    rows[f"bare {phase}"].append(bare[phase] / (rounds + 1))
                rows["simulation"].append(sim_round)
                rows["ratio"].append(sim_round / bare_round)
                # The train job's time: fit (train), predict + metrics (eval), the rest (bookkeeping)
                phases = {"hold": spent["hold"], "answer": spent["answer"], "select": spent["select"],
                          "train": spent["fit"], "eval": spent["predict"] + spent["eval"],
                          "bookkeeping": spent["train"] - spent["fit"] - spent["predict"] - spent["eval"]}
                for phase in phases:
                    rows[phase].append(phases[phase] / (rounds + 1))
                rows["other"].append(sim_round - sum(phases.values()) / (rounds + 1))
    print(f"per round ({args.batch} labels, {rounds + 1} rounds to {args.max_labels} labels, head {args.head}), "
          f"{'CPU' if args.clock == 'cpu' else 'wall'} ms, mean ± standard error over {len(seeds)} seeds "
          f"(load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    for columns in (("bare", "simulation", "ratio"), (*PHASES, "other"), tuple(f"bare {p}" for p in BARE_PHASES)):
        print(f"  {'strategy':<10}" + "".join(f"{c:>16}" for c in columns))
        for strategy, rows in table.items():
            cells = []
            for column in columns:
                values = np.array(rows[column]) * (1 if column == "ratio" else 1000)
                se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
                cells.append(f"{values.mean():.2f} ± {se:.2f}" if column == "ratio" else
                             f"{values.mean():.1f} ± {se:.1f}")
            print(f"  {strategy:<10}" + "".join(f"{c:>16}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--strategies", default="random,margin,entropy,confidence,coreset,badge,galaxy")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--max-labels", type=int, default=300)
    parser.add_argument("--head", default='{"kind": "linear"}', help="head settings (JSON)")
    parser.add_argument("--holdout", type=int, default=None, help="held-out gold items (default: holdout_size's rule)")
    parser.add_argument("--speed", action="store_true", help="time a simulated round against a bare loop (issue 15)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="--speed: CPU seconds (one torch "
                        "thread) or wall-clock seconds")
    args = parser.parse_args()
    if args.speed:
        speed(args)
        return
    seeds = list(range(args.seeds))
    rounds = args.max_labels // args.batch - 1
    started = time.time()
    held, rule = holdout_size(1797, args.batch * (rounds + 1), args.holdout)  # the bundled digits
    print(f"held-out split: {held} items ({rule})")
    base = sklearn_baseline(seeds, args.batch, args.max_labels, held)
    mean = {rule: mean_and_se(runs) for rule, runs in base.items()}
    base_savings = label_savings(mean["margin"][:2], mean["random"][:2])
    low, high = savings_interval(base["margin"], base["random"])
    print(f"sklearn LogisticRegression, top-{args.batch} margin, {len(seeds)} seeds: savings vs random "
          f"{'never reaches' if base_savings is None else f'{base_savings:+.1%}'} (95% interval [{low:+.1%}, {high:+.1%}]; "
          f"final acc margin {mean['margin'][1][-1]:.3f} ± {mean['margin'][2][-1]:.3f}, "
          f"random {mean['random'][1][-1]:.3f} ± {mean['random'][2][-1]:.3f}; {time.time() - started:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), db_url=f"sqlite:///{tmp}/wb.sqlite")
        wb = Workbench(settings)
        pid = wb.create_project(ProjectConfig(name="digits"), "demo")
        worker = Worker(settings, device="cpu", quiet=True)
        while worker.run_once():
            pass
        config = SimulationConfig(strategies=args.strategies.split(","), seeds=seeds, round_size=args.batch, rounds=rounds,
                                  head=json.loads(args.head), holdout=args.holdout)
        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            if time.time() - last[0] > 30:
                last[0] = time.time()
                print(f"  {fraction:.0%} {message}", flush=True)

        result = run_simulation(settings, pid, config, job_runner("cpu"), progress=progress)
    for metric in ("accuracy", "balanced_accuracy"):
        print(f"\nworkbench ({metric}), pixels + head {args.head}, {args.batch} per round to {args.max_labels} labels:")
        print("\n".join(report_lines(result, metric)))
    print(f"\ntotal {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
