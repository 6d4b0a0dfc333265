"""The Label page in real Chromium (Playwright) on `python -m app start`: key press -> next image painted, the
round-boundary wait, and labels per minute for a scripted fast typist; today's page side by side with the old
button page (git commit 7c6095b, the reference), both in the same run. Prints figures; not a test.

Run: .venv/bin/python benchmarks/bench_label_page.py [--labels 120] [--old-labels 100] [--old-ref 7c6095b]

- new page: measured in the page. The surface logs each item it draws with the keydown's timeStamp that drew it and
  the time of the task that runs right after the frame holding the new image was painted (rAF, then setTimeout 0):
  latency = painted - key timeStamp (the same clock, performance.now()).
- old page: a keydown listener (capture) keeps the key's timeStamp; a MutationObserver on the st.image element
  notes the new image's src and then the same rAF + setTimeout 0 paint time; also "idle" (Streamlit's script run
  over: its running indicator gone), as the issue measured it.
- round boundary: the last label of a round (its key timeStamp) to the first item of the next round painted.
- the typist presses the gold class of the item painted as soon as the page takes a key (new page: the guard time
  after paint; old page: the page idle), so labels per minute include every wait the page makes.
- demo (the digits, rounds of 10 after an eval set of 10) and a folder project (3 classes of small PNGs written
  to a temp folder, rounds of 20).
Goals (issue 12): p95 < 50 ms, boundary < 0.5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select

from app.settings import Settings
from app.ui import shortcut_keys
from app.workbench import DEMO_PROJECT, ProjectConfig, Workbench
from storage.models import Item, QueueEntry

CHROMIUM = "/usr/bin/chromium"
SURFACE = "globalThis.__labelSurfaces && globalThis.__labelSurfaces.get('label_surface')"
FOLDER_CLASSES = ("ring", "bar", "dots")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait(pred, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise TimeoutError(what)


def write_folder(folder: Path, per_class: int = 80) -> Path:
    """3 classes of 24x24 PNGs (a ring, a bar, dots) with noise; file names do not give the class away."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:24]
    n = 0
    for k, name in enumerate(FOLDER_CLASSES):
        (folder / name).mkdir(parents=True)
        for _ in range(per_class):
            img = rng.normal(40, 20, (24, 24))
            if k == 0:
                r = np.hypot(yy - 12 + rng.integers(-2, 3), xx - 12 + rng.integers(-2, 3))
                img[(r > 5) & (r < 8)] += 180
            elif k == 1:
                c = 12 + rng.integers(-4, 5)
                img[:, c - 2:c + 2] += 180
            else:
                for _d in range(6):
                    y, x = rng.integers(2, 22, 2)
                    img[y - 1:y + 2, x - 1:x + 2] += 180
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name / f"img{n:04d}.png")
            n += 1
    return folder


class Server:
    def __init__(self, cwd: Path, home: Path, log: Path) -> None:
        self.port = free_port()
        self.home = home
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": f"sqlite:///{home / 'wb.sqlite'}"}
        env.pop("PYTHONPATH", None)
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "start", "--port", str(self.port)], cwd=cwd,
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait(lambda: http_ok(f"{self.url}/_stcore/health"), 180, "server")
        self.settings = Settings(home=home, db_url=env["WORKBENCH_DB_URL"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def gold_by_entry(wb: Workbench, pid: int) -> dict[int, int]:
    with wb.db.read() as s:
        rows = s.execute(select(QueueEntry.id, Item.gold).join(Item, Item.id == QueueEntry.item_id)
                         .where(Item.project_id == pid)).all()
    return {e: g[0] for e, g in rows}


def gold_by_name(wb: Workbench, pid: int) -> dict[str, int]:
    with wb.db.read() as s:
        return {Path(i.key).name: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == pid))}


# The old tree's code reads its own database through plain SQL here: the new code would migrate it to a newer
# schema the old code cannot open.
def sql(server: Server, query: str, *args):
    with sqlite3.connect(server.home / "wb.sqlite", timeout=30) as conn:
        return conn.execute(query, args).fetchall()


def setup_old_projects(server: Server, folder: Path, cwd: Path) -> dict[str, int]:
    env = {**os.environ, "WORKBENCH_HOME": str(server.home), "WORKBENCH_DB_URL": f"sqlite:///{server.home / 'wb.sqlite'}"}
    env.pop("PYTHONPATH", None)
    wait(lambda: sql(server, "select id from projects where name = ?", DEMO_PROJECT), 120, "old demo project")
    subprocess.run([sys.executable, "-m", "app", "import", str(folder), "--name", "Shapes", "--round-size", "20",
                    "--eval-size", "10"], cwd=cwd, env=env, check=True, capture_output=True)
    pids = {"demo": sql(server, "select id from projects where name = ?", DEMO_PROJECT)[0][0],
            "folder": sql(server, "select id from projects where name = 'Shapes'")[0][0]}
    for pid in pids.values():
        wait(lambda pid=pid: sql(server, "select 1 from rounds where project_id = ? and state = 'labeling'", pid), 300,
             "old round 0")
    return pids


def setup_projects(server: Server, folder: Path) -> dict[str, int]:
    wb = Workbench(server.settings)
    demo = wait(lambda: _pid(wb, DEMO_PROJECT), 120, "demo project")
    pid = wb.create_project(ProjectConfig(name="Shapes", round_size=20, eval_size=10), folder)
    for p in (demo, pid):
        wait(lambda p=p: wb.rounds(p) and wb.rounds(p)[0].state == "labeling", 300, "round 0")
    return {"demo": demo, "folder": pid}


def _pid(wb: Workbench, name: str) -> int | None:
    try:
        return wb.project_id(name)
    except Exception:  # noqa: BLE001 - not created yet
        return None


# ----- the new page ---------------------------------------------------------------------------------------------------
def run_new(browser, server: Server, pid: int, n_labels: int) -> dict:
    wb = Workbench(server.settings)
    keys = shortcut_keys(wb.project(pid).classes)
    page = browser.new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{server.url}/label?annotator=bench-new&project={pid}")
    ready = (f"() => {{ const s = {SURFACE}; return s && s.current && s.data && s.data.project_id === {pid}"
             " && performance.now() - s.paintedAt > s.settings().guard_ms + 2 && (!s.lastAnswer || performance.now() - s.lastAnswer.at > s.settings().repress_ms + 10); }")
    gold = gold_by_entry(wb, pid)
    boundaries = []
    page.wait_for_function(ready)
    t0 = time.perf_counter()
    for _ in range(n_labels):
        page.wait_for_function(ready, polling="raf")
        entry = int(page.locator("img.ls-image").get_attribute("data-entry-id"))
        if entry not in gold:
            gold = gold_by_entry(wb, pid)
        page.keyboard.press(keys[gold[entry]])
        if page.evaluate(f"() => !({SURFACE}).current"):  # the last held item: a round boundary (or none ahead)
            key_ts = page.evaluate(f"() => {SURFACE}.keyTs")
            page.wait_for_function(f"() => {{ const s = {SURFACE}; const p = s.paints[s.paints.length - 1];"
                                   " return s.current && p && p.painted !== null; }", polling="raf")
            painted = page.evaluate(f"() => {{ const s = {SURFACE}; return s.paints[s.paints.length - 1].painted; }}")
            boundaries.append((painted - key_ts) / 1000)
    elapsed = time.perf_counter() - t0
    page.wait_for_function(f"() => {SURFACE}.outbox.length === 0")
    paints = page.evaluate(f"() => {SURFACE}.paints")
    lat = [p["painted"] - p["key_ts"] for p in paints if p["key_ts"] is not None and p["painted"] is not None]
    page.close()
    labels = len(wb.labels(pid))
    return {"lat": lat, "boundaries": boundaries, "per_min": n_labels / elapsed * 60, "stored": labels}


# ----- the old page ---------------------------------------------------------------------------------------------------
OLD_PROBE = """() => {
  if (window.__probe) return;
  const P = window.__probe = {keys: [], paints: [], lastSrc: null};
  document.addEventListener('keydown', (e) => P.keys.push(e.timeStamp), true);
  const look = () => {
    const img = document.querySelector('[data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img');
    const src = img ? img.getAttribute('src') : null;
    if (src && src !== P.lastSrc) {
      P.lastSrc = src;
      const rec = {at: performance.now(), painted: null, caption: null};
      P.paints.push(rec);
      requestAnimationFrame(() => setTimeout(() => { rec.painted = performance.now(); }, 0));
    }
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                      attributeFilter: ['src']});
}"""


def _old_caption(page) -> str | None:
    cap = page.locator("[data-testid='stImageCaption'], [data-testid='stCaptionContainer'] ").first
    try:
        text = page.locator("[data-testid='stImage']").first.inner_text(timeout=60_000)
    except Exception:  # noqa: BLE001
        text = cap.inner_text()
    return text.strip().splitlines()[-1] if text.strip() else None


def _old_idle(page) -> None:
    running = page.locator("[data-testid='stStatusWidgetRunningIcon'], [data-testid='stStatusWidgetRunningManIcon']")
    deadline = time.time() + 60
    while running.count() and time.time() < deadline:
        page.wait_for_timeout(10)


def run_old(browser, server: Server, pid: int, n_labels: int) -> dict:
    name_, classes = sql(server, "select name, classes from projects where id = ?", pid)[0]
    keys = shortcut_keys(json.loads(classes))
    gold = {Path(key).name: json.loads(g)[0] for key, g in sql(server, "select key, gold from items where project_id = ?",
                                                               pid)}
    page = browser.new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{server.url}/label?annotator=bench-old")
    if name_ != DEMO_PROJECT:  # pick the project in the sidebar, then click off it
        page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first.click()
        page.get_by_role("option", name=name_).click()
    page.locator("[data-testid='stImage']").first.wait_for()
    _old_idle(page)
    page.evaluate(OLD_PROBE)
    lat, idle, boundaries = [], [], []
    t0 = time.perf_counter()
    done = 0
    while done < n_labels:
        page.locator("[data-testid='stImage']").first.wait_for(timeout=120_000)
        _old_idle(page)
        name = _old_caption(page)
        if name not in gold:
            page.wait_for_timeout(50)
            continue
        before = page.evaluate("() => window.__probe.paints.length")
        round_text = page.locator("[data-testid='stProgress']").first.inner_text()
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.keyboard.press(keys[gold[name]])
        key_ts = page.evaluate("() => window.__probe.keys[window.__probe.keys.length - 1]")
        try:
            page.wait_for_function(f"() => window.__probe.paints.length > {before} && "
                                   "window.__probe.paints[window.__probe.paints.length - 1].painted !== null",
                                   timeout=120_000, polling="raf")
        except Exception:  # noqa: BLE001 - the key was lost: press again next time round
            continue
        painted = page.evaluate("() => window.__probe.paints[window.__probe.paints.length - 1].painted")
        _old_idle(page)
        idle_at = page.evaluate("() => performance.now()")
        last_of_round = " of " in round_text and _last(round_text)
        (boundaries if last_of_round else lat).append((painted - key_ts) / (1000 if last_of_round else 1))
        if not last_of_round:
            idle.append(idle_at - key_ts)
        done += 1
    elapsed = time.perf_counter() - t0
    page.close()
    stored = sql(server, "select count(*) from annotations where project_id = ? and kind = 'label'", pid)[0][0]
    return {"lat": lat, "idle": idle, "boundaries": boundaries, "per_min": n_labels / elapsed * 60, "stored": stored}


def _last(progress: str) -> bool:
    """'round 3: 9 of 10' -> True (the next label is the round's last)."""
    try:
        done, total = progress.split(":", 1)[1].strip().split(" of ")
        return int(done) + 1 == int(total.split()[0])
    except (ValueError, IndexError):
        return False


# ----- report ---------------------------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def line(name: str, r: dict) -> str:
    lat = r["lat"]
    b = r["boundaries"]
    out = (f"{name:<22} n={len(lat):>4}  key->painted p50 {pct(lat, 50):7.1f} ms  p95 {pct(lat, 95):7.1f} ms  "
           f"max {max(lat) if lat else float('nan'):7.1f} ms  | boundary n={len(b)} "
           f"median {statistics.median(b) if b else float('nan'):5.2f} s max {max(b) if b else float('nan'):5.2f} s"
           f"  | {r['per_min']:6.1f} labels/min | stored {r['stored']}")
    if "idle" in r and r["idle"]:
        out += f"  | key->idle p50 {pct(r['idle'], 50):.0f} ms p95 {pct(r['idle'], 95):.0f} ms"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, default=120)
    ap.add_argument("--old-labels", type=int, default=100)
    ap.add_argument("--old-ref", default="7c6095b")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench_label_page_"))
    folder = write_folder(tmp / "shapes")
    old_tree = tmp / "oldpage"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old_ref],
                   check=True, capture_output=True)
    results = {}
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; {os.cpu_count()} CPUs")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            for label, cwd, runner, n in (("new", ROOT, run_new, args.labels),
                                          ("old (" + args.old_ref + ")", old_tree, run_old, args.old_labels)):
                server = Server(cwd, tmp / f"home-{label[:3]}", tmp / f"{label[:3]}.log")
                try:
                    pids = setup_projects(server, folder) if runner is run_new else setup_old_projects(server, folder, cwd)
                    for kind, pid in pids.items():
                        r = runner(browser, server, pid, n)
                        results[(label, kind)] = r
                        print(line(f"{label} {kind}", r), f"| load {Path('/proc/loadavg').read_text().split()[:3]}",
                              flush=True)
                finally:
                    server.stop()
            browser.close()
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
