"""`galaxy`, `direct` (sequential) and `bait`: hand-checked pools, the ask / web-UI protocols, seeds, candidate
rules, cold start, and BAIT against a dense brute-force evaluation of its objective."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

from learners.strategies import StrategyInputs, get_strategy
from learners.strategies.direct import agreement, threshold_pick
from learners.strategies.galaxy import CANDIDATE, LABELED, galaxy_pick, line_score

ALL = ["galaxy", "direct", "bait"]
SEQUENTIAL = ["galaxy", "direct"]
C, L = CANDIDATE, LABELED


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_pool(n: int, classes: int, seed: int, hidden: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels, Dirichlet probs, Gaussian penultimate features): no ties between different items."""
    g = np.random.default_rng(seed)
    return g.integers(classes, size=n), g.dirichlet(np.ones(classes), size=n), g.normal(size=(n, hidden))


def pool_inputs(n: int = 60, classes: int = 4, labeled: int = 12, seed: int = 1,
                step: int = 0) -> tuple[StrategyInputs, np.ndarray]:
    truth, probs, feats = random_pool(n, classes, seed)
    lab = np.arange(labeled)
    return StrategyInputs(np.arange(labeled, n), probs=probs, penultimate=feats, labeled=lab, labels=truth[lab],
                          step=step), truth


class Oracle:
    """ask(position) -> true label, recording every question."""

    def __init__(self, truth: np.ndarray) -> None:
        self.truth = truth
        self.asked: list[int] = []

    def __call__(self, position: int) -> int:
        self.asked.append(position)
        return int(self.truth[position])


# Nine items, two classes, P[i] = (0.9 - 0.1 i, 0.1 + 0.1 i): margin_0 = 2 P0 - 1 falls with i, so the class-0
# line is items 0..8 and the class-1 line is the same line reversed. Every run below has odd length, so the
# middle is the same item from both ends and the answers do not depend on which class a pick uses.
NINE = np.stack([0.9 - 0.1 * np.arange(9), 0.1 + 0.1 * np.arange(9)], axis=1)
NINE_TRUTH = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])  # the class boundary lies between items 3 and 4


def nine(candidates: list[int], labeled: dict[int, int], step: int = 0) -> StrategyInputs:
    return StrategyInputs(np.array(candidates), probs=NINE, labeled=np.array(list(labeled), dtype=np.int64),
                          labels=np.array(list(labeled.values()), dtype=np.int64), step=step)


# ---------------------------------------------------------------------------------------------- galaxy


def test_galaxy_pick_rules_on_a_line() -> None:
    # line:  0:L(y=1) 1 2 3 4:L(y=0) 5 6:L(y=1) 7 8 9:L(y=0)
    # runs between labeled items with different y: {1,2,3} (3), {5} (1), {7,8} (2) -> the shortest is {5}
    status = np.array([L, C, C, C, L, C, L, C, C, L])
    assert galaxy_pick(status, np.array([1, 0, 1, 0]) == 1, rng()) == (5, "bisection")
    # a run of 3 between y=1 and y=0 -> its middle (index 2); the run {5, 6} lies between two y=0 items: ignored
    status = np.array([L, C, C, C, L, C, C, L])
    assert galaxy_pick(status, np.array([1, 0, 0]) == 1, rng()) == (2, "bisection")
    # line: 0:L(1) 1:L(0) 2 3 4:L(0) 5. The only 0/1 boundary (0|1) has no candidate between, so take the
    # candidate nearest to it: index 2 (distance 2 - 1 = 1); nothing lies left of it
    status = np.array([L, L, C, C, L, C])
    assert galaxy_pick(status, np.array([1, 0, 0]) == 1, rng()) == (2, "boundary")
    # line: 0 1 2:L(1) 3:L(0) 4:L(0) 5. Boundary 2|3: candidate 1 at distance 2 - 1 = 1, candidate 5 at
    # distance 5 - 3 = 2 -> index 1
    status = np.array([C, C, L, L, L, C])
    assert galaxy_pick(status, np.array([1, 0, 0]) == 1, rng()) == (1, "boundary")
    # all labeled items share y: a random candidate
    status = np.array([C, L, C, L, C])
    at, kind = galaxy_pick(status, np.array([0, 0]) == 1, rng())
    assert kind == "random" and status[at] == C


def test_galaxy_shortest_run_ties_follow_the_seed() -> None:
    # two runs of one candidate each, (1) and (3): either may be picked, the seed decides
    status = np.array([L, C, L, C, L])
    y = np.array([1, 0, 1]) == 1
    picks = {galaxy_pick(status, y, rng(seed))[0] for seed in range(20)}
    assert picks == {1, 3}


def test_galaxy_simulation_hand_checked() -> None:
    """Labeled: item 0 (class 0), item 8 (class 1); truth: items 0-3 class 0, 4-8 class 1.
    pick 1: the run 1..7 between them -> middle item 4 (class 1)
    pick 2: the run 1..3 between item 0 (y0=1) and item 4 (y0=0) -> item 2 (class 0)
    pick 3: the run {3} between item 2 and item 4 -> item 3 (class 0)
    pick 4: no run left between different labels; the boundary 3|4 has candidates 1 (distance 2) and 5
            (distance 1) -> item 5."""
    oracle = Oracle(NINE_TRUTH)
    picks = get_strategy("galaxy").select(nine([1, 2, 3, 4, 5, 6, 7], {0: 0, 8: 1}), 4, rng(), ask=oracle)
    assert picks.positions.tolist() == [4, 2, 3, 5]
    assert oracle.asked == [4, 2, 3, 5]  # once per pick, only picked positions
    assert picks.arms == ["galaxy"] * 4
    assert picks.note == "galaxy: 3 bisection, 1 boundary"
    # class cycle for seed 0, C = 2 is [0, 1]: scores are margin_k = P_k - max P + 1e-8 max P of the picks,
    # margin_0(4) = 0.5e-8, margin_1(2) = 0.3 - 0.7 + 0.7e-8, margin_0(3) = 0.6e-8, margin_1(5) = 0.6e-8
    np.testing.assert_allclose(picks.scores, [0.5e-8, -0.4 + 0.7e-8, 0.6e-8, 0.6e-8], rtol=1e-9, atol=1e-15)


def test_galaxy_web_ui_calls_give_the_same_picks_as_the_simulation() -> None:
    labeled = {0: 0, 8: 1}
    picks = []
    for step in range(4):  # after each human label the app asks for one more pick, with step = picks so far
        candidates = [i for i in range(9) if i not in labeled]
        pick = int(get_strategy("galaxy").select(nine(candidates, labeled, step), 1, rng(step)).positions[0])
        picks.append(pick)
        labeled[pick] = int(NINE_TRUTH[pick])
    assert picks == [4, 2, 3, 5]


def test_galaxy_without_ask_earlier_picks_are_taken_not_labeled() -> None:
    """Budget 3, no ask. pick 1: item 4. It is taken: the class-1 line (cycle [0, 1], t = 1) is now
    8(y1=1) 7 6 5 3 2 1 0(y1=0), run of 6 between positions 0 and 7 -> position 3 = item 5. Then the class-0 line
    0(y0=1) 1 2 3 6 7 8(y0=0), run between positions 0 and 6 -> position 3 = item 3."""
    inputs = nine([1, 2, 3, 4, 5, 6, 7], {0: 0, 8: 1})
    assert get_strategy("galaxy").select(inputs, 3, rng()).positions.tolist() == [4, 5, 3]
    # the app's way: queued items leave the candidates and `step` continues the class cycle
    assert get_strategy("galaxy").select(nine([1, 2, 3, 5, 6, 7], {0: 0, 8: 1}, step=1), 1, rng()).positions[0] == 5
    assert get_strategy("galaxy").select(nine([1, 2, 3, 6, 7], {0: 0, 8: 1}, step=2), 1, rng()).positions[0] == 3


@pytest.mark.parametrize("seed, expected_cycle", [(0, [2, 0, 1, 3]), (3, [3, 2, 1, 0])])
def test_galaxy_step_continues_the_seeded_class_cycle(seed: int, expected_cycle: list[int]) -> None:
    """np.random.default_rng(seed).permutation(4) is the cycle; pick s of a round uses cycle[s % 4]. Each pick's
    score is margin_k on its class line (`line_score`), which (Dirichlet probs) identifies k."""
    inputs, truth = pool_inputs(n=80, classes=4, labeled=16)
    labeled, labels = inputs.labeled.tolist(), inputs.labels.tolist()
    strategy = get_strategy("galaxy", seed=seed)
    used = []
    for step in range(8):
        candidates = np.setdiff1d(np.arange(80), labeled)
        call = StrategyInputs(candidates, probs=inputs.probs, labeled=np.array(labeled), labels=np.array(labels),
                              step=step)
        sel = strategy.select(call, 1, rng(step))
        p = inputs.probs[sel.positions[0]]
        used.append(int(np.argmin(np.abs(line_score(p, p.max()) - sel.scores[0]))))
        labeled.append(int(sel.positions[0]))
        labels.append(int(truth[sel.positions[0]]))
    assert used == expected_cycle * 2


# ---------------------------------------------------------------------------------------------- direct


def test_direct_agreement_and_threshold_walk() -> None:
    # labeled y = 1, 1, 0 at positions 0, 1, 3 of a 5-item line: w = +1 +1 . -1 .
    # agreement(t) = sum(w before t) - sum(w from t), t = 0..5: [-1, 1, 3, 3, 1, 1]
    status = np.array([L, L, C, L, C])
    assert agreement(status, np.array([1, 1, 0]) == 1).tolist() == [-1, 1, 3, 3, 1, 1]
    # line L L c c c c L L, best threshold t* = 4: the nearest free items alternate left, right, left, right
    status = np.array([L, L, C, C, C, C, L, L])
    walk = []
    for _ in range(4):
        at = threshold_pick(status, np.array([4]))
        walk.append(at)
        status[at] = L
    assert walk == [3, 4, 2, 5]


# 21 items, two classes, P[i] = (1 - i/20, i/20): the class-0 line is items 0..20, the class-1 line 20..0.
# Labeled class 0: 0, 1, 2, 4, 6 and (label noise) class 1: 3; class 1: 13, 16, 20.
# Class 1 has fewer labels (4 < 5), so it goes first. On its line (item 20 first) the agreement
# sum(w before t) - sum(w from t) is largest (7) for t = 8..14, i.e. between items 13 and 6: the version space is
# items 12..7 (all candidates). The noisy label at item 3 does not widen it, as a strict "labeled-k prefix /
# labeled-not-k suffix" interval would (it would run from item 13 down to item 3).
# Threshold pick: t* = the middle best threshold, 11 (between items 10 and 9); items 10 (left, distance 1) and
# 9 (right, distance 1) tie -> left: item 10.
TWENTY_ONE = np.stack([1 - np.arange(21) / 20, np.arange(21) / 20], axis=1)
NOISY_LABELS = {0: 0, 1: 0, 2: 0, 4: 0, 6: 0, 3: 1, 13: 1, 16: 1, 20: 1}


def twenty_one(step: int) -> StrategyInputs:
    candidates = [i for i in range(21) if i not in NOISY_LABELS]
    return StrategyInputs(np.array(candidates), probs=TWENTY_ONE, labeled=np.array(list(NOISY_LABELS)),
                          labels=np.array(list(NOISY_LABELS.values())), step=step)


def test_direct_version_space_ignores_a_noisy_label() -> None:
    picks = {int(get_strategy("direct").select(twenty_one(step=0), 1, rng(seed)).positions[0]) for seed in range(40)}
    assert picks == {7, 8, 9, 10, 11, 12}  # uniform over the version space, never item 5 (left of item 6)


def test_direct_threshold_pick_hand_checked() -> None:
    sel = get_strategy("direct").select(twenty_one(step=1), 1, rng())
    assert sel.positions.tolist() == [10]
    assert sel.note == "direct: 1 threshold"
    np.testing.assert_allclose(sel.scores, [0.5e-8], rtol=1e-9)  # margin_1 of item 10, P = (0.5, 0.5): 1e-8 max P


def test_direct_alternates_phases_and_favours_the_least_labeled_class() -> None:
    """Two classes, class 1 far rarer in the labels: visits go class 1 (picks 0-1), class 0 (2-3), ...;
    even picks reduce the version space, odd ones label around the threshold."""
    truth, probs, _ = random_pool(200, 2, seed=5)
    lab = np.concatenate([np.flatnonzero(truth == 0)[:20], np.flatnonzero(truth == 1)[:2]])
    inputs = StrategyInputs(np.setdiff1d(np.arange(200), lab), probs=probs, labeled=lab, labels=truth[lab])
    oracle = Oracle(truth)
    sel = get_strategy("direct").select(inputs, 6, rng(), ask=oracle)
    assert oracle.asked == sel.positions.tolist()
    p = probs[sel.positions]
    # class 1 keeps the fewest labels (2 + at most 6 < 20), so visits 0 and 2 are class 1's, visit 1 class 0's;
    # a pick's score is margin_k = P_k - max P + 1e-8 max P on that class's line
    classes = np.array([1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(sel.scores, line_score(p[np.arange(6), classes], p.max(axis=1)))
    assert sel.note == "direct: 3 threshold, 3 version-space"


# ---------------------------------------------------------------------------------------------- bait


def dense_objective(probs: np.ndarray, feats: np.ndarray, dim: int, lam: float, budget: int,
                    labeled: list[int]) -> Callable[[list[int]], float]:
    """batch -> trace((lam I + (sum over L of I_i + B sum over the batch of I_i) / (|L| + B))^-1 F), the original
    code's weighting (each batch item B times a labeled one), every matrix built densely (kron)."""
    x = feats - feats.mean(axis=0)
    _, vecs = np.linalg.eigh(x.T @ x)
    x = x @ vecs[:, ::-1][:, :dim]
    q = np.linalg.qr(np.ones((probs.shape[1], 1)), mode="complete")[0][:, 1:]
    p = probs / probs.sum(axis=1, keepdims=True)
    info = [np.kron(q.T @ (np.diag(pi) - np.outer(pi, pi)) @ q, np.outer(xi, xi)) for pi, xi in zip(p, x)]
    fisher = sum(info) / len(info)

    def objective(batch: list[int]) -> float:
        a = (lam * np.eye(len(fisher)) + sum((info[i] for i in labeled), np.zeros_like(fisher)) / (len(labeled) + budget)
             + sum((info[i] for i in batch), np.zeros_like(fisher)) * budget / (len(labeled) + budget))
        return float(np.trace(np.linalg.solve(a, fisher)))

    return objective


@pytest.mark.parametrize("seed, lam, classes, budget, labeled", [
    (0, 1.0, 3, 3, 4), (1, 0.01, 4, 2, 0), (2, 0.1, 2, 4, 6)])
def test_bait_matches_forward_backward_greedy_on_the_dense_objective(seed, lam, classes, budget, labeled) -> None:
    g = np.random.default_rng(seed)
    n, h, dim = 30, 5, 3
    probs = g.dirichlet(np.ones(classes) * 0.5, size=n)
    feats = g.normal(size=(n, h)) * g.uniform(0.2, 3, size=(n, 1))
    lab = list(range(labeled))
    cands = list(range(labeled, n))
    objective = dense_objective(probs, feats, dim, lam, budget, lab)

    batch: list[int] = []  # forward greedy to 2B, then backward to B, on the dense objective
    for _ in range(2 * budget):
        batch.append(min((c for c in cands if c not in batch), key=lambda c: objective(batch + [c])))
    while len(batch) > budget:
        batch.remove(min(batch, key=lambda b: objective([i for i in batch if i != b])))
    inputs = StrategyInputs(np.array(cands), probs=probs, penultimate=feats, labeled=np.array(lab, dtype=np.int64),
                            labels=g.integers(0, classes, size=labeled))
    picks = get_strategy("bait", dim=dim, lam=lam).select(inputs, budget, rng())
    assert sorted(picks.positions.tolist()) == sorted(batch)

# Six items on a unit circle (PCA keeps both dimensions, the mean is 0). Item 0 is labeled. Every item is
# confident, P = (.98, .01, .01), except item 2, P = (1/3, 1/3, 1/3). The Fisher information is
# (diag p - p p^T) kron x x^T: same |x| = 1 for all, but diag p - p p^T has trace 1 - sum p^2 = 0.04 for a
# confident item and 0.67 for item 2: item 2 carries ~17x more information and is BAIT's single pick.
ANGLES = np.arange(6) * np.pi / 3
CIRCLE = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)
CONFIDENT = np.tile([0.98, 0.01, 0.01], (6, 1))


def test_bait_picks_the_item_with_most_fisher_information() -> None:
    probs = CONFIDENT.copy()
    probs[2] = 1 / 3
    inputs = StrategyInputs(np.arange(1, 6), probs=probs, penultimate=CIRCLE, labeled=np.array([0]),
                            labels=np.array([0]))
    assert get_strategy("bait", dim=2).select(inputs, 1, rng()).positions.tolist() == [2]
    # Uncertainty alone is not information: with item 2's features scaled to 1% (|x|^2 = 1e-4 -> ~7e-5) and
    # item 4 three times further out with P = (.6, .3, .1) (trace .54 * |x|^2 9 -> ~4.9), item 4 wins.
    feats = CIRCLE.copy()
    feats[2] *= 0.01
    feats[4] *= 3
    probs[4] = [0.6, 0.3, 0.1]
    inputs = StrategyInputs(np.arange(1, 6), probs=probs, penultimate=feats, labeled=np.array([0]),
                            labels=np.array([0]))
    assert get_strategy("bait", dim=2).select(inputs, 1, rng()).positions.tolist() == [4]


def test_bait_refuses_a_too_large_fisher_matrix() -> None:
    truth, probs, feats = random_pool(40, 22, seed=3, hidden=40)
    inputs = StrategyInputs(np.arange(5, 40), probs=probs, penultimate=feats, labeled=np.arange(5), labels=truth[:5])
    with pytest.raises(ValueError, match=r"630 x 630 .*21 \* 30.*max_dim=600"):  # (22 - 1) * 30 = 630
        get_strategy("bait").select(inputs, 3, rng())
    with pytest.raises(ValueError, match=r"105 x 105 .*max_dim=100"):
        get_strategy("bait", dim=5, max_dim=100).select(inputs, 3, rng())
    assert len(get_strategy("bait", dim=5, max_dim=105).select(inputs, 3, rng())) == 3


def test_bait_ties_follow_the_seed() -> None:
    # identical features: after centering every x is 0, every item has zero information, all gains tie
    probs = np.full((30, 3), 1 / 3)
    inputs = StrategyInputs(np.arange(30), probs=probs, penultimate=np.ones((30, 4)), labeled=np.array([], dtype=int),
                            labels=np.array([], dtype=int))
    first = get_strategy("bait").select(inputs, 5, rng(1)).positions.tolist()
    assert first == get_strategy("bait").select(inputs, 5, rng(1)).positions.tolist()
    assert first != get_strategy("bait").select(inputs, 5, rng(2)).positions.tolist()


def test_bait_chunking_does_not_change_the_answer() -> None:
    inputs, _ = pool_inputs(n=120, classes=5, labeled=10, seed=4)
    whole = get_strategy("bait", dim=6).select(inputs, 8, rng())
    chunked = get_strategy("bait", dim=6, chunk_rows=3).select(inputs, 8, rng())
    assert whole.positions.tolist() == chunked.positions.tolist()
    np.testing.assert_allclose(whole.scores, chunked.scores, rtol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_bait_same_answer_on_cpu_and_cuda() -> None:
    inputs, _ = pool_inputs(n=400, classes=6, labeled=20, seed=6)
    cpu = get_strategy("bait", dim=8).select(inputs, 10, rng())
    cuda = get_strategy("bait", dim=8, device="cuda").select(inputs, 10, rng())
    assert cpu.positions.tolist() == cuda.positions.tolist()
    np.testing.assert_allclose(cpu.scores, cuda.scores, rtol=1e-6)


# ---------------------------------------------------------------------------------------------- all three


@pytest.mark.parametrize("name", ALL)
def test_only_candidates_and_budget_larger_than_pool(name: str) -> None:
    inputs, _ = pool_inputs(n=60, classes=4, labeled=12)
    inputs.candidates = np.random.default_rng(2).choice(np.arange(12, 60), size=20, replace=False)
    picks = get_strategy(name).select(inputs, 7, rng())
    assert len(picks) == 7 == len(set(picks.positions.tolist()))
    assert set(picks.positions.tolist()) <= set(inputs.candidates.tolist())
    everything = get_strategy(name).select(inputs, 1000, rng())
    assert sorted(everything.positions.tolist()) == sorted(inputs.candidates.tolist())
    inputs.candidates = np.array([], dtype=np.int64)
    assert len(get_strategy(name).select(inputs, 5, rng())) == 0


@pytest.mark.parametrize("name", ALL)
def test_seed_reproduces(name: str) -> None:
    inputs, truth = pool_inputs(n=80, classes=3, labeled=3)  # few labels: galaxy/direct hit random rules
    kwargs = {"ask": Oracle(truth)} if name in SEQUENTIAL else {}
    first = get_strategy(name).select(inputs, 10, rng(3), **kwargs)
    again = get_strategy(name).select(inputs, 10, rng(3), **kwargs)
    assert first.positions.tolist() == again.positions.tolist()
    np.testing.assert_array_equal(first.scores, again.scores)


@pytest.mark.parametrize("name", ALL)
def test_cold_start_falls_back_to_random_and_says_so(name: str) -> None:
    candidates = np.array([3, 8, 9, 11, 20])
    oracle = Oracle(np.zeros(30, dtype=int))
    picks = get_strategy(name).select(StrategyInputs(candidates), 3, rng(5), ask=oracle)
    assert "cold start" in picks.note and "random" in picks.note
    assert picks.arms == ["random"] * 3
    same = get_strategy("random").select(StrategyInputs(candidates), 3, rng(5))
    assert picks.positions.tolist() == same.positions.tolist()
    assert oracle.asked == []


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_ask_is_called_once_per_pick_and_only_on_picks(name: str) -> None:
    inputs, truth = pool_inputs(n=100, classes=5, labeled=20)
    oracle = Oracle(truth)
    picks = get_strategy(name).select(inputs, 15, rng(), ask=oracle)
    assert oracle.asked == picks.positions.tolist()
    assert len(set(oracle.asked)) == 15 and set(oracle.asked) <= set(inputs.candidates.tolist())


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_web_ui_protocol_never_repicks_queued_or_labeled_items(name: str) -> None:
    """Budget-1 calls with step = picks so far; every other pick is labeled at once, the rest stay queued
    (the app removes them from the candidates and never passes them as labeled)."""
    inputs, truth = pool_inputs(n=50, classes=3, labeled=6)
    labeled, labels, queued = list(inputs.labeled), list(inputs.labels), []
    for step in range(30):
        candidates = np.setdiff1d(np.arange(50), labeled + queued)
        call = StrategyInputs(candidates, probs=inputs.probs, labeled=np.array(labeled), labels=np.array(labels),
                              step=step)
        pick = int(get_strategy(name).select(call, 1, rng(step)).positions[0])
        assert pick in candidates
        if step % 2:
            queued.append(pick)
        else:
            labeled.append(pick)
            labels.append(int(truth[pick]))
    assert len(set(labeled + queued)) == len(labeled) + len(queued)


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_sequential_strategies_refuse_bad_labels(name: str) -> None:
    inputs, truth = pool_inputs(n=30, classes=3, labeled=5)
    with pytest.raises(ValueError, match="not a class"):
        get_strategy(name).select(inputs, 2, rng(), ask=lambda position: 7)
    inputs.labels = np.array([0, 1, 2, 3, 0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        get_strategy(name).select(inputs, 2, rng())
    inputs.labels = truth[:5]
    inputs.candidates = np.arange(4, 30)  # 4 is also labeled
    with pytest.raises(ValueError, match="also in 'labeled'"):
        get_strategy(name).select(inputs, 2, rng())
    inputs.candidates = np.arange(5, 30)
    inputs.probs = inputs.probs.copy()
    inputs.probs[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN .* \[7\]"):
        get_strategy(name).select(inputs, 2, rng())


def test_registry_flags() -> None:
    assert get_strategy("galaxy").sequential and get_strategy("direct").sequential
    assert not get_strategy("bait").sequential
    assert get_strategy("galaxy").needs == get_strategy("direct").needs == frozenset({"probs", "labels"})
    assert get_strategy("bait").needs == frozenset({"probs", "penultimate", "labels"})
