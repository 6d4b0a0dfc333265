"""How many CPU threads a computation may use, for torch and for numpy's BLAS.

Importing this module does not import torch (the strategies registry stays numpy-only).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from threadpoolctl import ThreadpoolController


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity set)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def idle_cpus() -> int:
    """Usable CPUs that the 1-minute load average leaves idle, at least 1.

    For thread pools that split work evenly and spin while they wait (torch's OpenMP): one thread on a core that
    another process keeps busy makes every step wait for it."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform: assume an idle machine
        load = 0.0
    cpus = usable_cpus()
    return max(1, min(cpus, cpus - round(load)))


@contextmanager
def torch_cpu_threads(device: Any, threads: int) -> Iterator[None]:
    """Run torch on `threads` CPU threads (restored afterwards); no effect for other devices."""
    import torch

    if torch.device(device).type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def one_cpu_thread(device: Any):
    """Run torch on one CPU thread (restored afterwards); no effect for other devices.

    Each step is too small for intra-op parallelism to pay; on a shared 2-core machine OpenMP's spin-waiting
    made such loops stall: 20 epochs on the digits took median 0.37 s but p90 7.4 s with two threads (0.33 s /
    0.42 s with one).
    """
    return torch_cpu_threads(device, 1)


@lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    # Looking the BLAS libraries up takes about a millisecond: once per process (numpy's OpenBLAS is loaded
    # with numpy, before any call here).
    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread (restored afterwards), for callers that run their own worker threads."""
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield
