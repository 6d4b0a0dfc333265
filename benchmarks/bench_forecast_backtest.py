"""Backtest of the Dashboard's accuracy forecast (learners.forecast) on the workbench's own simulation curves.

Protocol (issue 17): the bundled digits demo (`pixels` features, the project's linear head), the workbench's
simulation (app.simulation.run_simulation: the human loop with an oracle, measured on a held-out gold split of
--holdout items), strategies random and margin, --seeds seeds, rounds of --batch up to --max-labels. For each
curve and each cut point k (the forecast is fit on the curve's first k rounds, k >= learners.forecast.MIN_POINTS)
the accuracy +100 / +500 / +1000 labels after the k-th round is forecast and compared with the accuracy the curve
reached there (only where the curve goes that far). Printed per horizon: the mean absolute error (each curve's
mean over its cut points, then mean ± standard error over the curves), the same for the naive forecast "accuracy
stays where it is", and the share of realised values inside the 90% and the 95% intervals with n (cut points,
all curves) and the standard error over curves; then the same for the cut points at --early labels or fewer,
where the curve still rises (later, the plateau makes "no change" a hard forecast to beat). Cut points of one
curve share its noise: n overstates the independent evidence, the SE over curves does not.

The stopping hint (--stopping-seeds): the simulation keeps no predictions, so each run here is a demo project of
its own (eval set of --holdout items, the strategy, the seed) labeled round by round by an oracle through the
verbs people use, to --max-labels; printed per run: where the stabilising-predictions hint first fires (the
Dashboard's rule, app.read_models.prediction_changes) and the accuracy then and at the end; over the runs: how
many fired, the labels at the first firing and the accuracy labeling on would still have gained (mean ± SE).

Run: .venv/bin/python benchmarks/bench_forecast_backtest.py [--seeds 5] [--batch 50] [--max-labels 1400]
     [--holdout 300] [--save curves.json] [--curves curves.json (read saved curves, no simulation)] [--early 300]
     [--stopping-seeds 3 [--save-stopping runs.json]] [--stopping runs.json (read saved runs)]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select

from app import read_models
from app.settings import Settings
from app.simulation import SimulationConfig, run_simulation
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker, job_runner
from learners.forecast import AHEAD, MIN_POINTS, STABLE_ROUNDS, STABLE_SHARE, forecast, predictions_stable
from storage.models import Item


def simulate(strategies: list[str], seeds: list[int], batch: int, max_labels: int, holdout: int) -> list[dict]:
    """One {"strategy", "seed", "labels", "accuracy", "eval_n"} curve per (strategy, seed)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), db_url=f"sqlite:///{tmp}/wb.sqlite")
        wb = Workbench(settings)
        pid = wb.create_project(ProjectConfig(name="digits"), "demo")
        worker = Worker(settings, device="cpu", quiet=True)
        while worker.run_once():
            pass
        config = SimulationConfig(strategies=strategies, seeds=seeds, round_size=batch,
                                  rounds=max_labels // batch - 1, holdout=holdout)
        last = [time.time()]

        def progress(fraction: float, message: str) -> None:
            if time.time() - last[0] > 30:
                last[0] = time.time()
                print(f"  {fraction:.0%} {message}", flush=True)

        result = run_simulation(settings, pid, config, job_runner("cpu"), progress=progress)
    curves = []
    for strategy in strategies:
        for seed in seeds:
            points = sorted((p for p in result["points"] if p["strategy"] == strategy and p["seed"] == seed),
                            key=lambda p: p["labels"])
            curves.append({"strategy": strategy, "seed": seed, "labels": [p["labels"] for p in points],
                           "accuracy": [p["accuracy"] for p in points], "eval_n": [p["eval_n"] for p in points]})
    return curves


def backtest(curve: dict) -> dict[int, list[dict]]:
    """{horizon: one row per cut point the curve reaches beyond: the forecast, its intervals, what was realised}."""
    labels, accuracy, eval_n = (np.asarray(curve[k], dtype=np.float64) for k in ("labels", "accuracy", "eval_n"))
    rows: dict[int, list[dict]] = {h: [] for h in AHEAD}
    for k in range(MIN_POINTS, len(labels)):
        reachable = [h for h in AHEAD if labels[k - 1] + h <= labels[-1]]
        if not reachable:
            break
        at90, at95 = (forecast(labels[:k], accuracy[:k], eval_n[:k], ahead=reachable, level=level)
                      for level in (0.90, 0.95))
        for f90, f95 in zip(at90.forecasts, at95.forecasts):
            realised = float(np.interp(f90.labels, labels, accuracy))
            rows[f90.ahead].append({"k": k, "at": labels[k - 1], "error": abs(f90.value - realised),
                                    "naive": abs(accuracy[k - 1] - realised),
                                    "in90": f90.low <= realised <= f90.high, "in95": f95.low <= realised <= f95.high,
                                    "width90": f90.width})
    return rows


def mean_se(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def report(curves: list[dict], early: int) -> None:
    per_curve = [backtest(c) for c in curves]
    print(f"\n{len(curves)} curves ({', '.join(sorted({c['strategy'] for c in curves}))}; "
          f"{len(curves[0]['labels'])} rounds up to {curves[0]['labels'][-1]} labels, eval n {curves[0]['eval_n'][-1]})")
    print("\nevery cut point:")
    table(per_curve)
    print(f"\ncut points at {early} labels or fewer (the curve still rising):")
    table([{h: [x for x in r[h] if x["at"] <= early] for h in r} for r in per_curve])
    print()
    for strategy in sorted({c["strategy"] for c in curves}):
        mine = [r for r, c in zip(per_curve, curves) if c["strategy"] == strategy]
        line = []
        for h in AHEAD:
            errors = [np.mean([x["error"] for x in r[h]]) for r in mine if r[h]]
            if errors:
                mae, se = mean_se(errors)
                line.append(f"+{h}: MAE {mae:.3f} ± {se:.3f}")
        print(f"  {strategy}: {'; '.join(line)}")


def table(per_curve: list[dict[int, list[dict]]]) -> None:
    print("horizon | cut points | curves | MAE forecast (±SE) | MAE naive (±SE) | mean 90% width | "
          "90% coverage (±SE) | 95% coverage (±SE)")
    for h in AHEAD:
        rows = [r for r in per_curve if r[h]]
        if not rows:
            print(f"+{h} | 0 | 0 | curves too short for this horizon")
            continue
        cells = [mean_se([np.mean([x[key] for x in r[h]]) for r in rows])
                 for key in ("error", "naive", "width90", "in90", "in95")]
        n = sum(len(r[h]) for r in rows)
        (mae, mae_se), (naive, naive_se), (width, _), (c90, c90_se), (c95, c95_se) = cells
        pooled90 = np.mean([x["in90"] for r in rows for x in r[h]])
        pooled95 = np.mean([x["in95"] for r in rows for x in r[h]])
        print(f"+{h} | {n} | {len(rows)} | {mae:.3f} ± {mae_se:.3f} | {naive:.3f} ± {naive_se:.3f} | {width:.3f} | "
              f"{pooled90:.2f} (per curve {c90:.2f} ± {c90_se:.2f}) | {pooled95:.2f} (per curve {c95:.2f} ± {c95_se:.2f})")


def stopping_run(strategy: str, seed: int, batch: int, max_labels: int, eval_size: int) -> dict:
    """One project of the digits demo labeled by an oracle (gold labels) round by round, as people label: the
    labels, accuracy and changed share of pool predictions (app.read_models.prediction_changes) of each round."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), db_url=f"sqlite:///{tmp}/wb.sqlite")
        wb = Workbench(settings)
        pid = wb.create_project(ProjectConfig(name="digits", strategy=strategy, round_size=batch, eval_size=eval_size,
                                              pick_ahead=0, seed=seed), "demo")
        worker = Worker(settings, device="cpu", quiet=True)
        with wb.db.read() as s:
            gold = dict(s.execute(select(Item.id, Item.gold).where(Item.project_id == pid)).all())
        while True:
            while worker.run_once():
                pass
            points = wb.chart_data(pid)
            if points and points[-1].labels >= max_labels:
                break
            while (task := wb.next_assignment(pid, "oracle")) is not None:
                wb.submit(pid, task.entry_id, "oracle", list(gold[task.item_id]))
        changes = {c.round: c.changed for c in read_models.prediction_changes(wb.db, pid, rounds=len(points))}
        wb.db.dispose()
    return {"strategy": strategy, "seed": seed, "labels": [p.labels for p in points],
            "accuracy": [p.accuracy for p in points], "changed": [changes.get(p.round) for p in points]}


def stopping_report(runs: list[dict]) -> None:
    """Where the stabilising-predictions hint first fires on each run, and what labeling on to the end gained."""
    print(f"\nstopping hint (changed share < {STABLE_SHARE:.0%} for {STABLE_ROUNDS} rounds), {len(runs)} runs of "
          f"{runs[0]['labels'][-1]} labels, eval n as the project's:")
    fired, gains, at = [], [], []
    for run in runs:
        shares = [c for c in run["changed"] if c is not None]
        known = [i for i, c in enumerate(run["changed"]) if c is not None]
        first = next((known[j] for j in range(len(shares)) if predictions_stable(shares[:j + 1])), None)
        line = ", ".join(f"{n}:{c:.1%}" for n, c in zip(run["labels"], run["changed"]) if c is not None)
        verdict = ("never fired" if first is None else f"fired at {run['labels'][first]} labels, accuracy "
                   f"{run['accuracy'][first]:.3f} then, {run['accuracy'][-1]:.3f} at the end")
        print(f"  {run['strategy']} seed {run['seed']}: {verdict}; changed share by labels {line}")
        fired.append(first is not None)
        if first is not None:
            at.append(run["labels"][first])
            gains.append(run["accuracy"][-1] - run["accuracy"][first])
    print(f"  fired on {sum(fired)} of {len(runs)} runs")
    if at:
        labels, labels_se = mean_se(at)
        gain, gain_se = mean_se(gains)
        print(f"  first fired at {labels:.0f} ± {labels_se:.0f} labels (mean ± SE over the runs where it fired); "
              f"accuracy gained by labeling on to {runs[0]['labels'][-1]}: {gain:+.3f} ± {gain_se:.3f} "
              f"(max {max(gains):+.3f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--strategies", default="random,margin")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--max-labels", type=int, default=1400)
    parser.add_argument("--holdout", type=int, default=300)
    parser.add_argument("--save", type=Path, help="write the simulated curves here (JSON)")
    parser.add_argument("--curves", type=Path, help="read curves saved by --save instead of simulating")
    parser.add_argument("--stopping-seeds", type=int, default=0,
                        help="also label this many projects per strategy round by round to test the stopping hint")
    parser.add_argument("--stopping", type=Path, help="read stopping runs saved by --save-stopping")
    parser.add_argument("--save-stopping", type=Path, help="write the stopping runs here (JSON)")
    parser.add_argument("--early", type=int, default=300, help="also report the cut points at this many labels or fewer")
    args = parser.parse_args()
    started = time.time()
    if args.curves:
        curves = json.loads(args.curves.read_text())
    else:
        curves = simulate(args.strategies.split(","), list(range(args.seeds)), args.batch, args.max_labels,
                          args.holdout)
        print(f"simulated {len(curves)} curves in {time.time() - started:.0f} s")
        if args.save:
            args.save.write_text(json.dumps(curves))
    report(curves, args.early)
    if args.stopping:
        stopping_report(json.loads(args.stopping.read_text()))
    elif args.stopping_seeds:
        runs = [stopping_run(strategy, seed, args.batch, args.max_labels, args.holdout)
                for strategy in args.strategies.split(",") for seed in range(args.stopping_seeds)]
        if args.save_stopping:
            args.save_stopping.write_text(json.dumps(runs))
        stopping_report(runs)
    print(f"\ntotal {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
