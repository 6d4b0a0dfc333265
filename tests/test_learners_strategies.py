"""Selection strategies: hand-checked pools, seeds, candidate rules, cold start, chunking, and agreement with modAL."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling

from learners.strategies import Selection, Strategy, StrategyInputs, available_strategies, get_strategy

ROOT = Path(__file__).resolve().parent.parent
UNCERTAINTY = ["confidence", "margin", "entropy"]

# Six items, four classes. Item 4 is labeled (not a candidate); it would win every rule if it were one.
#   item  probs                      1 - max   1 - (p1 - p2)   entropy (nats)
#   0     .97 .01 .01 .01            .03       .04             .168
#   1     .40 .20 .20 .20            .60       .80             1.332  = -(.4 ln .4 + 3 * .2 ln .2)
#   2     .36 .34 .30 .00            .64       .98             1.096
#   3     .50 .49 .01 .00            .50       .99             0.742
#   4     .30 .30 .20 .20            .70      1.00             1.366
#   5     .60 .30 .05 .05            .40       .70             0.967
SIX = np.array([
    [0.97, 0.01, 0.01, 0.01],
    [0.40, 0.20, 0.20, 0.20],
    [0.36, 0.34, 0.30, 0.00],
    [0.50, 0.49, 0.01, 0.00],
    [0.30, 0.30, 0.20, 0.20],
    [0.60, 0.30, 0.05, 0.05],
])
SIX_CANDIDATES = np.array([0, 1, 2, 3, 5])


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_probs(n: int, c: int, seed: int) -> np.ndarray:
    """Dirichlet rows: ties between different rows' scores have probability zero."""
    return np.random.default_rng(seed).dirichlet(np.ones(c), size=n)


@pytest.mark.parametrize("name, order, scores", [
    ("confidence", [2, 1, 3, 5, 0], [0.64, 0.60, 0.50, 0.40, 0.03]),
    ("margin", [3, 2, 1, 5, 0], [0.99, 0.98, 0.80, 0.70, 0.04]),
    ("entropy", [1, 2, 5, 3, 0], [1.3322, 1.0958, 0.9673, 0.7422, 0.1677]),
])
def test_six_item_pool_hand_checked(name: str, order: list[int], scores: list[float]) -> None:
    picks = get_strategy(name).select(StrategyInputs(SIX_CANDIDATES, probs=SIX), 5, rng())
    assert picks.positions.tolist() == order
    np.testing.assert_allclose(picks.scores, scores, atol=1e-4)
    assert picks.arms == [name] * 5
    assert picks.note == ""
    top2 = get_strategy(name).select(StrategyInputs(SIX_CANDIDATES, probs=SIX), 2, rng())
    assert top2.positions.tolist() == order[:2]


def test_six_item_pool_random() -> None:
    picks = get_strategy("random").select(StrategyInputs(SIX_CANDIDATES, probs=SIX), 3, rng(7))
    assert len(set(picks.positions.tolist())) == 3
    assert set(picks.positions.tolist()) <= set(SIX_CANDIDATES.tolist())
    assert picks.arms == ["random"] * 3
    assert np.all(np.diff(picks.scores) <= 0)  # best (highest random priority) first


@pytest.mark.parametrize("name", ["random", *UNCERTAINTY])
def test_seed_reproduces_and_ties_follow_the_seed(name: str) -> None:
    probs = np.full((40, 3), 1 / 3)  # every item ties with every other
    inputs = StrategyInputs(np.arange(40), probs=probs)
    strategy = get_strategy(name)
    first = strategy.select(inputs, 10, rng(3))
    again = strategy.select(inputs, 10, rng(3))
    other = strategy.select(inputs, 10, rng(4))
    assert first.positions.tolist() == again.positions.tolist()
    np.testing.assert_array_equal(first.scores, again.scores)
    assert first.positions.tolist() != other.positions.tolist()


@pytest.mark.parametrize("name", ["random", *UNCERTAINTY])
def test_only_candidates_and_budget_larger_than_pool(name: str) -> None:
    probs = random_probs(100, 5, seed=1)
    candidates = np.random.default_rng(2).choice(100, size=30, replace=False)
    picks = get_strategy(name).select(StrategyInputs(candidates, probs=probs), 10, rng())
    assert len(picks) == 10 and set(picks.positions.tolist()) <= set(candidates.tolist())
    everything = get_strategy(name).select(StrategyInputs(candidates, probs=probs), 1000, rng())
    assert sorted(everything.positions.tolist()) == sorted(candidates.tolist())
    assert get_strategy(name).select(StrategyInputs(np.array([], dtype=int), probs=probs), 5, rng()).positions.size == 0


@pytest.mark.parametrize("name", UNCERTAINTY)
def test_cold_start_falls_back_to_random_and_says_so(name: str) -> None:
    candidates = np.array([3, 8, 9, 11, 20])
    picks = get_strategy(name).select(StrategyInputs(candidates), 3, rng(5))
    assert "cold start" in picks.note and "random" in picks.note
    assert picks.arms == ["random"] * 3
    assert set(picks.positions.tolist()) <= set(candidates.tolist())
    same = get_strategy("random").select(StrategyInputs(candidates), 3, rng(5))
    assert picks.positions.tolist() == same.positions.tolist()


@pytest.mark.parametrize("name, modal_query", [
    ("confidence", uncertainty_sampling), ("margin", margin_sampling), ("entropy", entropy_sampling)])
def test_agrees_with_modal(name: str, modal_query) -> None:
    probs = random_probs(300, 6, seed=11)
    candidates = np.sort(np.random.default_rng(12).choice(300, size=200, replace=False))

    class FixedModel:  # modAL only calls predict_proba; X holds pool positions
        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            return probs[X[:, 0]]

    for n in (1, 7, 25):
        modal_idx, _ = modal_query(FixedModel(), candidates[:, None], n_instances=n)
        ours = get_strategy(name).select(StrategyInputs(candidates, probs=probs), n, rng())
        assert set(ours.positions.tolist()) == set(candidates[modal_idx].tolist())


@pytest.mark.parametrize("name", UNCERTAINTY)
def test_chunking_does_not_change_the_answer(name: str) -> None:
    probs = random_probs(5000, 10, seed=21).astype(np.float32)
    candidates = np.random.default_rng(22).permutation(5000)[:3000]
    whole = get_strategy(name, chunk_rows=10_000).select(StrategyInputs(candidates, probs=probs), 50, rng())
    chunked = get_strategy(name, chunk_rows=7).select(StrategyInputs(candidates, probs=probs), 50, rng())
    assert whole.positions.tolist() == chunked.positions.tolist()
    np.testing.assert_array_equal(whole.scores, chunked.scores)


def test_margin_of_a_tied_maximum_is_zero_gap() -> None:
    probs = np.array([[0.45, 0.45, 0.10], [0.5, 0.3, 0.2]], dtype=np.float32)
    picks = get_strategy("margin").select(StrategyInputs(np.arange(2), probs=probs), 2, rng())
    assert picks.positions.tolist() == [0, 1]
    np.testing.assert_allclose(picks.scores, [1.0, 0.8], atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", UNCERTAINTY)
def test_same_answer_on_cpu_and_cuda(name: str) -> None:
    probs = random_probs(20_000, 10, seed=31).astype(np.float32)
    candidates = np.arange(0, 20_000, 3)
    cpu = get_strategy(name).select(StrategyInputs(candidates, probs=probs), 100, rng())
    cuda = get_strategy(name, device="cuda").select(StrategyInputs(candidates, probs=probs), 100, rng())
    assert cpu.positions.tolist() == cuda.positions.tolist()
    np.testing.assert_allclose(cpu.scores, cuda.scores, rtol=1e-5)


def test_bad_inputs_are_refused() -> None:
    margin = get_strategy("margin")
    with pytest.raises(ValueError, match="duplicate"):
        margin.select(StrategyInputs(np.array([1, 1, 2]), probs=SIX), 2, rng())
    with pytest.raises(ValueError, match="lie in"):
        margin.select(StrategyInputs(np.array([0, 6]), probs=SIX), 2, rng())
    with pytest.raises(ValueError, match="budget"):
        margin.select(StrategyInputs(SIX_CANDIDATES, probs=SIX), -1, rng())
    broken = SIX.copy()
    broken[3] = np.nan
    with pytest.raises(ValueError, match=r"NaN .* \[3\]"):
        margin.select(StrategyInputs(SIX_CANDIDATES, probs=broken), 2, rng())


def test_registry() -> None:
    assert {"random", "confidence", "margin", "entropy"} <= set(available_strategies())
    strategy = get_strategy("entropy")
    assert isinstance(strategy, Strategy) and strategy.needs == frozenset({"probs"}) and not strategy.sequential
    with pytest.raises(ValueError, match="known: .*margin"):
        get_strategy("no-such-strategy")
    with pytest.raises(ValueError, match="bad parameters"):
        get_strategy("margin", temperature=2)
    with pytest.raises(ValueError):
        Selection(np.array([1, 2]), np.array([0.5]), ["margin"])


def test_listing_strategies_does_not_import_torch() -> None:
    """The web UI lists strategy names; that must not load torch."""
    code = ("import sys, learners.strategies as s; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(s.available_strategies())")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "margin" in result.stdout
