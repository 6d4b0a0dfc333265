"""The wait at a round boundary: from the last label of a round to the next item being claimable through the verbs
(Workbench.next_assignment), on the demo, with a real model worker process (`python -m app worker`), with and
without picking ahead (project setting pick_ahead; app.rounds).

A scripted annotator labels from the gold labels at a steady pace (--pace seconds per label) and asks for the next
item every --poll seconds while none is there. Printed per setting: the boundary waits (median, max, n), every other
wait longer than one poll inside a round (a round opened ahead whose own selection is late), and, from the jobs
table, where the time goes without picking ahead (the worker noticing the train job, training, noticing the select
job, selecting). The machine load is printed beside the figures.

Run: .venv/bin/python benchmarks/bench_round_boundary.py [--rounds 6] [--pace 0.3]
Goal (issue 12, part 2): the next item within 0.5 s of a round's last label on the demo.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.settings import Settings  # noqa: E402
from app.workbench import ProjectConfig, Workbench  # noqa: E402
from storage.models import Item, Job  # noqa: E402

ANNOTATOR = "bench"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def wait_for(wb: Workbench, pid: int, poll: float, timeout: float = 120.0):
    """The next assignment and how long it took to appear."""
    started = time.perf_counter()
    while (task := wb.next_assignment(pid, ANNOTATOR)) is None:
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"no item after {timeout:.0f} s: {wb.status(pid)}")
        time.sleep(poll)
    return task, time.perf_counter() - started


def run(pick_ahead: int, rounds: int, pace: float, poll: float, round_size: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="bench-boundary-"))
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'wb.sqlite'}")
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": settings.db_url, "OMP_NUM_THREADS": "1"}
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Demo digits", round_size=round_size, eval_size=10,
                                          pick_ahead=pick_ahead), "demo")
    with wb.db.read() as s:
        gold = {i.id: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == pid))}
    log = open(home / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "app", "worker", "--device", "cpu"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    boundary, inside = [], []
    try:
        task, _ = wait_for(wb, pid, poll, timeout=300)  # the embedding and round 0's selection
        while True:
            time.sleep(pace)
            wb.submit(pid, task.entry_id, ANNOTATOR, [gold[task.item_id]], seconds=pace)
            last_round = task.round_index
            if last_round >= rounds and wb.rounds(pid)[last_round].state != "labeling":
                break
            task, waited = wait_for(wb, pid, poll)
            if task.round_index != last_round:
                boundary.append(waited)
            elif waited > poll:
                inside.append(waited)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    with wb.db.read() as s:
        jobs = list(s.scalars(select(Job).where(Job.project_id == pid, Job.kind.in_(("train", "select")))
                              .order_by(Job.id)))
    phases: dict[str, list[float]] = {"train: noticed": [], "train: ran": [], "select: noticed": [], "select: ran": []}
    for job in [j for j in jobs[1:] if j.finished_at is not None]:  # round 0's selection ran with the embedding
        phases[f"{job.kind}: noticed"].append((job.started_at - job.created_at).total_seconds())
        phases[f"{job.kind}: ran"].append((job.finished_at - job.started_at).total_seconds())
    table = wb.round_table(pid)
    wb.db.dispose()
    return {"boundary": boundary, "inside": inside, "phases": phases, "rounds": table}


def summary(values: list[float]) -> str:
    if not values:
        return "n=0"
    return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms, n={len(values)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="round boundaries to cross per setting")
    parser.add_argument("--pace", type=float, default=0.3, help="seconds the scripted annotator takes per label")
    parser.add_argument("--poll", type=float, default=0.01, help="seconds between asks while no item is there")
    parser.add_argument("--round-size", type=int, default=10)
    parser.add_argument("--pick-ahead", type=int, nargs="+", default=[0, 5])
    args = parser.parse_args()
    print(f"demo digits, rounds of {args.round_size} (+10 eval items in round 0), a label every {args.pace} s, "
          f"asks every {args.poll * 1000:.0f} ms while waiting; one worker process on the CPU")
    print(f"before: {load()}")
    for ahead in args.pick_ahead:
        result = run(ahead, args.rounds, args.pace, args.poll, args.round_size)
        print(f"\npick_ahead={ahead}: last label of a round -> next item claimable: {summary(result['boundary'])}")
        print(f"  asks inside a round slower than one poll (write-lock waits, or a round awaiting its selection): "
              f"{summary(result['inside'])}")
        for name, values in result["phases"].items():
            print(f"  {name:16s} {summary(values)}")
        ahead_rows = [r for r in result["rounds"] if r.picked_ahead]
        if ahead_rows:
            print(f"  rounds opened ahead: {len(ahead_rows)}, items picked ahead: "
                  f"{sum(r.picked_ahead for r in ahead_rows)} of {sum(r.queue.labeled for r in ahead_rows)} labeled")
        print(f"  after: {load()}")


if __name__ == "__main__":
    main()
