"""Label submit -> next item latency through the workbench's own verbs, on a 100k-item pool in SQLite.

Run: .venv/bin/python benchmarks/bench_labeling.py [--items 100000] [--labels 500]
Goal (issue 2): p95 < 50 ms.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.settings import Settings  # noqa: E402
from app.workbench import Workbench  # noqa: E402
from storage.files import project_dir, save_matrix  # noqa: E402
from storage.models import Item, Project, QueueEntry, Round  # noqa: E402


def build(wb: Workbench, n_items: int, queue_len: int) -> int:
    with wb.db.write() as s:
        project = Project(
            name="bench", classes=[str(i) for i in range(10)], data_root="/bench", backbone={"name": "pixels"},
            head={"kind": "linear"}, training={}, strategy="margin", strategy_params={},
        )
        s.add(project)
        s.flush()
        rows = [{"project_id": project.id, "key": f"img/{i:06d}.png", "content_hash": f"{i:064x}", "split": "pool"} for i in range(n_items)]
        s.execute(insert(Item), rows)
        ids = np.array(s.scalars(select(Item.id).where(Item.project_id == project.id).order_by(Item.id)).all())
        round_ = Round(project_id=project.id, index=1, strategy="margin", strategy_params={}, state="labeling")
        s.add(round_)
        s.flush()
        picks = np.random.default_rng(0).choice(ids, queue_len, replace=False)
        s.execute(insert(QueueEntry), [{"round_id": round_.id, "item_id": int(i), "position": p, "arm": "margin", "state": "pending"} for p, i in enumerate(picks)])
        probs = np.random.default_rng(1).dirichlet(np.ones(10), n_items).astype(np.float32)
        save_matrix(s, project_dir(wb.settings.home, project.id) / "predictions.npy", project_id=project.id, kind="predictions", matrix=probs, item_ids=ids)
        return project.id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--labels", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), db_url=f"sqlite:///{tmp}/bench.sqlite")
        wb = Workbench(settings)
        t = time.perf_counter()
        pid = build(wb, args.items, args.labels + 10)
        print(f"built a pool of {args.items} items in {time.perf_counter() - t:.1f} s")
        task = wb.next_assignment(pid, "bench")
        times = []
        for i in range(args.labels):
            t0 = time.perf_counter()
            wb.submit(pid, task.entry_id, "bench", [i % 10], seconds=1.0)
            task = wb.next_assignment(pid, "bench")
            times.append(time.perf_counter() - t0)
        ms = np.array(times) * 1000
        print(f"label submit -> next item over {args.labels} labels on a {args.items}-item pool (SQLite, WAL):")
        print(f"  p50 {np.percentile(ms, 50):.1f} ms   p95 {np.percentile(ms, 95):.1f} ms   max {ms.max():.1f} ms   (goal p95 < 50 ms)")


if __name__ == "__main__":
    main()
