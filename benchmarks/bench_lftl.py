"""LFTL under a domain shift made from the bundled digits, through the workbench's own projects and simulation.

Source: the digits as they are, every pool item labeled (by an oracle, through the verbs), a `bottleneck` head
trained and exported as a head file. Target: the same digits rotated by 30 degrees and blurred, imported as a new
project that starts from the source head (LFTL's source-free setting: the source data is not used again).
On the target, through `app.simulation` (a seed round chosen by the source head, then rounds of B), compare:

- lftl + lftl_vpa   (contrastive sampling, visual-persistence adaptation, warm-started from the source head)
- margin + none     (margin sampling, a supervised head trained from scratch each round)
- random + none
- and the two halves: lftl + none, margin + lftl_vpa

Printed: the source head's accuracy on the source and the shifted eval sets, then per variant the accuracy per
label spent and the area under the curve (both mean ± standard error over seeds).

Run: .venv/bin/python benchmarks/bench_lftl.py [--seeds 3] [--round-size 10] [--rounds 8]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.settings import Settings  # noqa: E402
from app.simulation import SimulationConfig, run_simulation  # noqa: E402
from app.workbench import ProjectConfig, Workbench  # noqa: E402
from app.worker import Worker, job_runner  # noqa: E402
from learners.efficiency import auc, summarize  # noqa: E402
from storage.demo import DEMO_CLASSES, write_demo  # noqa: E402
from storage.models import Item  # noqa: E402

HEAD = {"kind": "bottleneck"}


def write_shifted(source: Path, dest: Path, angle: float, blur: float) -> Path:
    for name in DEMO_CLASSES:
        (dest / name).mkdir(parents=True, exist_ok=True)
        for path in sorted((source / name).glob("*.png")):
            image = Image.open(path).rotate(angle, resample=Image.BILINEAR).filter(ImageFilter.GaussianBlur(blur))
            image.save(dest / name / path.name)
    return dest


def drain(worker: Worker) -> None:
    while worker.run_once():
        pass


def label_everything(wb: Workbench, pid: int) -> None:
    with wb.db.read() as s:
        gold = {i.id: i.gold for i in s.scalars(select(Item).where(Item.project_id == pid))}
    while (task := wb.next_assignment(pid, "oracle")) is not None:
        wb.submit(pid, task.entry_id, "oracle", gold[task.item_id])


def auc_per_seed(result: dict, strategy: str) -> np.ndarray:
    """The area under each seed's own accuracy curve (learners.efficiency.auc), for a standard error over seeds."""
    points = [p for p in result["points"] if p["strategy"] == strategy]
    areas = []
    for seed in sorted({p["seed"] for p in points}):
        curve = sorted((p["labels"], p["accuracy"]) for p in points if p["seed"] == seed)
        areas.append(auc(*map(np.array, zip(*curve))))
    return np.array(areas)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--round-size", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--angle", type=float, default=30.0)
    parser.add_argument("--blur", type=float, default=1.0)
    parser.add_argument("--variants", default="lftl+lftl_vpa,margin+none,random+none,lftl+none,margin+lftl_vpa")
    parser.add_argument("--vpa-lr", type=float, default=None, help="lftl_vpa's SGD learning rate (default: the spec's 1e-3)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(home=home, db_url=f"sqlite:///{home / 'wb.sqlite'}", lease_seconds=300)
        wb = Workbench(settings)
        worker = Worker(settings, device="cpu", quiet=True)
        digits = write_demo(home / "digits")
        shifted = write_shifted(digits, home / "shifted", args.angle, args.blur)
        ssl = {"method": "lftl_vpa", **({"vpa_lr": args.vpa_lr} if args.vpa_lr else {})}
        started = time.time()
        # The source model: all 1497 pool digits labeled, 300 held out to measure it.
        source = wb.create_project(ProjectConfig(name="source", head=HEAD, round_size=1497, eval_size=300), digits)
        drain(worker)
        label_everything(wb, source)
        drain(worker)
        source_acc = wb.chart_data(source)[0].accuracy
        name, data = wb.export(source, "head")
        head_file = home / name
        head_file.write_bytes(data)
        target = wb.create_project(
            ProjectConfig(name="target", head=HEAD, strategy="lftl", training={"ssl": ssl},
                          round_size=args.round_size, eval_size=300, source_head=str(head_file)), shifted)
        drain(worker)  # embeds the target, computes the source head's predictions, chooses round 0
        predictions, ids = wb.predictions(target)
        with wb.db.read() as s:
            gold = {i.id: (i.gold[0], i.split) for i in s.scalars(select(Item).where(Item.project_id == target))}
        eval_rows = [r for r, i in enumerate(ids) if gold[int(i)][1] == "eval"]
        truth = np.array([gold[int(ids[r])][0] for r in eval_rows])
        source_on_target = float((predictions[eval_rows].argmax(1) == truth).mean())
        config = SimulationConfig(strategies=args.variants.split(","), seeds=list(range(args.seeds)),
                                  round_size=args.round_size, rounds=args.rounds)
        result = run_simulation(settings, target, config, job_runner("cpu"))
        elapsed = time.time() - started
        wb.db.dispose()
    if args.out:
        Path(args.out).write_text(json.dumps(result, default=str))
    print(f"source head (bottleneck, 1497 labels) on source eval: {source_acc:.3f}; on the shifted eval set "
          f"(rotated {args.angle:.0f} deg, blur {args.blur}): {source_on_target:.3f}")
    print(f"{args.seeds} seeds, seed round {args.round_size} (chosen by the source head), {args.rounds} rounds of "
          f"{args.round_size}; lftl_vpa lr {args.vpa_lr or '1e-3 (spec default)'}; {elapsed:.0f} s")
    summary = summarize(result, "accuracy")
    curves = summary["curves"]
    labels = curves[config.strategies[0]]["labels"]
    print("\n| variant | " + " | ".join(f"{x:.0f} labels" for x in labels) + " | AUC |")
    print("|---" * (len(labels) + 2) + "|")
    for name, curve in curves.items():
        cells = " | ".join(f"{m:.3f} ± {e:.3f}" for m, e in zip(curve["mean"], curve["se"]))
        areas = auc_per_seed(result, name)
        se = areas.std(ddof=1) / np.sqrt(len(areas)) if len(areas) > 1 else 0.0
        print(f"| {name} | {cells} | {areas.mean():.3f} ± {se:.3f} |")


if __name__ == "__main__":
    main()
