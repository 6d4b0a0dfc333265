"""`python -m app start`: the model worker and the Streamlit server together; Ctrl-C stops both.

On Linux the children are also told to stop (SIGTERM) when the launcher dies without cleaning up (kill -9, out of
memory): a killed launcher never leaves a web server holding the port or a worker behind, so it can simply be
started again. Whatever they were doing is recovered by the next start (claims expire, jobs are claimed again).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

from app.settings import REPO_ROOT, Settings
from app.workbench import Workbench

PR_SET_PDEATHSIG = 1


def _stop_with_launcher(launcher_pid: int):
    """A preexec_fn (Linux): the child gets SIGTERM when the launcher dies, however it dies."""

    def arm() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return
        if os.getppid() != launcher_pid:  # the launcher died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm if sys.platform.startswith("linux") else None


def start(port: int = 8501, workers: int = 1, demo: bool = True) -> int:
    settings = Settings.from_env()
    wb = Workbench(settings)  # applies migrations before anything else connects
    if demo:
        wb.ensure_demo_project()
    env = {**os.environ, "WORKBENCH_HOME": str(settings.home), "WORKBENCH_DB_URL": settings.db_url}
    tied = _stop_with_launcher(os.getpid())
    procs = [
        subprocess.Popen([sys.executable, "-m", "app", "worker"], cwd=REPO_ROOT, env=env, preexec_fn=tied)
        for _ in range(workers)
    ]
    procs.append(
        subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "streamlit_app.py"),
                "--server.port", str(port), "--server.headless", "true",
                "--browser.gatherUsageStats", "false",
                "--client.toolbarMode", "viewer",  # no Deploy / Rerun / Clear cache (also in .streamlit/config.toml)
            ],
            cwd=REPO_ROOT,
            env=env,
            preexec_fn=tied,
        )
    )
    print(f"\n  Workbench running: open http://localhost:{port}\n  data: {settings.home}\n  Ctrl-C stops it.\n", flush=True)
    stopping = False

    def _stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    failed = [p.args for p in procs if p.returncode not in (0, -signal.SIGTERM, None)]
    if failed and not stopping:
        print(f"stopped because a process exited: {failed}", file=sys.stderr)
        return 1
    return 0
