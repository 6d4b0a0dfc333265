"""Large projects in the UI (issue 15, point 4): status(), each page's read models, real page runs (Streamlit's
AppTest) of every page (app/page_table.py), submit -> next through the verbs, and the import
of a manifest whose files are all present, at n items in SQLite.

The project is built with bulk inserts (no worker): 20 done rounds of `--labels` labels in all, the evaluation set
labeled in round 0, a labeling round with 3000 pending entries, a few jobs, and two small projects beside it. The
import's files are hard links to 64 small distinct PNGs (1000 per folder), so building 1M of them is cheap.

Run: .venv/bin/python benchmarks/bench_large_project.py --items 200000 1000000 [--labels 20000] [--no-import]
     [--no-pages] [--import-only] [--keep FOLDER]
Goals at 1M items: every page < 1 s, import of a 1M-row manifest < 60 s, submit -> next p95 < 10 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.page_table import PAGES, page  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.workbench import ProjectConfig, Workbench  # noqa: E402
from storage.db import sqlite_url  # noqa: E402

APP = str(ROOT / "streamlit_app.py")
ROUNDS = 20
EVAL = 1000
PENDING = 3000
DISTINCT = 64  # distinct image files; every other file is a hard link to one of them


def small_images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{'cat' if i % 2 else 'dog'}_{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def seed_folder(folder: Path) -> Path:
    """Two classes of 10 images each: what create_project imports before the bulk rows are added."""
    for name in ("cat", "dog"):
        for k, src in enumerate(small_images(folder / "_src" / name, 10)):
            (folder / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, folder / name / f"{k}.png")
    shutil.rmtree(folder / "_src")
    return folder


def now_text() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime())


def build(wb: Workbench, home: Path, n: int, labels: int) -> int:
    """A project of `n` items (module doc), written with bulk inserts; returns its id."""
    data = seed_folder(home / "data")
    for name in ("small one", "small two"):
        wb.create_project(ProjectConfig(name=name, eval_size=4, pick_ahead=0), data)
    pid = wb.create_project(ProjectConfig(name="large", eval_size=4, pick_ahead=0), data)
    images = small_images(data / "_distinct", DISTINCT)
    db = sqlite3.connect(home / "workbench.sqlite")
    stamp = now_text()
    with db:
        db.execute("DELETE FROM jobs WHERE project_id = ?", (pid,))
        db.execute("DELETE FROM rounds WHERE project_id = ?", (pid,))
        first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM items").fetchone()[0]
        count = n - 20
        db.executemany(
            "INSERT INTO items (id, project_id, key, content_hash, split, gold) VALUES (?, ?, ?, ?, ?, ?)",
            ((first + i, pid, f"bulk/{i // 1000}/{i}.png", f"{i:064x}", "eval" if i < EVAL else "pool",
              f"[{i % 2}]") for i in range(count)))
        pool = np.arange(first + EVAL, first + count)
        order = np.random.default_rng(0).permutation(pool)
        per_round = max(1, (labels - EVAL) // ROUNDS)
        entry_id = db.execute("SELECT coalesce(max(id), 0) + 1 FROM queue_entries").fetchone()[0]
        done_labels = 0
        cursor = 0
        for index in range(ROUNDS + 1):
            labeling = index == ROUNDS
            picked = list(order[cursor:cursor + (PENDING if labeling else per_round)])
            cursor += len(picked)
            if index == 0:
                picked = list(range(first, first + EVAL)) + picked
            metrics = None if labeling else json.dumps({
                "labels": done_labels + len(picked), "accuracy": 0.8, "balanced_accuracy": 0.8, "macro_f1": 0.8,
                "n": EVAL, "labels_per_class": [len(picked) // 2, len(picked) - len(picked) // 2]})
            round_id = db.execute(
                "INSERT INTO rounds (project_id, \"index\", strategy, strategy_params, state, note, labels_at_start, "
                "metrics, started_at, picked_ahead, awaiting_selection) VALUES (?, ?, 'margin', '{}', ?, '', ?, ?, ?, "
                "0, 0)", (pid, index, "labeling" if labeling else "done", done_labels, metrics, stamp)).lastrowid
            state = "pending" if labeling else "labeled"
            entries = [(entry_id + k, round_id, int(item), k, "margin", None, state,
                        None if labeling else "bench", 0) for k, item in enumerate(picked)]
            db.executemany("INSERT INTO queue_entries (id, round_id, item_id, position, arm, score, state, claimed_by, "
                           "copy_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", entries)
            if not labeling:
                db.executemany(
                    "INSERT INTO annotations (project_id, item_id, annotator, kind, value, round_id, queue_entry_id, "
                    "seconds, created_at) VALUES (?, ?, 'bench', 'label', ?, ?, ?, 1.0, ?)",
                    ((pid, e[2], f"[{(e[2] - first) % 2}]", round_id, e[0], stamp) for e in entries))
                db.execute("INSERT INTO jobs (kind, project_id, round_id, params, priority, state, progress, message, "
                           "attempts, created_at) VALUES ('train', ?, ?, '{}', 10, 'done', 1.0, 'trained', 1, ?)",
                           (pid, round_id, stamp))
                done_labels += len(picked)
            else:
                for k, (_, _, item, *_rest) in enumerate(entries):  # the Label page opens these files
                    key = f"bulk/{(item - first) // 1000}/{item - first}.png"
                    (data / key).parent.mkdir(parents=True, exist_ok=True)
                    os.link(images[k % DISTINCT], data / key)
            entry_id += len(entries)
    db.close()
    return pid


def median_ms(fn, repeat: int = 5) -> tuple[float, float, float]:
    """(median, spread between the fastest and the slowest) of `repeat` warm runs, and the first run, in ms."""
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1000
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times) - min(times), first


def time_pages(pid: int) -> dict[str, tuple[float, float, float]]:
    from streamlit.testing.v1 import AppTest

    found = {}
    for url in [spec.url_path for spec in PAGES]:  # every page of the app
        at = AppTest.from_file(APP, default_timeout=120)
        at.session_state["project_id"] = pid
        at.session_state["annotator"] = f"page-{url}"
        at.run()

        def run(at=at, url=url) -> None:
            at.switch_page(page(url).file).run()
            assert not at.exception, [e.value for e in at.exception]

        found[url] = median_ms(run, repeat=3)
    return found


def submit_next(wb: Workbench, pid: int, count: int = 300) -> list[float]:
    times = []
    task = wb.next_assignment(pid, "verbs")
    for _ in range(count):
        start = time.perf_counter()
        wb.submit(pid, task.entry_id, "verbs", [0], seconds=1.0)
        task = wb.next_assignment(pid, "verbs")
        times.append((time.perf_counter() - start) * 1000)
    return times


def time_import(wb: Workbench, home: Path, n: int) -> tuple[float, float, float, int]:
    """(seconds to create a project from an n-row manifest, CPU seconds of this process meanwhile (what a machine
    shared with other work still measures fairly), the last progress fraction, items stored)."""
    folder = home / "import"
    images = small_images(folder / "_distinct", DISTINCT)
    lines = ["path,label"]
    for i in range(n):
        key = f"{i // 1000}/{i}.png"
        if i % 1000 == 0:
            (folder / str(i // 1000)).mkdir()
        os.link(images[i % DISTINCT], folder / key)
        lines.append(f"{key},{'cat' if i % DISTINCT % 2 else 'dog'}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    seen = [0.0]
    start, cpu = time.perf_counter(), time.process_time()
    pid = wb.create_project(ProjectConfig(name=f"import {n}"), manifest,
                            progress=lambda fraction, message: seen.append(fraction), on_warning=lambda w: None)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seconds, cpu, seen[-1], sum(wb.status(pid).items.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--labels", type=int, default=20_000)
    parser.add_argument("--no-import", action="store_true")
    parser.add_argument("--no-pages", action="store_true")
    parser.add_argument("--import-only", action="store_true", help="time the import alone")
    parser.add_argument("--keep", type=Path, help="build into (or reuse) this folder + the size, and keep it")
    args = parser.parse_args()
    for n in args.items:
        home = Path(f"{args.keep}_{n}") if args.keep else Path(tempfile.mkdtemp(prefix=f"bench_large_{n}_"))
        reuse = args.keep is not None and (home / "workbench.sqlite").exists()
        home.mkdir(parents=True, exist_ok=True)
        os.environ["WORKBENCH_HOME"] = str(home)
        os.environ["WORKBENCH_DB_URL"] = sqlite_url(home / "workbench.sqlite")
        try:
            wb = Workbench(Settings.from_env())
            start = time.perf_counter()
            if args.import_only:
                seconds, cpu, last, stored = time_import(wb, home, n)
                print(f"n={n}: import of an {n}-row manifest {seconds:.1f} s wall, {cpu:.1f} s CPU (progress "
                      f"reached {last:.0%}, {stored} items stored)")
                continue
            pid = wb.project_id("large") if reuse else build(wb, home, n, args.labels)
            print(f"n={n}: built in {time.perf_counter() - start:.1f} s ({args.labels} labels, {ROUNDS} done rounds)")
            print(f"n={n}: status() {'%.1f ms (spread %.1f, first run %.1f)' % median_ms(lambda: wb.status(pid))}")
            models = {
                "round_table": lambda: wb.round_table(pid),
                "chart_data": lambda: wb.chart_data(pid),
                "jobs": lambda: wb.jobs(pid),
                "failed_jobs": lambda: wb.failed_jobs(pid),
                "labels (eval)": lambda: wb.labels(pid, split="eval"),
                "labels (pool)": lambda: wb.labels(pid, split="pool"),
            }
            if hasattr(wb, "statuses"):
                models["statuses() of every project"] = wb.statuses
                models["labels_per_class"] = lambda: wb.labels_per_class(pid)
            else:
                models["status of every project"] = lambda: [wb.status(p.id) for p in wb.projects()]
            for name, fn in models.items():
                print(f"n={n}: {name} {'%.1f ms (spread %.1f, first run %.1f)' % median_ms(fn)}")
            if not args.no_pages:
                for url, (ms, spread, first) in time_pages(pid).items():  # the Label page claims on its first
                    print(f"n={n}: page {url} {ms:.0f} ms (median of 3 later runs, spread {spread:.0f}; first run "
                          f"{first:.0f} ms)")
            times = submit_next(wb, pid)
            print(f"n={n}: submit -> next p50 {np.percentile(times, 50):.2f} ms, p95 {np.percentile(times, 95):.2f} "
                  f"ms (n={len(times)} answers)")
            if not args.no_import:
                seconds, cpu, last, stored = time_import(wb, home, n)
                print(f"n={n}: import of an {n}-row manifest {seconds:.1f} s wall, {cpu:.1f} s CPU (progress "
                      f"reached {last:.0%}, {stored} items stored)")
            wb.db.dispose()
        finally:
            if args.keep is None:
                shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
