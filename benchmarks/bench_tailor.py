"""TAILOR on an imbalanced pool made from the bundled digits, through the workbench's own simulation.

The pool is a long tail: class k keeps round(160 * 0.75^k) of its digits (160, 120, ..., 12: the rarest class is
2% of the pool); the evaluation set is balanced (15 per class, held out, never selected or trained on). Every
strategy runs the same loop: a random seed round, then rounds chosen by the strategy, an oracle answering.

Printed per strategy (mean over seeds): final balanced accuracy and accuracy with their standard errors, the area
under the balanced-accuracy curve, and how balanced the labeled set is (normalised entropy of its class counts,
1 = perfectly balanced; the rarest class's count; max/min count). Then TAILOR's pulls per arm family and round.

Run: .venv/bin/python benchmarks/bench_tailor.py [--seeds 4] [--round-size 10] [--rounds 10]
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
from learners.efficiency import final_points, summarize  # noqa: E402
from storage.demo import DEMO_CLASSES, write_demo  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--round-size", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--strategies", default="random,confidence,margin,badge,galaxy,coreset,tailor")
    parser.add_argument("--arms", default=None, help="TAILOR's arms, comma-separated (default: the paper's set)")
    parser.add_argument("--out", default=None, help="write the raw result JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(home=home, db_url=f"sqlite:///{home / 'wb.sqlite'}", lease_seconds=300)
        wb = Workbench(settings)
        manifest = write_imbalanced_manifest(home)
        params = {"arms": args.arms.split(",")} if args.arms else {}
        pid = wb.create_project(ProjectConfig(name="imbalanced digits", strategy="tailor", strategy_params=params, eval_size=10),
                                manifest)
        worker = Worker(settings, device="cpu", quiet=True)
        while worker.run_once():  # embed (and the first select)
            pass
        config = SimulationConfig(strategies=args.strategies.split(","), seeds=list(range(args.seeds)),
                                  round_size=args.round_size, rounds=args.rounds)
        started = time.time()
        result = run_simulation(settings, pid, config, job_runner("cpu"))
        elapsed = time.time() - started
        wb.db.dispose()
    if args.out:
        Path(args.out).write_text(json.dumps(result, default=str))
    print(f"imbalanced digits: pool counts {[round(160 * 0.75**k) for k in range(10)]}, eval 15 per class; "
          f"{args.seeds} seeds, seed round {args.round_size}, {args.rounds} rounds of {args.round_size}; "
          f"TAILOR arms: {args.arms or 'default'}; {elapsed:.0f} s")
    summaries = {metric: summarize(result, metric) for metric in ("balanced_accuracy", "accuracy")}
    auc = {row["strategy"]: row["auc"] for row in summaries["balanced_accuracy"]["table"]}
    print("\n| strategy | final balanced acc | final acc | AUC (bal. acc) | labeled-set entropy | rarest class | max/min |")
    print("|---|---|---|---|---|---|---|")
    for strategy in config.strategies:
        finals = final_points(result, strategy)
        bal = np.array([p["balanced_accuracy"] for p in finals])
        acc = np.array([p["accuracy"] for p in finals])
        shape = np.array([balance(p["labels_per_class"]) for p in finals])
        se = lambda a: a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0  # noqa: E731
        print(f"| {strategy} | {bal.mean():.3f} ± {se(bal):.3f} | {acc.mean():.3f} ± {se(acc):.3f} | {auc[strategy]:.3f} "
              f"| {shape[:, 0].mean():.3f} | {shape[:, 1].mean():.1f} | {shape[:, 2].mean():.1f} |")
    if "tailor" in config.strategies:
        families: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for p in result["points"]:
            if p["strategy"] == "tailor":
                for arm, n in p["arms"].items():
                    families[p["round"]][arm.split(":")[0]] += n
        names = sorted({f for r in families.values() for f in r})
        print("\nTAILOR pulls per arm family (summed over seeds), per round:")
        print("| round | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        for r in sorted(families):
            print(f"| {r} | " + " | ".join(str(families[r].get(n, 0)) for n in names) + " |")
    print("\nbalanced-accuracy curves (mean over seeds):")
    for name, curve in summaries["balanced_accuracy"]["curves"].items():
        print(f"  {name:12s} " + " ".join(f"{x:.0f}:{m:.3f}" for x, m in zip(curve["labels"], curve["mean"])))


if __name__ == "__main__":
    main()
