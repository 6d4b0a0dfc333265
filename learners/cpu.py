"""Run torch on one CPU thread for loops of many tiny steps (head training, greedy pick loops).

Importing this module does not import torch (the strategies registry stays numpy-only).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def one_cpu_thread(device: Any) -> Iterator[None]:
    """Run torch on one CPU thread (restored afterwards); no effect for other devices.

    Each step is too small for intra-op parallelism to pay; on a shared 2-core machine OpenMP's spin-waiting
    made such loops stall: 20 epochs on the digits took median 0.37 s but p90 7.4 s with two threads (0.33 s /
    0.42 s with one), and 100 coreset/badge picks at N = 100,000 took 11-14 s with two threads, 3.3-5 s with one.
    """
    import torch

    if torch.device(device).type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
