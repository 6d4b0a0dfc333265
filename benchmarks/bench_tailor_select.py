"""Selection time of TAILOR on CPU: Thompson filling alone, then a full `select` split into its parts.

    .venv/bin/python benchmarks/bench_tailor_select.py [--slots 1000] [--arms 200] [--classes 10] [--pool 100000]
        [--repeats 5] [--items 100000] [--hidden 64] [--labeled 500] [--budget 1000] [--threads N]

1. thompson_fill: `--slots` slots, `--arms` arms, `--classes` classes; each arm ranks 1000 positions drawn from a pool
   of `--pool` (so rankings overlap), posterior stats uniform in [0.5, 5]; median and max of `--repeats` runs, after
   a warm-up. Goal (specs/tailor.md): well under 1 s, target < 0.2 s, for B = 1000, M = 200, K = 10.
2. TailorStrategy.select on a synthetic pool of `--items` (Gaussian class clusters in `--hidden` dimensions used as
   both features and penultimate features, softmax probabilities, `--labeled` items labeled), default arms, budget
   `--budget`: each arm's ranking time, the Thompson fill on those rankings, and two runs of the full `select`
   (both parts plus arm building and the reward).
3. A follow-up selection of update="answer" (what the app runs after each answer): the strategy holding the round's
   `--budget` picks, half of them answered, selects 2 more from the posterior plus those answers.
--threads sets torch's intra-op threads (default: torch's own choice).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learners.strategies import StrategyInputs, get_strategy  # noqa: E402
from learners.strategies.tailor import (  # noqa: E402
    DEFAULT_MULTICLASS_ARMS,
    arm_rankings,
    build_arms,
    label_matrix,
)
from learners.tailor import TailorPosterior, reward_vector, thompson_fill  # noqa: E402


def synthetic_pool(n: int, classes: int, hidden: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels, probs float32, features float32) for Gaussian class clusters."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, hidden))
    y = rng.integers(classes, size=n)
    feats = (means[y] + rng.normal(size=(n, hidden))).astype(np.float32)
    logits = feats @ means.T / np.sqrt(hidden) * 2.0 + rng.normal(size=(n, classes))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return y, (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32), feats


def bench_fill(slots: int, arms: int, classes: int, pool: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    rankings = [rng.choice(pool, size=1000, replace=False) for _ in range(arms)]
    posterior = TailorPosterior([f"arm{m}" for m in range(arms)], rng.uniform(0.5, 5, size=(2, arms, classes)))
    reward = reward_vector(np.eye(classes)[rng.integers(classes, size=300)])
    times = []
    for run in range(repeats + 1):
        start = time.perf_counter()
        picks = thompson_fill(posterior, rankings, reward, slots, np.random.default_rng(run))
        if run:  # the first run is a warm-up
            times.append(time.perf_counter() - start)
    pulled = len(set(picks.arm_index.tolist()))
    print(f"thompson_fill  B={slots} M={arms} K={classes} (rankings of 1000 from a pool of {pool}): "
          f"median {statistics.median(times):.3f} s, max {max(times):.3f} s over {repeats} runs "
          f"({len(picks.positions)} picks from {pulled} arms)")


def bench_select(items: int, classes: int, hidden: int, labeled_count: int, budget: int) -> None:
    y, probs, feats = synthetic_pool(items, classes, hidden)
    rng = np.random.default_rng(1)
    labeled = rng.choice(items, size=labeled_count, replace=False)
    candidates = np.setdiff1d(np.arange(items), labeled)
    inputs = StrategyInputs(candidates, probs=probs, features=feats, penultimate=feats, labeled=labeled,
                            labels=y[labeled])
    get_strategy("margin").select(StrategyInputs(np.arange(100), probs=probs), 10, rng)  # warm-up: torch import
    arms = build_arms(DEFAULT_MULTICLASS_ARMS, classes)
    print(f"\nTailorStrategy.select  N={items} C={classes} d={hidden} labeled={labeled_count} budget={budget}, "
          f"default arms ({len(arms)})")

    by_strategy: dict[str, float] = defaultdict(float)
    rankings = []
    for arm, arm_rng in zip(arms, np.random.default_rng(2).spawn(len(arms))):
        start = time.perf_counter()
        rankings += arm_rankings([arm], inputs, budget, arm_rng)
        by_strategy[arm.strategy] += time.perf_counter() - start
    per_class = {name: sum(1 for arm in arms if arm.strategy == name) for name in by_strategy}
    for name, seconds in sorted(by_strategy.items(), key=lambda kv: -kv[1]):
        print(f"  rankings {name:<12} {seconds:7.2f} s  ({per_class[name]} arm{'s' if per_class[name] > 1 else ''})")
    ranking_total = sum(by_strategy.values())
    print(f"  arm rankings total    {ranking_total:7.2f} s")

    posterior = TailorPosterior.fresh([arm.name for arm in arms], classes)
    reward = reward_vector(label_matrix(inputs, classes, multi_label=False))
    start = time.perf_counter()
    thompson_fill(posterior, rankings, reward, budget, np.random.default_rng(3))
    print(f"  thompson fill         {time.perf_counter() - start:7.3f} s")

    times = []
    for run in range(2):
        start = time.perf_counter()
        selection = get_strategy("tailor").select(inputs, budget, np.random.default_rng(4))
        times.append(time.perf_counter() - start)
    print(f"  full select           {' s, '.join(f'{t:.2f}' for t in times)} s (two runs) -> {len(selection)} picks; "
          f"{selection.note}")

    strategy = get_strategy("tailor")
    picks = strategy.select(inputs, budget, np.random.default_rng(5))
    answered = picks.positions[: len(picks) // 2]
    follow_up = StrategyInputs(np.setdiff1d(candidates, picks.positions), probs=probs, features=feats,
                               penultimate=feats, labeled=np.r_[labeled, answered], labels=y[np.r_[labeled, answered]],
                               step=len(picks))
    start = time.perf_counter()
    more = strategy.select(follow_up, 2, np.random.default_rng(6))
    print(f"  follow-up select (update=answer, 2 picks, {len(answered)} answers of the round): "
          f"{time.perf_counter() - start:.2f} s; {more.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=1000)
    parser.add_argument("--arms", type=int, default=200)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--labeled", type=int, default=500)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    bench_fill(args.slots, args.arms, args.classes, args.pool, args.repeats)
    bench_select(args.items, args.classes, args.hidden, args.labeled, args.budget)


if __name__ == "__main__":
    main()
