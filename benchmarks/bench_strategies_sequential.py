"""Selection time of `galaxy`, `direct` (next pick, the web UI's budget-1 call) and `bait` (one batch) on CPU.

    .venv/bin/python benchmarks/bench_strategies_sequential.py [--items 100000] [--classes 10] [--labeled 500]
        [--calls 20] [--bait-items 20000] [--bait-budget 100] [--hidden 64] [--device cpu] [--threads N]

Synthetic pool: Gaussian class clusters in `--hidden` dimensions (the penultimate features), probabilities from a
softmax of a noisy linear score (the class means as weights, plus Gaussian noise), `--labeled` items labeled at
random with their true class, the rest candidates.
- galaxy / direct: median and max over `--calls` calls of select(budget=1) with step = 1, 2, ... after a warm-up
  call (each pick is labeled before the next call, as in the UI). Goal: galaxy < 200 ms at N = 100,000, C = 10.
  (galaxy and direct run in numpy on the CPU: --device applies to bait only.)
- bait: one select(budget=B) at N = `--bait-items` (all items but the labeled ones are candidates), one run
  after a warm-up on a small pool.
--threads sets torch's intra-op threads (default: torch's own choice); on a shared machine 1 thread can be faster.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learners.strategies import StrategyInputs, get_strategy  # noqa: E402


def synthetic_pool(n: int, classes: int, hidden: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels, probs float32, penultimate features float32) for Gaussian class clusters."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=1.0, size=(classes, hidden))
    y = rng.integers(classes, size=n)
    feats = (means[y] + rng.normal(size=(n, hidden))).astype(np.float32)
    logits = feats @ means.T / np.sqrt(hidden) * 2.0 + rng.normal(scale=1.0, size=(n, classes))
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return y, probs.astype(np.float32), feats


def time_next_pick(name: str, y: np.ndarray, probs: np.ndarray, labeled_count: int, calls: int) -> list[float]:
    """Seconds per select(budget=1) call, `calls` calls after one warm-up; each pick is labeled before the next."""
    rng = np.random.default_rng(1)
    labeled = rng.choice(len(y), size=labeled_count, replace=False)
    is_candidate = np.ones(len(y), dtype=bool)
    is_candidate[labeled] = False
    labeled_list = labeled.tolist()
    strategy = get_strategy(name, seed=0)
    times = []
    for step in range(calls + 1):
        inputs = StrategyInputs(np.flatnonzero(is_candidate), probs=probs, labeled=np.array(labeled_list),
                                labels=y[labeled_list], step=step)
        start = time.perf_counter()
        pick = strategy.select(inputs, 1, np.random.default_rng([0, 1, step])).positions[0]
        elapsed = time.perf_counter() - start
        if step:  # the first call is a warm-up
            times.append(elapsed)
        is_candidate[pick] = False  # the annotator labels it before the next call
        labeled_list.append(int(pick))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--labeled", type=int, default=500)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--bait-items", type=int, default=20_000)
    parser.add_argument("--bait-budget", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    y, probs, _ = synthetic_pool(args.items, args.classes, args.hidden)
    for name in ("galaxy", "direct"):
        times = time_next_pick(name, y, probs, args.labeled, args.calls)
        print(f"{name} next pick: N={args.items:,} C={args.classes} labeled={args.labeled}: median "
              f"{1000 * statistics.median(times):.1f} ms, max {1000 * max(times):.1f} ms over {len(times)} calls"
              f" (budget=1)")

    y, probs, feats = synthetic_pool(args.bait_items, args.classes, args.hidden, seed=2)
    labeled = np.random.default_rng(3).choice(args.bait_items, size=args.labeled, replace=False)
    candidates = np.setdiff1d(np.arange(args.bait_items), labeled)
    bait = get_strategy("bait", device=args.device)
    warm = StrategyInputs(candidates[:500], probs=probs, penultimate=feats, labeled=labeled, labels=y[labeled])
    bait.select(warm, 5, np.random.default_rng(0))
    inputs = StrategyInputs(candidates, probs=probs, penultimate=feats, labeled=labeled, labels=y[labeled])
    start = time.perf_counter()
    picks = bait.select(inputs, args.bait_budget, np.random.default_rng(0))
    elapsed = time.perf_counter() - start
    print(f"bait batch: N={args.bait_items:,} C={args.classes} h={args.hidden} dim=30 B={args.bait_budget} "
          f"labeled={args.labeled}: {elapsed:.2f} s ({len(picks)} picks)")


if __name__ == "__main__":
    main()
