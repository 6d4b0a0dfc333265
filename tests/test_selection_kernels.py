"""The streaming kernels of coreset, badge and ranked_batch (learners/strategies/greedy.py) make exactly the picks
of the implementation they replaced (kept here, small: torch over a reordered copy of the candidate rows) and of a
plain numpy version, over seeds, sizes, float32 and float64, candidate subsets, blocks and ties."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from learners.strategies import StrategyInputs, get_strategy
from learners.strategies.base import top_k
from learners.strategies.greedy import CandidateRows

ROOT = Path(__file__).resolve().parent.parent


def pool(n: int, h: int, c: int, n_labeled: int, seed: int, dtype: type, grid: bool = False,
         candidates: str = "rest") -> StrategyInputs:
    """Gaussian features (or small integers on a grid: exact arithmetic, many exact ties), Dirichlet
    probabilities, the first `n_labeled` rows labeled. `candidates`: "rest" (all others, sorted), "holes" (every
    third one left out), "shuffled" (the rest in a random order), "sparse" (one in ten)."""
    r = np.random.default_rng(seed)
    features = (r.integers(0, 3, size=(n, h)) if grid else r.normal(size=(n, h))).astype(dtype)
    probs = r.dirichlet(np.ones(c), size=n).astype(dtype)
    rest = np.arange(n_labeled, n)
    chosen = {"rest": rest, "holes": rest[rest % 3 != 0], "shuffled": r.permutation(rest),
              "sparse": rest[::10]}[candidates]
    return StrategyInputs(chosen, probs=probs, features=features, penultimate=features,
                          labeled=np.arange(n_labeled), labels=r.integers(0, c, n_labeled))


# ------------------------------------------------------------------------- the replaced implementation (torch)

def torch_rows(array: np.ndarray, rows: np.ndarray, dtype: torch.dtype, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array[rows])).to(device=device, dtype=dtype)


def old_distances_to_set(x: torch.Tensor, sq: torch.Tensor, ref: torch.Tensor, reduce: str) -> torch.Tensor:
    ref_sq = (ref * ref).sum(dim=1)
    d2 = torch.addmm(ref_sq.unsqueeze(0), x, ref.T, alpha=-2).add_(sq.unsqueeze(1)).clamp_min_(0)
    return d2.amin(dim=1).sqrt_() if reduce == "min" else d2.sqrt_().sum(dim=1, dtype=torch.float64) / len(ref)


def old_distances_to_point(x: torch.Tensor, sq: torch.Tensor, j: int) -> torch.Tensor:
    return torch.mv(x, x[j]).mul_(-2).add_(sq).add_(sq[j]).clamp_min_(0).sqrt_()


def old_coreset(inputs: StrategyInputs, budget: int, rng: np.random.Generator,
                device: str = "cpu") -> tuple[list[int], list[float]]:
    g, labeled = inputs.penultimate, inputs.labeled
    dtype = torch.float64 if g.dtype == np.float64 else torch.float32
    order = inputs.candidates[rng.permutation(len(inputs.candidates))]
    x = torch_rows(g, order, dtype, device)
    sq = (x * x).sum(dim=1)
    picks, scores = [], []
    if len(labeled):
        nearest = old_distances_to_set(x, sq, torch_rows(g, labeled, dtype, device), "min")
    else:
        picks, scores = [0], [np.inf]
        nearest = old_distances_to_point(x, sq, 0)
        nearest[0] = -np.inf
    while len(picks) < budget:
        pick = int(torch.argmax(nearest))
        picks.append(pick)
        scores.append(float(nearest[pick]))
        torch.minimum(nearest, old_distances_to_point(x, sq, pick), out=nearest)
        nearest[pick] = -np.inf
    return order[picks].tolist(), scores


def old_badge(inputs: StrategyInputs, budget: int, rng: np.random.Generator,
              device: str = "cpu") -> tuple[list[int], list[float]]:
    candidates = inputs.candidates
    dtype = torch.float64 if np.float64 in (inputs.probs.dtype, inputs.penultimate.dtype) else torch.float32
    g = torch_rows(inputs.penultimate, candidates, dtype, device)
    p = torch_rows(inputs.probs, candidates, dtype, device)
    q = torch.nn.functional.one_hot(p.argmax(dim=1), p.shape[1]).to(dtype) - p
    norm_sq = (q * q).sum(dim=1) * (g * g).sum(dim=1)

    def d2_to(j: int) -> torch.Tensor:
        return (norm_sq + norm_sq[j] - 2 * (torch.mv(q, q[j]) * torch.mv(g, g[j]))).clamp_min_(0)

    n = len(candidates)
    permutation = torch.from_numpy(rng.permutation(n))
    pick = int(permutation[int(torch.argmax(norm_sq[permutation]))])
    picks, scores, chosen = [pick], [float(norm_sq[pick])], torch.zeros(n, dtype=torch.bool)
    chosen[pick] = True
    nearest_sq = d2_to(pick)
    nearest_sq[pick] = 0
    while len(picks) < budget:
        cumulative = torch.cumsum(nearest_sq, dim=0, dtype=torch.float64)
        total = float(cumulative[-1])
        if total > 0:
            target = torch.tensor([rng.random() * total], dtype=torch.float64, device=device)
            pick = int(torch.searchsorted(cumulative, target, right=True))
            if pick >= n:
                pick = int(torch.nonzero(nearest_sq).max())
        else:
            remaining = torch.nonzero(~chosen).squeeze(1)
            pick = int(remaining[rng.integers(len(remaining))])
        picks.append(pick)
        scores.append(float(nearest_sq[pick]))
        chosen[pick] = True
        torch.minimum(nearest_sq, d2_to(pick), out=nearest_sq)
        nearest_sq[pick] = 0
    return candidates[picks].tolist(), scores


def old_ranked_batch(inputs: StrategyInputs, budget: int, rng: np.random.Generator, cold_start_sample: int = 1000,
                     device: str = "cpu") -> tuple[list[int], list[float]]:
    f, labeled = inputs.features, inputs.labeled
    dtype = torch.float64 if f.dtype == np.float64 else torch.float32
    order = inputs.candidates[rng.permutation(len(inputs.candidates))]
    n = len(order)
    x = torch_rows(f, order, dtype, device)
    sq = (x * x).sum(dim=1)
    uncertainty = 1.0 - torch_rows(inputs.probs, order, torch.float64, device).amax(dim=1)
    taken = torch.zeros(n, dtype=torch.bool, device=device)
    picks, scores = [], []
    if len(labeled):
        nearest = old_distances_to_set(x, sq, torch_rows(f, labeled, dtype, device), "min")
        n_reference = len(labeled)
    else:
        reference = order
        if n > cold_start_sample:
            reference = order[np.sort(rng.choice(n, size=cold_start_sample, replace=False))]
        pick = int(torch.argmin(old_distances_to_set(x, sq, torch_rows(f, reference, dtype, device), "mean")))
        picks, scores = [pick], [float(uncertainty[pick])]
        taken[pick] = True
        nearest = old_distances_to_point(x, sq, pick)
        n_reference = 1
    first = len(picks)
    while len(picks) < budget:
        alpha = (n - (len(picks) - first)) / (n + n_reference)
        score = alpha * (1 - 1 / (1 + nearest.double())) + (1 - alpha) * uncertainty
        score.masked_fill_(taken, float("-inf"))
        pick = int(torch.argmax(score))
        picks.append(pick)
        scores.append(float(score[pick]))
        taken[pick] = True
        torch.minimum(nearest, old_distances_to_point(x, sq, pick), out=nearest)
    return order[picks].tolist(), scores


# ------------------------------------------------------------------------------------------- plain numpy

def first_best(values: np.ndarray, rank: np.ndarray) -> int:
    """Index of the largest value, ties to the smallest rank."""
    tied = np.flatnonzero(values == values.max())
    return int(tied[np.argmin(rank[tied])])


def numpy_coreset(inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> list[int]:
    """Incremental k-center on the candidates in their given order, ties by the rank in the seeded order."""
    g, candidates, labeled = inputs.penultimate, inputs.candidates, inputs.labeled
    rank = np.argsort(rng.permutation(len(candidates)))
    x = g[candidates]
    sq = np.einsum("ij,ij->i", x, x)

    def distance_to(y: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(-2 * (x @ y) + sq + y @ y, 0))

    picks = []
    nearest = np.full(len(x), np.inf, dtype=x.dtype)
    for center in g[labeled]:
        nearest = np.minimum(nearest, distance_to(center))
    if not len(labeled):
        picks = [int(np.argmin(rank))]
        nearest = distance_to(x[picks[0]])
        nearest[picks[0]] = -np.inf
    while len(picks) < budget:
        picks.append(first_best(nearest, rank))
        nearest = np.minimum(nearest, distance_to(x[picks[-1]]))
        nearest[picks] = -np.inf
    return candidates[picks].tolist()


def numpy_badge(inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> list[int]:
    """k-means++ on the materialised gradient embeddings, the same draws from `rng`."""
    candidates = inputs.candidates
    p, g = inputs.probs[candidates].astype(np.float64), inputs.penultimate[candidates].astype(np.float64)
    q = np.eye(p.shape[1])[p.argmax(axis=1)] - p
    emb = (q[:, :, None] * g[:, None, :]).reshape(len(candidates), -1)
    rank = np.argsort(rng.permutation(len(candidates)))
    picks = [first_best((emb ** 2).sum(axis=1), rank)]
    nearest_sq = np.full(len(candidates), np.inf)
    while len(picks) < budget:
        nearest_sq = np.minimum(nearest_sq, ((emb - emb[picks[-1]]) ** 2).sum(axis=1))
        nearest_sq[picks] = 0
        cumulative = np.cumsum(nearest_sq)
        if cumulative[-1] > 0:
            picks.append(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")))
        else:
            remaining = np.setdiff1d(np.arange(len(candidates)), picks)
            picks.append(int(remaining[rng.integers(len(remaining))]))
    return candidates[picks].tolist()


def numpy_ranked_batch(inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> list[int]:
    """modAL's rule with the running nearest distance, in float64 (labeled items given)."""
    candidates = inputs.candidates
    x = inputs.features[candidates].astype(np.float64)
    rank = np.argsort(rng.permutation(len(candidates)))
    uncertainty = 1 - inputs.probs[candidates].astype(np.float64).max(axis=1)
    reference = inputs.features[inputs.labeled].astype(np.float64)
    nearest = np.sqrt(((x[:, None, :] - reference[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    picks: list[int] = []
    n, n_reference = len(candidates), len(reference)
    while len(picks) < budget:
        alpha = (n - len(picks)) / (n + n_reference)
        score = alpha * (1 - 1 / (1 + nearest)) + (1 - alpha) * uncertainty
        score[picks] = -np.inf
        picks.append(first_best(score, rank))
        nearest = np.minimum(nearest, np.sqrt(((x - x[picks[-1]]) ** 2).sum(axis=1)))
    return candidates[picks].tolist()


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------------ the tests

CASES = [  # n, h, c, n_labeled, budget, seed, dtype, grid, candidates
    (400, 16, 4, 30, 60, 1, np.float64, False, "rest"),
    (400, 16, 4, 0, 40, 2, np.float64, False, "holes"),
    (1500, 32, 10, 100, 100, 3, np.float32, False, "rest"),
    (1500, 32, 10, 1, 80, 4, np.float32, False, "holes"),
    (900, 24, 3, 50, 70, 5, np.float32, False, "shuffled"),
    (900, 24, 3, 20, 50, 6, np.float64, False, "sparse"),
    (600, 4, 5, 10, 60, 7, np.float32, True, "rest"),       # grid: exact ties everywhere
    (600, 4, 5, 0, 60, 8, np.float64, True, "shuffled"),
]


@pytest.mark.parametrize("n, h, c, n_labeled, budget, seed, dtype, grid, candidates", CASES)
@pytest.mark.parametrize("chunk_rows", [None, 64])
def test_coreset_same_picks_as_before_and_as_numpy(n, h, c, n_labeled, budget, seed, dtype, grid, candidates,
                                                   chunk_rows) -> None:
    inputs = pool(n, h, c, n_labeled, seed, dtype, grid, candidates)
    ours = get_strategy("coreset", chunk_rows=chunk_rows).select(inputs, budget, rng(seed))
    before, before_scores = old_coreset(inputs, budget, rng(seed))
    assert ours.positions.tolist() == before
    np.testing.assert_allclose(ours.scores, before_scores, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert ours.positions.tolist() == numpy_coreset(inputs, budget, rng(seed))


@pytest.mark.parametrize("n, h, c, n_labeled, budget, seed, dtype, grid, candidates", CASES)
@pytest.mark.parametrize("chunk_rows", [None, 64])
def test_badge_same_picks_as_before_and_as_numpy(n, h, c, n_labeled, budget, seed, dtype, grid, candidates,
                                                 chunk_rows) -> None:
    inputs = pool(n, h, c, n_labeled, seed, dtype, grid, candidates)
    ours = get_strategy("badge", chunk_rows=chunk_rows).select(inputs, budget, rng(seed))
    before, before_scores = old_badge(inputs, budget, rng(seed))
    assert ours.positions.tolist() == before
    np.testing.assert_allclose(ours.scores, before_scores, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-6 if dtype == np.float32 else 1e-12)
    if dtype == np.float64 and not grid:  # the materialised embedding rounds differently from the factored form
        assert ours.positions.tolist() == numpy_badge(inputs, budget, rng(seed))


@pytest.mark.parametrize("n, h, c, n_labeled, budget, seed, dtype, grid, candidates", CASES)
@pytest.mark.parametrize("chunk_rows", [None, 64])
def test_ranked_batch_same_picks_as_before_and_as_numpy(n, h, c, n_labeled, budget, seed, dtype, grid, candidates,
                                                        chunk_rows) -> None:
    inputs = pool(n, h, c, n_labeled, seed, dtype, grid, candidates)
    strategy = get_strategy("ranked_batch", chunk_rows=chunk_rows, cold_start_sample=200)
    ours = strategy.select(inputs, budget, rng(seed))
    before, before_scores = old_ranked_batch(inputs, budget, rng(seed), cold_start_sample=200)
    assert ours.positions.tolist() == before
    np.testing.assert_allclose(ours.scores, before_scores, rtol=1e-6 if dtype == np.float32 else 1e-12)
    if n_labeled and dtype == np.float64 and not grid:
        assert ours.positions.tolist() == numpy_ranked_batch(inputs, budget, rng(seed))


def test_the_matrix_is_read_in_place_when_the_candidates_fill_their_span() -> None:
    inputs = pool(2000, 8, 3, 100, 0, np.float32, candidates="holes")
    with CandidateRows(inputs.features, inputs.candidates) as rows:
        assert np.shares_memory(rows.matrix, inputs.features)
        assert rows.is_candidate.sum() == len(inputs.candidates)
        assert rows.positions(rows.index).tolist() == inputs.candidates.tolist()
    sparse = pool(2000, 8, 3, 100, 0, np.float32, candidates="sparse")
    with CandidateRows(sparse.features, sparse.candidates) as rows:  # one in ten: a compact copy instead
        assert not np.shares_memory(rows.matrix, sparse.features) and len(rows.matrix) == len(sparse.candidates)
        assert rows.positions(rows.index).tolist() == sparse.candidates.tolist()


@pytest.mark.parametrize("name", ["coreset", "badge", "ranked_batch"])
def test_blocks_do_not_change_a_single_bit(name: str) -> None:
    # Blocks start at multiples of ROW_ALIGN rows, whatever their size and however many workers take them.
    inputs = pool(7000, 40, 6, 200, 9, np.float32, candidates="holes")
    first = get_strategy(name).select(inputs, 50, rng(1))
    for chunk in (1024, 2048, 5120):
        again = get_strategy(name, chunk_rows=chunk).select(inputs, 50, rng(1))
        assert again.positions.tolist() == first.positions.tolist()
        np.testing.assert_array_equal(again.scores, first.scores)


def test_selection_on_cpu_does_not_import_torch() -> None:
    script = (
        "import sys, numpy as np\n"
        "from learners.strategies import StrategyInputs, get_strategy\n"
        "r = np.random.default_rng(0)\n"
        "f = r.normal(size=(300, 8)).astype(np.float32); p = r.dirichlet(np.ones(3), 300).astype(np.float32)\n"
        "inputs = StrategyInputs(np.arange(20, 300), probs=p, features=f, penultimate=f, labeled=np.arange(20))\n"
        "for name in ('coreset', 'badge', 'ranked_batch'):\n"
        "    assert len(get_strategy(name).select(inputs, 10, np.random.default_rng(0))) == 10\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name, old", [("coreset", old_coreset), ("badge", old_badge),
                                       ("ranked_batch", old_ranked_batch)])
@pytest.mark.parametrize("n_labeled, candidates", [(100, "rest"), (0, "holes"), (50, "shuffled")])
def test_cuda_same_picks_as_before_on_cuda(name, old, n_labeled, candidates) -> None:
    inputs = pool(4000, 32, 10, n_labeled, 11, np.float64, candidates=candidates)
    ours = get_strategy(name, device="cuda").select(inputs, 60, rng(2))
    before, before_scores = old(inputs, 60, rng(2), device="cuda")
    assert ours.positions.tolist() == before
    np.testing.assert_allclose(ours.scores, before_scores, rtol=1e-9)
    on_cpu = get_strategy(name).select(inputs, 60, rng(2))
    assert on_cpu.positions.tolist() == before


@pytest.mark.parametrize("name", ["confidence", "margin"])
@pytest.mark.parametrize("n, c, dtype, quantized, seed", [(500, 4, np.float32, False, 1), (3000, 10, np.float64, False, 2),
                                                          (2000, 1, np.float32, False, 3), (800, 5, np.float32, True, 4),
                                                          (70000, 3, np.float32, True, 5)])
def test_uncertainty_on_cpu_without_torch_same_picks_and_scores(name, n, c, dtype, quantized, seed) -> None:
    # quantized: probabilities in steps of 1/8, so many rows tie (and rows with a tied maximum have margin 0).
    r = np.random.default_rng(seed)
    probs = r.dirichlet(np.ones(c), size=n)
    probs = (np.round(probs * 8) / 8 if quantized else probs).astype(dtype)
    candidates = np.flatnonzero(r.random(n) < 0.8)
    strategy = get_strategy(name)
    ours = strategy.select(StrategyInputs(candidates, probs=probs), 150, rng(seed))
    # the torch path: scores on torch, base.top_k on torch, the same rng draws
    scores = strategy.scores(probs, candidates)
    order = top_k(scores, 150, rng(seed)).numpy()
    assert ours.positions.tolist() == candidates[order].tolist()
    np.testing.assert_array_equal(ours.scores, scores.numpy()[order])
