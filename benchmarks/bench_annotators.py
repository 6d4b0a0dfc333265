"""Many annotators at once: labels/s held by N annotator processes labeling one round, on SQLite and PostgreSQL.

Each annotator is its own process working flat out (no think time) through the workbench's verbs (next_assignment,
submit, a skip every 11th item, an undo every 9th), the same harness as tests/test_load.py; after each run
every hand-out, label, skip and undo is checked against the database (nothing handed out twice, nothing lost).
PostgreSQL is a throwaway server from Debian's `postgresql` package started for the run (tests/pg_server.py).

Run: .venv/bin/python benchmarks/bench_annotators.py [--annotators 8] [--items 400] [--backends sqlite,postgresql]
     [--pg-fast]   (fsync and synchronous commit off, as the tests run it; default: the server's durable defaults)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.db import Database, sqlite_url  # noqa: E402
from tests.conftest import make_round  # noqa: E402
from tests.pg_server import PgServer, PgUnavailable  # noqa: E402
from tests.test_load import check_run, run_annotators  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def bench(url: str, home: Path, annotators: int, items: int) -> dict:
    db = Database(url)
    project_id, round_id = make_round(db, items, name="bench")
    run = run_annotators(url, home, project_id, annotators=annotators, timeout=600)
    counts = check_run(db, project_id, round_id, run, queued=items)
    db.dispose()
    ms = [x * 1000 for x in run.latencies]
    return {
        "labels": run.labels, "answers": run.answers, "skipped": counts["skipped"], "seconds": run.seconds,
        "labels_per_s": run.labels_per_second, "answers_per_s": run.answers / run.seconds,
        "p50": percentile(ms, 50), "p95": percentile(ms, 95), "max": max(ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-fast", action="store_true", help="PostgreSQL without fsync/synchronous commit")
    args = parser.parse_args()
    print(f"{args.annotators} annotator processes, one round of {args.items} items, no think time "
          f"(a skip every 11th item, an undo every 9th); checked: nothing handed out twice, nothing lost")
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            server = None
            if backend == "sqlite":
                url, label = sqlite_url(Path(tmp) / "bench.sqlite"), "SQLite (WAL, synchronous=NORMAL)"
            elif backend == "postgresql":
                try:
                    server = PgServer(durable=not args.pg_fast).start()
                except PgUnavailable as exc:
                    print(f"  postgresql: skipped ({exc})")
                    continue
                url = server.create_database("bench")
                label = "PostgreSQL (READ COMMITTED, " + ("fsync off)" if args.pg_fast else "durable defaults)")
            else:
                raise SystemExit(f"unknown backend {backend!r} (sqlite, postgresql)")
            try:
                t = time.perf_counter()
                r = bench(url, Path(tmp), args.annotators, args.items)
            finally:
                if server is not None:
                    server.stop()
            print(f"  {label}: {r['labels_per_s']:.0f} labels/s held ({r['answers_per_s']:.0f} answers/s with skips), "
                  f"{r['labels']} labels + {r['skipped']} skips in {r['seconds']:.1f} s; "
                  f"submit+next p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, max {r['max']:.0f} ms "
                  f"[{time.perf_counter() - t:.0f} s with start-up]")


if __name__ == "__main__":
    main()
