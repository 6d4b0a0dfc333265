"""Multi-label label efficiency on the tag demo (the digits tagged "even", "greater than 4", "prime", "has a loop";
a 1 has none of them), through the workbench's own simulation: a random seed round, then rounds chosen by each
strategy, an oracle answering with the gold tag sets, the eval set (300 items) never trained on or selected.

Printed: mAP per label spent (mean ± standard error over seeds), the area under the mAP curve, final micro/macro F1
and, for TAILOR, the pulls per arm family.

Run: .venv/bin/python benchmarks/bench_multilabel_simulation.py [--seeds 3] [--round-size 20] [--rounds 8]
"""
from __future__ import annotations

import argparse
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

VARIANTS = {"tailor-pos": {"strategy": "tailor", "params": {"reward": "pos"}}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--round-size", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--strategies", default="random,tailor,tailor-pos,confidence,entropy,badge,galaxy")
    parser.add_argument("--head", default="linear")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(home=home, db_url=f"sqlite:///{home / 'wb.sqlite'}", lease_seconds=300)
        wb = Workbench(settings)
        pid = wb.create_project(ProjectConfig(name="digit tags", task="multi_label", strategy="tailor",
                                              head={"kind": args.head}, eval_size=300), "demo-tags")
        worker = Worker(settings, device="cpu", quiet=True)
        while worker.run_once():
            pass
        config = SimulationConfig(strategies=args.strategies.split(","), seeds=list(range(args.seeds)),
                                  round_size=args.round_size, rounds=args.rounds, variants=VARIANTS)
        started = time.time()
        result = run_simulation(settings, pid, config, job_runner("cpu"))
        elapsed = time.time() - started
        wb.db.dispose()
    if args.out:
        Path(args.out).write_text(json.dumps(result, default=str))
    print(f"tag demo (4 tags, 1497 pool items, 300 eval), {args.head} head with sigmoids; {args.seeds} seeds, "
          f"seed round {args.round_size}, {args.rounds} rounds of {args.round_size}; {elapsed:.0f} s")
    summary = summarize(result, "mAP")
    curves = summary["curves"]
    labels = curves[config.strategies[0]]["labels"]
    auc = {row["strategy"]: row["auc"] for row in summary["table"]}
    print("\n| strategy | " + " | ".join(f"{x:.0f}" for x in labels) + " labels | AUC | final micro F1 | final macro F1 |")
    print("|---" * (len(labels) + 4) + "|")
    for name, curve in curves.items():
        finals = final_points(result, name)
        micro = np.mean([p["micro_f1"] for p in finals])
        macro = np.mean([p["macro_f1"] for p in finals])
        cells = " | ".join(f"{m:.3f} ± {e:.3f}" for m, e in zip(curve["mean"], curve["se"]))
        print(f"| {name} | {cells} | {auc[name]:.3f} | {micro:.3f} | {macro:.3f} |")
    for name in config.strategies:
        if not name.startswith("tailor"):
            continue
        families: dict[str, int] = defaultdict(int)
        for p in result["points"]:
            if p["strategy"] == name:
                for arm, n in p["arms"].items():
                    families[arm.split(":")[0]] += n
        print(f"\n{name} pulls per arm family (all rounds and seeds): "
              + ", ".join(f"{k} {v}" for k, v in sorted(families.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
