"""Selection side by side with its peers, against the machine's floor measured in the same run.

    .venv/bin/python benchmarks/bench_selection_peers.py [--sizes 10000,100000] [--budgets 100,1000] [--dim 512]
                                                         [--labeled 1000] [--classes 10] [--device cpu|cuda]
                                                         [--full] [--no-memory] [--peer-picks 5]

`--full` adds N = 1,000,000 (minutes per row on 2 cores). Peers (scikit-activeml: `.venv/bin/pip install -r
benchmarks/requirements.txt`; modAL) are skipped with a printed reason when not installed.

Implementations, one process, the same pool (Gaussian class clusters, float32, N x d, the first `--labeled`
positions labeled, probabilities from a noisy linear readout, C classes):
- project: `get_strategy(name, device=...)` - coreset, badge, ranked_batch, margin, entropy.
- numpy: a careful numpy version (the candidate rows as a view, OpenBLAS gemv into a preallocated vector and
  in-place updates of a running minimum; numpy's default BLAS threads).
- scikit-activeml 1.0.1: CoreSet, Badge (its gradient embeddings are materialised: N x C*d float64),
  UncertaintySampling (margin, entropy).
- modAL 0.4.2.1: uncertainty_batch_sampling (ranked batch), margin_sampling, entropy_sampling.
The slow peers (greedy ones) run in full where N B <= 10^6; above, they run `--peer-picks` and twice that many
picks, and their time at B picks is extrapolated linearly from those two (fixed cost + per-pick cost), marked "~"
(run in full after all when that estimate is at most `--peer-full-seconds`).

Floor: bytes each rule must stream / the read bandwidth measured here (the best of numpy's sum over the matrix in
worker threads, single-threaded OpenBLAS matrix-vector over row blocks in worker threads, and OpenBLAS
matrix-vector on the whole matrix on 1 and on all threads) + its matrix-matrix flops / the GEMM rate
measured here. Greedy rules read G once per pick (badge also q, N x C); coreset and ranked_batch also compute N x |L|
initial distances (2 N |L| d flops); uncertainty reads P once.
Peak memory: each call again in a child process (VmHWM reset just before the call, minus the RSS before it), with
min(B, 20) picks (peaks are reached in the first picks), as a multiple of the feature matrix.
Timings: one run each for greedy rules, median of 5 for uncertainty. The machine may be shared: the load average
is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from learners.cpu import usable_cpus  # noqa: E402
from learners.strategies import StrategyInputs, get_strategy  # noqa: E402

GREEDY = ("coreset", "badge", "ranked_batch")
UNCERTAINTY = ("margin", "entropy")
MIB = 2**20


def make_pool(n: int, d: int, c: int, n_labeled: int, seed: int = 0) -> StrategyInputs:
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=0.5, size=(c, d)).astype(np.float32)
    readout = means.T / np.sqrt(d)
    labels = rng.integers(0, c, size=n)
    features = np.empty((n, d), dtype=np.float32)
    probs = np.empty((n, c), dtype=np.float32)
    for start in range(0, n, 20_000):
        rows = slice(start, min(n, start + 20_000))
        features[rows] = means[labels[rows]] + rng.standard_normal((rows.stop - start, d), dtype=np.float32)
        logits = features[rows] @ readout + rng.normal(scale=2.0, size=(rows.stop - start, c)).astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=probs[rows])
        probs[rows] /= probs[rows].sum(axis=1, keepdims=True)
    return StrategyInputs(np.arange(n_labeled, n), probs=probs, features=features, penultimate=features,
                          labeled=np.arange(n_labeled), labels=labels[:n_labeled])


# --------------------------------------------------------------------------------------- careful numpy versions

def numpy_nearest_to_labeled(x: np.ndarray, sq: np.ndarray, ref: np.ndarray) -> np.ndarray:
    ref_sq = np.einsum("ij,ij->i", ref, ref)
    out = np.empty(len(x), dtype=x.dtype)
    for start in range(0, len(x), 8192):
        d2 = x[start:start + 8192] @ ref.T
        d2 *= -2
        d2 += ref_sq
        d2 += sq[start:start + 8192, None]
        out[start:start + 8192] = np.sqrt(np.maximum(d2.min(axis=1), 0))
    return out


def numpy_coreset(inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> np.ndarray:
    lo = inputs.candidates[0]
    x = inputs.penultimate[lo:]  # the candidates are the rows after the labeled ones: a view
    sq = np.einsum("ij,ij->i", x, x)
    nearest = numpy_nearest_to_labeled(x, sq, inputs.penultimate[inputs.labeled])
    d = np.empty_like(nearest)
    picks = np.empty(budget, dtype=np.int64)
    for step in range(budget):
        pick = int(np.argmax(nearest))
        picks[step] = pick
        np.matmul(x, x[pick], out=d)
        d *= -2
        d += sq
        d += sq[pick]
        np.maximum(d, 0, out=d)
        np.sqrt(d, out=d)
        np.minimum(nearest, d, out=nearest)
        nearest[pick] = -np.inf
    return picks + lo


def numpy_badge(inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> np.ndarray:
    lo = inputs.candidates[0]
    g, p = inputs.penultimate[lo:], inputs.probs[lo:]
    q = -p
    q[np.arange(len(q)), p.argmax(axis=1)] += 1
    norm_sq = np.einsum("ij,ij->i", q, q) * np.einsum("ij,ij->i", g, g)
    pick = int(np.argmax(norm_sq))
    nearest = np.full(len(g), np.inf, dtype=np.float32)
    qq, gg = np.empty_like(nearest), np.empty_like(nearest)
    picks = [pick]
    while True:
        np.matmul(q, q[pick], out=qq)
        np.matmul(g, g[pick], out=gg)
        qq *= gg
        qq *= -2
        qq += norm_sq
        qq += norm_sq[pick]
        np.maximum(qq, 0, out=qq)
        np.minimum(nearest, qq, out=nearest)
        nearest[pick] = 0
        if len(picks) == budget:
            return np.array(picks) + lo
        cumulative = np.cumsum(nearest, dtype=np.float64)
        pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        picks.append(min(pick, len(g) - 1))


def numpy_ranked_batch(inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> np.ndarray:
    lo = inputs.candidates[0]
    x = inputs.features[lo:]
    sq = np.einsum("ij,ij->i", x, x)
    nearest = numpy_nearest_to_labeled(x, sq, inputs.features[inputs.labeled])
    uncertainty = 1.0 - inputs.probs[lo:].max(axis=1).astype(np.float64)
    taken = np.zeros(len(x), dtype=bool)
    d = np.empty_like(nearest)
    score = np.empty(len(x))
    picks = np.empty(budget, dtype=np.int64)
    n, n_labeled = len(x), len(inputs.labeled)
    for step in range(budget):
        alpha = (n - step) / (n + n_labeled)
        np.add(nearest, 1.0, out=score)
        np.divide(alpha, score, out=score)
        np.subtract(alpha, score, out=score)  # alpha (1 - 1 / (1 + d))
        score += (1 - alpha) * uncertainty
        score[taken] = -np.inf
        pick = int(np.argmax(score))
        picks[step], taken[pick] = pick, True
        np.matmul(x, x[pick], out=d)
        d *= -2
        d += sq
        d += sq[pick]
        np.maximum(d, 0, out=d)
        np.sqrt(d, out=d)
        np.minimum(nearest, d, out=nearest)
    return picks + lo


def numpy_margin(inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> np.ndarray:
    p = inputs.probs[inputs.candidates[0]:]
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    score = 1.0 - (top2[:, 1] - top2[:, 0]).astype(np.float64)
    best = np.argpartition(-score, budget - 1)[:budget]
    return inputs.candidates[best[np.argsort(-score[best])]]


def numpy_entropy(inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> np.ndarray:
    p = inputs.probs[inputs.candidates[0]:]
    score = -np.einsum("ij,ij->i", p, np.log(np.maximum(p, 1e-12)))
    best = np.argpartition(-score, budget - 1)[:budget]
    return inputs.candidates[best[np.argsort(-score[best])]]


NUMPY = {"coreset": numpy_coreset, "badge": numpy_badge, "ranked_batch": numpy_ranked_batch,
         "margin": numpy_margin, "entropy": numpy_entropy}


# ------------------------------------------------------------------------------------------------------ peers

class ModalClassifier:
    """What modAL reads: predict_proba on the candidates' rows (in order) and X_training."""

    on_transformed = False

    def __init__(self, probs: np.ndarray, x_training: np.ndarray | None) -> None:
        self.probs, self.X_training = probs, x_training

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.probs


def modal_runner(name: str) -> tuple[Callable | None, str]:
    try:
        from modAL.batch import uncertainty_batch_sampling
        from modAL.uncertainty import entropy_sampling, margin_sampling
    except ImportError as error:
        return None, f"modAL not installed ({error})"
    candidates_of = lambda inputs: inputs.candidates  # noqa: E731

    def run(inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> np.ndarray:
        cand = candidates_of(inputs)
        x = inputs.features[cand[0]:]
        probs = inputs.probs[cand[0]:]
        if name == "ranked_batch":
            clf = ModalClassifier(probs, inputs.features[inputs.labeled])
            index, _ = uncertainty_batch_sampling(clf, x, n_instances=budget)
        else:
            index, _ = {"margin": margin_sampling, "entropy": entropy_sampling}[name](
                ModalClassifier(probs, None), x, n_instances=budget)
        return cand[np.asarray(index)]

    if name not in ("ranked_batch", "margin", "entropy"):
        return None, "modAL has no such query function"
    return run, ""


def skactiveml_runner(name: str) -> tuple[Callable | None, str]:
    try:
        from skactiveml.base import SkactivemlClassifier
        from skactiveml.pool import Badge, CoreSet, UncertaintySampling
    except ImportError as error:
        return None, f"scikit-activeml not installed ({error}): pip install -r benchmarks/requirements.txt"
    if name == "ranked_batch":
        return None, "scikit-activeml has no ranked batch"

    class Fixed(SkactivemlClassifier):
        """Fixed probabilities, looked up by the row index carried in X's last column; embeddings: the features."""

        def __init__(self, probs=None, features=None, classes=None, missing_label=np.nan, random_state=None):
            super().__init__(classes=classes, missing_label=missing_label, random_state=random_state)
            self.probs, self.features = probs, features

        def fit(self, X, y, sample_weight=None):
            return self

        def predict_proba(self, X, return_embeddings=False):
            rows = X[:, -1].astype(np.int64)
            return (self.probs[rows], self.features[rows]) if return_embeddings else self.probs[rows]

    def run(inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> np.ndarray:
        n = len(inputs.features)
        y = np.full(n, np.nan)
        y[inputs.labeled] = inputs.labels
        c = inputs.probs.shape[1]
        clf = Fixed(inputs.probs, inputs.features, classes=np.arange(c))
        if name == "coreset":
            return CoreSet(random_state=0).query(inputs.features, y, batch_size=budget)
        x = np.column_stack([np.zeros((n, 1), dtype=np.float32), np.arange(n, dtype=np.float32)])
        if name == "badge":
            return Badge(clf_embedding_flag_name="return_embeddings", random_state=0).query(
                x, y, clf, fit_clf=False, batch_size=budget)
        method = {"margin": "margin_sampling", "entropy": "entropy"}[name]
        return UncertaintySampling(method=method, random_state=0).query(x, y, clf, fit_clf=False, batch_size=budget)

    return run, ""


def implementation(impl: str, name: str, device: str) -> tuple[Callable | None, str]:
    if impl == "project":
        strategy = get_strategy(name, device=device)
        return (lambda inputs, budget, rng: strategy.select(inputs, budget, rng).positions), ""
    if impl == "numpy":
        return NUMPY[name], ""
    return (modal_runner if impl == "modAL" else skactiveml_runner)(name)


IMPLEMENTATIONS = ("project", "numpy", "scikit-activeml", "modAL")
SLOW_PEERS = ("scikit-activeml", "modAL")


# ------------------------------------------------------------------------------------------------------ floor

def read_bandwidth(matrix: np.ndarray) -> float:
    """Bytes/s: the best of numpy's sum over row blocks in worker threads, single-threaded OpenBLAS gemv over row
    blocks in worker threads, and OpenBLAS gemv on the whole matrix (1 and all threads)."""
    blocks = [(s, min(len(matrix), s + 16384)) for s in range(0, len(matrix), 16384)]
    vector = np.ones(matrix.shape[1], dtype=matrix.dtype)
    out = np.empty(len(matrix), dtype=matrix.dtype)

    def threaded_sum() -> None:
        with ThreadPoolExecutor(usable_cpus()) as pool:
            list(pool.map(lambda b: matrix[b[0]:b[1]].sum(), blocks))

    def threaded_gemv() -> None:  # single-threaded OpenBLAS gemv on row blocks, one worker thread per CPU
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(usable_cpus()) as pool:
            list(pool.map(lambda b: np.matmul(matrix[b[0]:b[1]], vector, out=out[b[0]:b[1]]), blocks))

    candidates = [threaded_sum, threaded_gemv]
    for threads in (1, usable_cpus()):
        def gemv(threads: int = threads) -> None:
            with threadpool_limits(threads, user_api="blas"):
                np.matmul(matrix, vector, out=out)
        candidates.append(gemv)
    return max(matrix.nbytes / best_of(fn, 5) for fn in candidates)


def gemm_rate(d: int) -> float:
    """Flop/s of a (8192 x d) @ (d x 1000) float32 product (numpy's default BLAS threads)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8192, d), dtype=np.float32)
    b = rng.standard_normal((d, 1000), dtype=np.float32)
    return 2 * 8192 * d * 1000 / best_of(lambda: a @ b, 3)


def device_floor(matrix: np.ndarray, device: str) -> tuple[float, float]:
    """(read bytes/s, GEMM flop/s) on a torch device: a sum over the matrix there, a float32 product there."""
    import torch

    x = torch.from_numpy(matrix).to(device)
    a, b = x[:8192].contiguous(), torch.randn(matrix.shape[1], 1000, device=device)

    def synced(fn: Callable[[], Any]) -> Callable[[], None]:
        return lambda: (fn(), torch.cuda.synchronize())

    bandwidth = x.numel() * x.element_size() / best_of(synced(lambda: x.sum()), 5)
    flops = 2 * 8192 * matrix.shape[1] * 1000 / best_of(synced(lambda: a @ b), 5)
    return bandwidth, flops


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    return min(timed(fn)[1] for _ in range(repeats))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def floor_seconds(name: str, inputs: StrategyInputs, budget: int, bandwidth: float, flops: float) -> float:
    n_cand, d = len(inputs.candidates), inputs.features.shape[1]
    g_bytes = n_cand * d * 4
    if name in UNCERTAINTY:
        return n_cand * inputs.probs.shape[1] * 4 / bandwidth
    if name == "badge":
        return budget * (g_bytes + n_cand * inputs.probs.shape[1] * 4) / bandwidth
    return budget * g_bytes / bandwidth + 2 * n_cand * len(inputs.labeled) * d / flops


# ----------------------------------------------------------------------------------------------------- memory

def memory_status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args: argparse.Namespace) -> None:
    """One call in this (child) process: print its peak memory above the RSS before it."""
    inputs = make_pool(args.n, args.dim, args.classes, args.labeled)
    run, _ = implementation(args.impl, args.name, args.device)
    run(inputs, 2, np.random.default_rng(0))  # imports and first-call setup outside the measure
    before = memory_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS
    run(inputs, args.budget, np.random.default_rng(0))
    print(json.dumps({"peak_delta": memory_status("VmHWM") - before, "matrix": inputs.features.nbytes}))


def peak_memory(impl: str, name: str, n: int, budget: int, args: argparse.Namespace) -> str:
    command = [sys.executable, __file__, "--child", "--impl", impl, "--name", name, "--n", str(n),
               "--budget", str(budget), "--dim", str(args.dim), "--classes", str(args.classes),
               "--labeled", str(args.labeled), "--device", args.device]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        return "failed: " + done.stderr.strip().splitlines()[-1][:60]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return f"{result['peak_delta'] / MIB:.0f} MiB ({1 + result['peak_delta'] / result['matrix']:.2f}x)"


# -------------------------------------------------------------------------------------------------------- main

def environment() -> None:
    print(f"load average {os.getloadavg()}, usable CPUs {usable_cpus()}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    for lib in threadpool_info():
        print(f"  {lib['user_api']}: {lib['internal_api']} {lib.get('version')} {lib.get('architecture', '')} "
              f"threads={lib['num_threads']} ({Path(lib['filepath']).name})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--budgets", default="100,1000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strategies", default=",".join(GREEDY + UNCERTAINTY))
    parser.add_argument("--full", action="store_true", help="add N = 1,000,000")
    parser.add_argument("--no-memory", action="store_true", help="skip the child processes measuring peak memory")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--peer-picks", type=int, default=5)
    parser.add_argument("--peer-full-seconds", type=float, default=90,
                        help="run a slow peer in full when its extrapolated time is at most this")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.full else [])
    budgets = [int(b) for b in args.budgets.split(",")]
    names = args.strategies.split(",")
    environment()
    impls = [impl for impl in IMPLEMENTATIONS if not (args.no_peers and impl in SLOW_PEERS)]
    if args.device != "cpu":
        import torch

        torch.zeros(1, device=args.device)  # start the device's context before any timed call
        impls = ["project"]  # the peers and the numpy version run on CPU only
    for impl in impls:
        for name in names:
            run, why = implementation(impl, name, args.device)
            if run is None and impl != "numpy":
                print(f"skip {impl} {name}: {why}")
    for n in sizes:
        inputs = make_pool(n, args.dim, args.classes, args.labeled)
        if args.device == "cpu":
            bandwidth, flops = read_bandwidth(inputs.features), gemm_rate(args.dim)
        else:
            bandwidth, flops = device_floor(inputs.features, args.device)
        print(f"\nN = {n:,}, d = {args.dim}, |L| = {args.labeled}, C = {args.classes}: matrix "
              f"{inputs.features.nbytes / MIB:.0f} MiB; read {bandwidth / 1e9:.1f} GB/s, GEMM {flops / 1e9:.0f} GFLOP/s; "
              f"load {os.getloadavg()[0]:.2f}")
        print(f"{'strategy':<13}{'B':>6} {'floor s':>9} " + "".join(f"{impl:>17}" for impl in impls)
              + "   project/floor  project/best-peer")
        for name in names:
            for budget in budgets if name in GREEDY else budgets[-1:]:
                times: dict[str, str] = {}
                seconds: dict[str, float] = {}
                for impl in impls:
                    run, _ = implementation(impl, name, args.device)
                    if run is None:
                        times[impl] = "-"
                        continue
                    try:
                        if name in GREEDY and impl in SLOW_PEERS and n * budget > 10**6:
                            k1, k2 = args.peer_picks, 2 * args.peer_picks
                            t1 = timed(lambda: run(inputs, k1, np.random.default_rng(0)))[1]
                            t2 = timed(lambda: run(inputs, k2, np.random.default_rng(0)))[1]
                            per_pick = max(0.0, t2 - t1) / (k2 - k1)  # noise can make t2 < t1
                            seconds[impl] = max(t2, t1 + per_pick * (budget - k1))
                            times[impl] = f"~{seconds[impl]:.3g} s"
                            if seconds[impl] <= args.peer_full_seconds:  # affordable: measure it instead
                                seconds[impl] = timed(lambda: run(inputs, budget, np.random.default_rng(0)))[1]
                                times[impl] = f"{seconds[impl]:.3g} s"
                        elif name in GREEDY:
                            seconds[impl] = timed(lambda: run(inputs, budget, np.random.default_rng(0)))[1]
                            times[impl] = f"{seconds[impl]:.3g} s"
                        else:
                            run(inputs, budget, np.random.default_rng(0))
                            runs = [timed(lambda: run(inputs, budget, np.random.default_rng(i)))[1] for i in range(5)]
                            seconds[impl] = float(np.median(runs))
                            times[impl] = f"{seconds[impl] * 1e3:.3g} ms"
                    except MemoryError:
                        times[impl] = "out of memory"
                floor = floor_seconds(name, inputs, budget, bandwidth, flops)
                peers = [seconds[i] for i in SLOW_PEERS if i in seconds]
                ratio_floor = f"{seconds['project'] / floor:.2f}" if "project" in seconds else "-"
                ratio_peer = f"{seconds['project'] / min(peers):.3f}" if peers and "project" in seconds else "-"
                print(f"{name:<13}{budget:>6} {floor:>9.3g} " + "".join(f"{times[i]:>17}" for i in impls)
                      + f"   {ratio_floor:>13}  {ratio_peer:>17}", flush=True)
        if args.no_memory:
            continue
        print("peak memory per call above the RSS before it (x: peak / feature matrix, counting the matrix)")
        for name in names:
            row = []
            for impl in impls:
                run, _ = implementation(impl, name, args.device)
                big = impl == "scikit-activeml" and name == "badge" and n * args.classes * args.dim * 16 > 4 * 2**30
                row.append("-" if run is None else "skipped (> 4 GiB)" if big
                           else peak_memory(impl, name, n, min(budgets[-1], 20), args))
            print(f"  {name:<13}" + "".join(f"{impl}: {cell:<24}" for impl, cell in zip(impls, row)), flush=True)


if __name__ == "__main__":
    main()
