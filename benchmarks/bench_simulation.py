"""Label savings against random on the bundled digits, through the workbench's own simulation (the human loop with
an oracle), beside a plain scikit-learn baseline run in the same script.

Protocol (issues 4 and 14): `pixels` features, a held-out gold split for evaluation (app.simulation.holdout_size:
500 of the 1797 digits by default, never in the pool), a random seed round of 20, rounds of 20 up to 300 labels,
several seeds; each strategy's final accuracy ± standard error over seeds and its label saving against random with
a 95% bootstrap interval over seeds. Baseline: LogisticRegression on standardized 8x8 pixels, top-20 margin picks,
held-out split of the same size.

Run: .venv/bin/python benchmarks/bench_simulation.py [--seeds 5] [--strategies random,margin,...] [--max-labels 300]
     [--holdout N]
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
from app.simulation import SimulationConfig, holdout_size, report_lines, run_simulation  # noqa: E402
from app.workbench import ProjectConfig, Workbench  # noqa: E402
from app.worker import Worker, job_runner  # noqa: E402
from learners.efficiency import label_savings, mean_and_se, savings_interval  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--strategies", default="random,margin,entropy,confidence,coreset,badge,galaxy")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--max-labels", type=int, default=300)
    parser.add_argument("--head", default='{"kind": "linear"}', help="head settings (JSON)")
    parser.add_argument("--holdout", type=int, default=None, help="held-out gold items (default: holdout_size's rule)")
    args = parser.parse_args()
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
