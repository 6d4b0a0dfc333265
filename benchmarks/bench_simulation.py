"""Label savings against random on the bundled digits, through the workbench's own simulation (the human loop with
an oracle), beside a plain scikit-learn baseline run in the same script.

Protocol (issue 4): `pixels` features, 400 items held out for evaluation, a random seed round of 20, rounds of 20 up
to 300 labels, several seeds. Baseline: LogisticRegression on standardized 8x8 pixels, top-20 margin picks.

Run: .venv/bin/python benchmarks/bench_simulation.py [--seeds 5] [--strategies random,margin,...] [--max-labels 300]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.settings import Settings  # noqa: E402
from app.simulation import SimulationConfig, run_simulation  # noqa: E402
from app.workbench import ProjectConfig, Workbench  # noqa: E402
from app.worker import Worker, job_runner  # noqa: E402
from learners.efficiency import label_savings, mean_and_se, summarize  # noqa: E402


def sklearn_baseline(seeds: list[int], batch: int, max_labels: int, eval_size: int = 400) -> dict[str, tuple]:
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
    return {rule: mean_and_se(runs) for rule, runs in curves.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--strategies", default="random,margin,entropy,confidence,coreset,badge,galaxy")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--max-labels", type=int, default=300)
    parser.add_argument("--head", default='{"kind": "linear"}', help="head settings (JSON)")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    rounds = args.max_labels // args.batch - 1
    started = time.time()
    base = sklearn_baseline(seeds, args.batch, args.max_labels)
    base_savings = label_savings(base["margin"][:2], base["random"][:2])
    print(f"sklearn LogisticRegression, top-{args.batch} margin: savings vs random {base_savings:.1%} "
          f"(final acc margin {base['margin'][1][-1]:.3f}, random {base['random'][1][-1]:.3f}; {time.time() - started:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), db_url=f"sqlite:///{tmp}/wb.sqlite")
        wb = Workbench(settings)
        pid = wb.create_project(ProjectConfig(name="digits", eval_size=400), "demo")
        worker = Worker(settings, device="cpu", quiet=True)
        while worker.run_once():
            pass
        config = SimulationConfig(strategies=args.strategies.split(","), seeds=seeds, round_size=args.batch, rounds=rounds,
                                  head=json.loads(args.head))
        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            if time.time() - last[0] > 30:
                last[0] = time.time()
                print(f"  {fraction:.0%} {message}", flush=True)

        result = run_simulation(settings, pid, config, job_runner("cpu"), progress=progress)
    for metric in ("accuracy", "balanced_accuracy"):
        summary = summarize(result, metric)
        print(f"\nworkbench ({metric}), pixels + head {args.head}, {len(seeds)} seeds, {args.batch} per round to {args.max_labels} labels:")
        print(f"  {'strategy':<12} {'final':>7} {'AUC':>7} {'labels to random final':>23} {'savings vs random':>18}")
        for row in summary["table"]:
            reach = row.get("labels_to_reach_random_final")
            saving = row.get("label_savings_vs_random")
            print(f"  {row['strategy']:<12} {row['final']:>7.3f} {row['auc']:>7.3f} "
                  f"{'never' if reach is None else f'{reach:.0f}':>23} {'n/a' if saving is None else f'{saving:.1%}':>18}")
    print(f"\ntotal {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
