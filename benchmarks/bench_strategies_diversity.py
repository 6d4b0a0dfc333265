"""coreset, badge and ranked_batch at scale on CPU, against straightforward references.

    .venv/bin/python benchmarks/bench_strategies_diversity.py [--n 100000] [--dim 512] [--budget 1000]
                                                              [--labeled 1000] [--quick]

Pool: Gaussian class clusters (N x h float32 features, the first `--labeled` positions labeled), probabilities
from a noisy linear readout of the features (softmax, float32). The features serve as G (penultimate) and F.

- coreset (C = 10): ours vs the reference as Sener & Savarese / LabelBench write the rule - at every pick, distances
  from all candidates to the whole center set (labeled + picked) with sklearn pairwise_distances (float64), min,
  argmax. At this size that takes hours, so it runs for the first few picks and its total is extrapolated by
  the number of candidate-center distances (sum over picks of |L| + t). All B picks are checked in float64 (ours
  run on float64 features) against a plain numpy incremental version (distances to each new center only,
  np.minimum, as LabelBench's kcenter_greedy), and our float32 picks against our float64 picks.
- badge (C = 10 and C = 100): ours vs BADGE's `init_centers` written with numpy/scipy - materialised gradient
  embeddings (N x C*h), sklearn pairwise_distances to each new center, np.minimum, scipy.stats.rv_discrete
  sampling. Timed for the first few picks and extrapolated (per-pick cost is constant). At C = 100 the embeddings
  would take 20 GB: the reference runs on the first candidates that fit in 2 GiB and its times are scaled by
  N / that count (both linear in N). Picks are sampled: they are not expected to coincide.
- ranked_batch: at N = 100,000 in a child process, time and peak memory of `select` (VmHWM, the RSS high-water
  mark, reset just before the call, minus the RSS before it); at N = 10,000 (|L| = 100, B = 100) the same picks as modAL's own
  uncertainty_batch_sampling, and the time ratio.
Each timed figure is one run (these take tens of seconds; the machine may be shared, so expect noise).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import pairwise_distances

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learners.strategies import StrategyInputs, get_strategy  # noqa: E402

GIB = 2**30
MATERIALISE_LIMIT = 2 * GIB  # badge reference: largest gradient-embedding matrix built


def make_pool(n: int, h: int, c: int, n_labeled: int, seed: int = 0) -> StrategyInputs:
    """Gaussian class clusters, generated in row blocks (no temporary of the full size)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=0.5, size=(c, h)).astype(np.float32)
    readout = means.T / np.sqrt(h)
    labels = rng.integers(0, c, size=n)
    features = np.empty((n, h), dtype=np.float32)
    probs = np.empty((n, c), dtype=np.float32)
    for start in range(0, n, 10_000):
        rows = slice(start, min(n, start + 10_000))
        features[rows] = means[labels[rows]] + rng.standard_normal((rows.stop - start, h), dtype=np.float32)
        logits = features[rows] @ readout + rng.normal(scale=2.0, size=(rows.stop - start, c)).astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=probs[rows])
        probs[rows] /= probs[rows].sum(axis=1, keepdims=True)
    labeled = np.arange(n_labeled)
    return StrategyInputs(np.arange(n_labeled, n), probs=probs, features=features, penultimate=features,
                          labeled=labeled, labels=labels[:n_labeled])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------------ coreset

def coreset_recompute(g: np.ndarray, candidates: np.ndarray, labeled: np.ndarray, picks: int) -> list[int]:
    """The rule as the reference code writes it: every pick recomputes distances to all centers (float64)."""
    points = g[candidates].astype(np.float64)
    centers = g[labeled].astype(np.float64)
    chosen: list[int] = []
    for _ in range(picks):
        nearest = pairwise_distances(points, centers).min(axis=1)
        nearest[chosen] = -np.inf
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        centers = np.vstack([centers, points[pick]])
    return candidates[chosen].tolist()


def coreset_incremental(g: np.ndarray, candidates: np.ndarray, labeled: np.ndarray, picks: int) -> list[int]:
    """The same rule in plain numpy float64, updating with each new center only (np.minimum), as LabelBench's
    kcenter_greedy does; distances to the labeled items in blocks of 1000."""
    points = g[candidates].astype(np.float64)
    nearest = np.full(len(points), np.inf)
    for start in range(0, len(labeled), 1000):
        nearest = np.minimum(nearest, pairwise_distances(points, g[labeled[start:start + 1000]].astype(np.float64))
                             .min(axis=1))
    points_sq = (points * points).sum(axis=1)
    chosen: list[int] = []
    for _ in range(picks):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        d2 = points_sq + points_sq[pick] - 2 * (points @ points[pick])
        nearest = np.minimum(nearest, np.sqrt(np.maximum(d2, 0)))
        nearest[pick] = -np.inf
    return candidates[chosen].tolist()


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def same(a: list[int], b: list[int]) -> str:
    k = first_difference(a, b)
    return "yes" if k is None else f"no, first difference at pick {k}"


def bench_coreset(inputs: StrategyInputs, budget: int, ref_picks: int) -> dict[str, Any]:
    """Ours on the float32 features (the default); the recomputing reference for `ref_picks` picks, extrapolated;
    ours on float64 features against the numpy float64 version for all picks."""
    g, candidates, labeled = inputs.penultimate, inputs.candidates, inputs.labeled
    ours, t_ours = timed(lambda: get_strategy("coreset").select(inputs, budget, np.random.default_rng(0)))
    ours_picks = ours.positions.tolist()
    reference, t_ref = timed(lambda: coreset_recompute(g, candidates, labeled, ref_picks))
    work_done = sum(len(labeled) + t for t in range(ref_picks))
    work_all = sum(len(labeled) + t for t in range(budget))
    inputs64 = replace(inputs, penultimate=g.astype(np.float64))
    ours64, t_ours64 = timed(lambda: get_strategy("coreset").select(inputs64, budget, np.random.default_rng(0)))
    ours64_picks = ours64.positions.tolist()
    numpy64, t_numpy64 = timed(lambda: coreset_incremental(g, candidates, labeled, budget))
    return {
        "ours": t_ours, "reference": t_ref * work_all / work_done,
        "reference_note": f"per-pick recomputation (float64), {ref_picks} picks in {t_ref:.1f} s, extrapolated.\n"
                          f"    picks: ours float32, first {ref_picks} vs the recomputation: "
                          f"{same(ours_picks[:ref_picks], reference)}; all {budget}, ours on float64 features "
                          f"({t_ours64:.1f} s) vs numpy float64 incremental ({t_numpy64:.1f} s): "
                          f"{same(ours64_picks, numpy64)}; ours float32 vs ours float64: {same(ours_picks, ours64_picks)}",
        "identical": f"float64, all {budget}: {same(ours64_picks, numpy64)}",
    }


# -------------------------------------------------------------------------------------------------------- badge

def badge_reference(inputs: StrategyInputs, picks: int) -> tuple[list[int], float, float]:
    """BADGE's init_centers (Ash et al.'s code) in numpy/scipy on materialised gradient embeddings: argmax norm,
    then D^2 sampling with scipy.stats.rv_discrete. Returns the picks, the setup time (embeddings, first pick,
    its distances) and the mean time of each later pick."""
    start = time.perf_counter()
    probs, g = inputs.probs[inputs.candidates], inputs.penultimate[inputs.candidates]
    n, c = probs.shape
    q = np.eye(c, dtype=np.float32)[probs.argmax(axis=1)] - probs
    emb = (q[:, :, None] * g[:, None, :]).reshape(n, -1)
    chosen = [int(np.argmax(np.linalg.norm(emb, axis=1)))]
    d = pairwise_distances(emb, emb[chosen]).ravel().astype(float)
    setup = time.perf_counter() - start
    for _ in range(picks - 1):
        weights = d ** 2 / np.sum(d ** 2)
        sampler = stats.rv_discrete(name="custm", values=(np.arange(n), weights))
        pick = int(sampler.rvs(size=1)[0])
        while pick in chosen:
            pick = int(sampler.rvs(size=1)[0])
        chosen.append(pick)
        d = np.minimum(d, pairwise_distances(emb, emb[[pick]]).ravel())
    per_pick = (time.perf_counter() - start - setup) / max(1, picks - 1)
    return inputs.candidates[chosen].tolist(), setup, per_pick


def bench_badge(inputs: StrategyInputs, budget: int, ref_picks: int) -> dict[str, Any]:
    """Ours on the whole pool; the reference on the whole pool when its embeddings fit in MATERIALISE_LIMIT,
    else on the first m candidates that fit, both of its times scaled by n / m (each is linear in n)."""
    n, c, h = len(inputs.candidates), inputs.probs.shape[1], inputs.penultimate.shape[1]
    _, t_ours = timed(lambda: get_strategy("badge").select(inputs, budget, np.random.default_rng(0)))
    m = min(n, MATERIALISE_LIMIT // (c * h * 4) // 1000 * 1000)
    sub_pool = replace(inputs, candidates=inputs.candidates[:m])
    _, setup, per_pick = badge_reference(sub_pool, ref_picks)
    scale = n / m
    how = "embeddings materialised" if m == n else (
        f"materialised, run on {m:,} candidates (all {n:,} would take {n * c * h * 4 / GIB:.0f} GiB), "
        f"times x {scale:.2f}")
    return {
        "ours": t_ours, "reference": (setup + per_pick * (budget - 1)) * scale,
        "reference_note": f"{how}; setup {setup:.1f} s + {per_pick:.2f} s/pick x {budget - 1}, "
                          f"measured on {ref_picks} picks, extrapolated",
        "identical": "n/a (sampled)",
    }


# ------------------------------------------------------------------------------------------------- ranked_batch

def memory_status(field: str) -> int:
    """VmRSS / VmHWM (bytes) of this process from /proc/self/status. VmHWM, the RSS high-water mark, belongs to
    this process image (ru_maxrss would carry the parent's peak over the exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def ranked_child(n: int, h: int, budget: int, n_labeled: int) -> None:
    """Run in a child process: time and peak memory of one ranked_batch select at size n."""
    inputs = make_pool(n, h, 10, n_labeled)
    get_strategy("ranked_batch").select(make_pool(200, h, 10, 10), 5, np.random.default_rng(0))  # imports torch
    before = memory_status("VmRSS")
    was_reset = reset_peak()
    _, seconds = timed(lambda: get_strategy("ranked_batch").select(inputs, budget, np.random.default_rng(0)))
    print(json.dumps({"seconds": seconds, "peak_delta": memory_status("VmHWM") - before, "exact": was_reset,
                      "inputs_bytes": inputs.features.nbytes + inputs.probs.nbytes}))


class FixedClassifier:
    """What modAL's uncertainty_batch_sampling reads: predict_proba, X_training, on_transformed."""

    on_transformed = False

    def __init__(self, candidate_probs: np.ndarray, x_training: np.ndarray) -> None:
        self.candidate_probs = candidate_probs
        self.X_training = x_training

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.candidate_probs


def bench_ranked_vs_modal(h: int) -> dict[str, Any]:
    from modAL.batch import uncertainty_batch_sampling

    inputs = make_pool(10_000, h, 10, 100, seed=1)
    budget = 100
    ours, t_ours = timed(lambda: get_strategy("ranked_batch").select(inputs, budget, np.random.default_rng(0)))
    classifier = FixedClassifier(inputs.probs[inputs.candidates], inputs.features[inputs.labeled])
    (index, _), t_modal = timed(lambda: uncertainty_batch_sampling(
        classifier, inputs.features[inputs.candidates], n_instances=budget))
    modal = inputs.candidates[index].tolist()
    return {"ours": t_ours, "modal": t_modal,
            "identical": same(ours.positions.tolist(), modal)}


# --------------------------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="N = 20,000, B = 200 (a smoke run)")
    parser.add_argument("--ranked-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n, args.budget, args.labeled = 20_000, 200, 200
    if args.ranked_child:
        ranked_child(args.n, args.dim, args.budget, args.labeled)
        return

    import torch

    started = time.perf_counter()
    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; N = {args.n:,}, h = {args.dim}, "
          f"B = {args.budget}, |L| = {args.labeled}; one run per figure\n")
    header = f"{'strategy':<10} {'C':>4} {'ours (s)':>9} {'reference (s)':>14} {'ratio':>7}  picks identical"
    print(header)
    print("-" * len(header))
    notes = []
    rows = []
    for c in (10, 100):
        inputs = make_pool(args.n, args.dim, c, args.labeled)
        if c == 10:
            rows.append(("coreset", c, bench_coreset(inputs, args.budget, ref_picks=2)))
            print_row(*rows[-1])
        rows.append(("badge", c, bench_badge(inputs, args.budget, ref_picks=3 if c == 100 else 6)))
        print_row(*rows[-1])
        del inputs
    for name, c, row in rows:
        notes.append(f"  {name} C={c}: reference = {row['reference_note']}")
    print("\n".join(notes))

    print(f"\nranked_batch, N = {args.n:,}, h = {args.dim}, B = {args.budget}, |L| = {args.labeled} (child process):")
    child = subprocess.run([sys.executable, __file__, "--ranked-child", "--n", str(args.n), "--dim", str(args.dim),
                            "--budget", str(args.budget), "--labeled", str(args.labeled)],
                           capture_output=True, text=True, check=True)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    peak = result["peak_delta"] / GIB
    print(f"  time {result['seconds']:.1f} s; peak memory during select {peak:.2f} GiB above the RSS before it "
          f"(goal < 2 GiB: {'met' if peak < 2 else 'NOT met'}; inputs {result['inputs_bytes'] / GIB:.2f} GiB; "
          f"{'VmHWM reset before select' if result['exact'] else 'VmHWM not resettable: an upper bound'})")
    modal = bench_ranked_vs_modal(args.dim)
    print(f"ranked_batch vs modAL uncertainty_batch_sampling, N = 10,000, h = {args.dim}, |L| = 100, B = 100: "
          f"ours {modal['ours']:.2f} s, modAL {modal['modal']:.2f} s, ratio {modal['modal'] / modal['ours']:.1f}x, "
          f"same picks: {modal['identical']}")
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")


def print_row(name: str, c: int, row: dict[str, Any]) -> None:
    ratio = row["reference"] / row["ours"]
    goal = "" if ratio >= 3 else "  (below the 3x goal)"
    print(f"{name:<10} {c:>4} {row['ours']:>9.1f} {row['reference']:>14.1f} {ratio:>6.1f}x  {row['identical']}{goal}",
          flush=True)


if __name__ == "__main__":
    main()
