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
WORKER_RESTART_FIRST, WORKER_RESTART_MAX = 1.0, 30.0  # seconds before a worker that exited is started again
WORKER_HEALTHY_SECONDS = 60.0  # a worker that ran this long before exiting is restarted after the first pause


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


DEFAULT_HOST = "127.0.0.1"  # loopback: the server speaks plain HTTP, so it is not offered to the network by default


def server_command(port: int, host: str = DEFAULT_HOST) -> list[str]:
    """The Streamlit server's command line: it listens on `host` only (--server.address)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "streamlit_app.py"),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",  # no Deploy / Rerun / Clear cache (also in .streamlit/config.toml)
    ]


SIGN_IN_VARIABLES = ("WORKBENCH_TOKEN", "WORKBENCH_ADMIN_TOKEN")


def worker_environment(env: dict[str, str]) -> dict[str, str]:
    """A worker's environment: the server's, less the sign-in tokens (a worker serves no page and needs none, so
    a dump of its environment, e.g. in a crash report, holds none)."""
    return {name: value for name, value in env.items() if name not in SIGN_IN_VARIABLES}


def visible_cuda_devices(env: dict[str, str]) -> list[str]:
    """The CUDA devices a worker may be given, without importing torch: CUDA_VISIBLE_DEVICES when set (empty: none),
    else the GPUs `nvidia-smi -L` lists (none where it is missing)."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(k) for k, line in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]


def worker_environments(env: dict[str, str], workers: int, gpus: list[str]) -> list[dict[str, str]]:
    """Each worker's environment. With GPUs, one worker per GPU at least (more when asked), each seeing one
    (CUDA_VISIBLE_DEVICES) and decoding images in its share of the CPUs (WORKBENCH_LOADER_WORKERS); the idle
    ones take shards of a running embed job. Without, `workers` workers on the CPU, as asked."""
    base = worker_environment(env)
    if not gpus:
        return [dict(base) for _ in range(workers)]
    count = max(workers, len(gpus))
    loaders = str(max(1, min(8, (os.cpu_count() or 1) // count)))
    return [{**base, "CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)],
             "WORKBENCH_LOADER_WORKERS": base.get("WORKBENCH_LOADER_WORKERS", loaders)} for i in range(count)]


def start(port: int = 8501, workers: int = 1, demo: bool = True, host: str = DEFAULT_HOST) -> int:
    settings = Settings.from_env()
    wb = Workbench(settings)  # applies migrations before anything else connects
    if demo:
        wb.ensure_demo_project()
    env = {**os.environ, "WORKBENCH_HOME": str(settings.home), "WORKBENCH_DB_URL": settings.db_url}
    tied = _stop_with_launcher(os.getpid())
    worker_envs = worker_environments(env, workers, visible_cuda_devices(env))
    workers = len(worker_envs)

    def _worker(i: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "app", "worker"], cwd=REPO_ROOT, env=worker_envs[i],
                                preexec_fn=tied)

    procs = [_worker(i) for i in range(workers)]
    procs.append(
        subprocess.Popen(
            server_command(port, host),
            cwd=REPO_ROOT,
            env=env,
            preexec_fn=tied,
        )
    )
    print(f"\n  Workbench running: open http://{'localhost' if host == DEFAULT_HOST else host}:{port}\n  data: {settings.home}\n  Ctrl-C stops it.\n", flush=True)
    stopping = False

    def _stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    # A worker that exits (a fault it did not survive) is started again after a pause that doubles while it keeps
    # dying (WORKER_RESTART_FIRST .. WORKER_RESTART_MAX seconds) and resets once it has run a while: its job is
    # claimed again when its heartbeat goes stale. Only the web server's exit stops everything.
    started = [time.monotonic()] * workers
    pauses = [WORKER_RESTART_FIRST] * workers
    restart_at: list[float | None] = [None] * workers
    try:
        while not stopping and procs[-1].poll() is None:
            now = time.monotonic()
            for i in range(workers):
                if procs[i].poll() is None:
                    continue
                if restart_at[i] is None:
                    if now - started[i] > WORKER_HEALTHY_SECONDS:
                        pauses[i] = WORKER_RESTART_FIRST
                    restart_at[i] = now + pauses[i]
                    print(f"worker {i + 1} exited (code {procs[i].returncode}); starting it again in "
                          f"{pauses[i]:.0f} s", file=sys.stderr, flush=True)
                elif now >= restart_at[i]:
                    procs[i], started[i], restart_at[i] = _worker(i), now, None
                    pauses[i] = min(WORKER_RESTART_MAX, pauses[i] * 2)
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
