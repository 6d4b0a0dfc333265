"""TAILOR against the single algorithms it chooses among, on the bundled digits, through the workbench's own
simulation (the human loop with an oracle answering).

Two pools (`--data`):
- `digits`: the whole bundled digits (balanced), 400 items held out for evaluation, the rest the pool (the
  protocol of benchmarks/bench_simulation.py);
- `imbalanced`: a long tail: class k keeps round(160 * 0.75^k) of its digits in the pool (160, 120, ..., 12: the
  rarest class is 2% of the pool); the evaluation set is balanced (15 per class, never selected or trained on).
Every strategy runs the same loop: a random seed round, then rounds chosen by the strategy. TAILOR runs twice:
`tailor` learns from each answer (update="answer", the default: it picks a couple of items ahead of the oracle,
each from all answers so far) and `tailor-round` is the paper's batch rule (update="round").

Printed per strategy, mean ± standard error over seeds: final accuracy and balanced accuracy, accuracy at the
`--at` label counts, labels to reach random's final accuracy (per seed, against random's mean final; "never" counts
the seeds that never reach it), the label saving against random (mean curves), and how balanced the labeled set
is (normalised entropy of its class counts, 1 = perfectly balanced; the rarest class's count; max/min count).
Then TAILOR's pulls per arm family and round.

Run: .venv/bin/python benchmarks/bench_tailor.py --data digits|imbalanced [--seeds 5] [--round-size 20]
     [--rounds R] [--strategies random,margin,...,tailor,tailor-round] [--arms galaxy*,margin] [--at 100,200]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.settings import Settings  # noqa: E402
from app.simulation import SimulationConfig, run_simulation  # noqa: E402
from app.workbench import ProjectConfig, Workbench  # noqa: E402
from app.worker import Worker, job_runner  # noqa: E402
from learners.efficiency import final_points, label_savings, labels_to_reach, mean_and_se  # noqa: E402
from storage.demo import DEMO_CLASSES, write_demo  # noqa: E402

DEFAULT_ROUNDS = {"digits": 14, "imbalanced": 10}  # digits: 20 + 14 x 20 = 300 labels, as bench_simulation.py


def write_imbalanced_manifest(folder: Path, eval_per_class: int = 15, head: int = 160, ratio: float = 0.75) -> Path:
    root = write_demo(folder / "digits")
    rng = np.random.default_rng(0)
    rows = []
    for k, name in enumerate(DEMO_CLASSES):
        files = sorted((root / name).glob("*.png"))
        files = [files[i] for i in rng.permutation(len(files))]
        keep = round(head * ratio**k)
        rows += [(f"digits/{name}/{f.name}", name, "eval") for f in files[:eval_per_class]]
        rows += [(f"digits/{name}/{f.name}", name, "pool") for f in files[eval_per_class:eval_per_class + keep]]
    manifest = folder / "imbalanced.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return manifest


def balance(counts: list[int]) -> tuple[float, int, float]:
    c = np.asarray(counts, float)
    p = c[c > 0] / c.sum()
    entropy = float(-(p * np.log(p)).sum() / np.log(len(c)))
    return entropy, int(c.min()), float(c.max() / max(c.min(), 1))


def mean_se(values: list[float], digits: int = 3) -> str:
    a = np.asarray(values, float)
    se = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0
    return f"{a.mean():.{digits}f} ± {se:.{digits}f}"


def curves_of(result: dict, strategy: str, metric: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (labels, values) curve per seed."""
    out = []
    for seed in sorted({p["seed"] for p in result["points"] if p["strategy"] == strategy}):
        pts = sorted((p for p in result["points"] if p["strategy"] == strategy and p["seed"] == seed),
                     key=lambda p: p["labels"])
        out.append((np.array([p["labels"] for p in pts], float), np.array([p[metric] for p in pts], float)))
    return out


def report(result: dict, strategies: list[str], at: list[int]) -> None:
    random_mean = mean_and_se(curves_of(result, "random", "accuracy")) if "random" in strategies else None
    target = float(random_mean[1][-1]) if random_mean is not None else None
    print("\n| strategy | final acc | final bal. acc | " + " | ".join(f"acc @{n}" for n in at)
          + " | labels to random's final | saving vs random | labeled-set entropy | rarest class | max/min |")
    print("|---" * (8 + len(at)) + "|")
    for strategy in strategies:
        finals = final_points(result, strategy)
        curves = curves_of(result, strategy, "accuracy")
        shape = np.array([balance(p["labels_per_class"]) for p in finals])
        cells = [mean_se([p["accuracy"] for p in finals]), mean_se([p["balanced_accuracy"] for p in finals])]
        for n in at:
            cells.append(mean_se([float(np.interp(n, labels, values)) for labels, values in curves]))
        if target is None:
            cells += ["", ""]
        else:
            reach = [labels_to_reach(labels, values, target) for labels, values in curves]
            reached = [r for r in reach if r is not None]
            missing = len(reach) - len(reached)
            cells.append((mean_se(reached, 0) if reached else "never")
                         + (f" ({missing} never)" if missing else ""))
            labels, mean, _ = mean_and_se(curves)
            saving = label_savings((labels, mean), (random_mean[0], random_mean[1]))
            cells.append("n/a" if saving is None else f"{saving:.0%}")
        cells += [mean_se(shape[:, 0]), mean_se(shape[:, 1], 1), mean_se(shape[:, 2], 2)]
        print(f"| {strategy} | " + " | ".join(cells) + " |")


def report_pulls(result: dict, strategy: str) -> None:
    families: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for p in result["points"]:
        if p["strategy"] == strategy:
            for arm, n in p["arms"].items():
                families[p["round"]][arm.split(":")[0]] += n
    names = sorted({f for r in families.values() for f in r})
    print(f"\n{strategy}: pulls per arm family (summed over seeds), per round:")
    print("| round | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for r in sorted(families):
        print(f"| {r} | " + " | ".join(str(families[r].get(n, 0)) for n in names) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=("digits", "imbalanced"), default="imbalanced")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--round-size", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=None, help="rounds after the seed round (default: digits "
                                                                  "14, imbalanced 10)")
    parser.add_argument("--strategies", default="random,margin,confidence,badge,galaxy,coreset,tailor,tailor-round")
    parser.add_argument("--arms", default=None, help="TAILOR's arms, comma-separated (default: the paper's set)")
    parser.add_argument("--at", default="100,200", help="label counts to report the accuracy at")
    parser.add_argument("--out", default=None, help="write the raw result JSON here")
    args = parser.parse_args()
    rounds = args.rounds if args.rounds is not None else DEFAULT_ROUNDS[args.data]
    strategies = args.strategies.split(",")
    arms = {"arms": args.arms.split(",")} if args.arms else {}
    variants = {"tailor": {"strategy": "tailor", "params": {**arms, "update": "answer"}},
                "tailor-round": {"strategy": "tailor", "params": {**arms, "update": "round"}}}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(home=home, db_url=f"sqlite:///{home / 'wb.sqlite'}", lease_seconds=300)
        wb = Workbench(settings)
        if args.data == "digits":
            pid = wb.create_project(ProjectConfig(name="digits", strategy="tailor", eval_size=400), "demo")
        else:
            pid = wb.create_project(ProjectConfig(name="imbalanced digits", strategy="tailor", eval_size=10),
                                    write_imbalanced_manifest(home))
        worker = Worker(settings, device="cpu", quiet=True)
        while worker.run_once():  # embed (and the first select)
            pass
        config = SimulationConfig(strategies=strategies, seeds=list(range(args.seeds)), round_size=args.round_size,
                                  rounds=rounds, variants=variants)
        started = time.time()
        last = [started]

        def progress(fraction: float, message: str) -> None:
            if time.time() - last[0] > 60:
                last[0] = time.time()
                print(f"  {fraction:.0%} {message}", file=sys.stderr, flush=True)

        result = run_simulation(settings, pid, config, job_runner("cpu"), progress=progress)
        elapsed = time.time() - started
        wb.db.dispose()
    if args.out:
        Path(args.out).write_text(json.dumps(result, default=str))
    pool = ("pool counts " + str([round(160 * 0.75**k) for k in range(10)]) + ", eval 15 per class"
            if args.data == "imbalanced" else "1397 pool items, 400 held out")
    print(f"{args.data}: {pool}; {args.seeds} seeds, seed round {args.round_size}, {rounds} rounds of "
          f"{args.round_size}; TAILOR arms: {args.arms or 'default'}; {elapsed:.0f} s")
    report(result, strategies, [int(n) for n in args.at.split(",") if n])
    for strategy in ("tailor", "tailor-round"):
        if strategy in strategies:
            report_pulls(result, strategy)


if __name__ == "__main__":
    main()
