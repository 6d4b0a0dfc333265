"""coreset, badge, ranked_batch, qbc: hand-checked pools, plain numpy references, modAL, seeds, candidate rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from modAL.batch import uncertainty_batch_sampling
from modAL.disagreement import KL_max_disagreement, max_disagreement_sampling, vote_entropy

from learners.strategies import StrategyInputs, get_strategy
from learners.strategies.qbc import max_disagreement
from learners.strategies.qbc import vote_entropy as our_vote_entropy

DIVERSITY = ["coreset", "badge", "ranked_batch", "qbc"]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_pool(n: int = 300, h: int = 8, c: int = 4, n_labeled: int = 30, seed: int = 0,
                dtype: type = np.float64) -> StrategyInputs:
    """Gaussian features, Dirichlet probabilities, the first `n_labeled` items labeled, the rest candidates."""
    r = np.random.default_rng(seed)
    features = r.normal(size=(n, h)).astype(dtype)
    probs = r.dirichlet(np.ones(c), size=n).astype(dtype)
    labeled = np.arange(n_labeled)
    return StrategyInputs(np.arange(n_labeled, n), probs=probs, features=features, penultimate=features,
                          labeled=labeled, labels=r.integers(0, c, n_labeled))


# ---------------------------------------------------------------------------------------------- plain references

def coreset_reference(g: np.ndarray, candidates: np.ndarray, labeled: np.ndarray, budget: int,
                      first: int | None = None) -> tuple[list[int], list[float]]:
    """Greedy k-center as the reference code states it: at every pick, recompute the distance from each candidate
    to every center (labeled + picked so far), take the min, pick the argmax. `first` starts an empty center set."""
    centers, picks, scores = list(labeled), [], []
    for _ in range(budget):
        if not centers:
            pick, score = first, np.inf
        else:
            diff = g[candidates][:, None, :] - g[centers][None, :, :]
            nearest = np.sqrt((diff ** 2).sum(axis=2)).min(axis=1)
            nearest[np.isin(candidates, picks)] = -np.inf
            pick, score = int(candidates[np.argmax(nearest)]), float(nearest.max())
        picks.append(pick)
        scores.append(score)
        centers.append(pick)
    return picks, scores


def badge_reference(probs: np.ndarray, g: np.ndarray, candidates: np.ndarray, budget: int,
                    rng: np.random.Generator) -> tuple[list[int], list[float]]:
    """k-means++ on materialised gradient embeddings, with the same draws from `rng` (tie permutation, then one
    uniform per pick, inverse CDF)."""
    p = probs[candidates]
    q = np.eye(p.shape[1])[p.argmax(axis=1)] - p
    emb = (q[:, :, None] * g[candidates][:, None, :]).reshape(len(candidates), -1)
    norm_sq = (emb ** 2).sum(axis=1)
    permutation = rng.permutation(len(candidates))
    pick = int(permutation[np.argmax(norm_sq[permutation])])
    picks, scores = [pick], [float(norm_sq[pick])]
    nearest_sq = ((emb - emb[pick]) ** 2).sum(axis=1)
    nearest_sq[picks] = 0
    for _ in range(1, budget):
        cumulative = np.cumsum(nearest_sq)
        if cumulative[-1] > 0:
            pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        else:
            remaining = np.setdiff1d(np.arange(len(candidates)), picks)
            pick = int(remaining[rng.integers(len(remaining))])
        picks.append(pick)
        scores.append(float(nearest_sq[pick]))
        nearest_sq = np.minimum(nearest_sq, ((emb - emb[pick]) ** 2).sum(axis=1))
        nearest_sq[picks] = 0
    return [int(candidates[i]) for i in picks], scores


class FixedClassifier:
    """What modAL's batch sampling reads: predict_proba (called once, on the candidates' rows in order), the
    training rows X_training (None: modAL's cold start) and on_transformed."""

    on_transformed = False

    def __init__(self, candidate_probs: np.ndarray, x_training: np.ndarray | None) -> None:
        self.candidate_probs = candidate_probs
        self.X_training = x_training

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        assert len(X) == len(self.candidate_probs)
        return self.candidate_probs


def modal_ranked_batch(inputs: StrategyInputs, budget: int) -> list[int]:
    """modAL's own uncertainty_batch_sampling on the candidates' features, labeled features as X_training."""
    candidates, features = inputs.candidates, inputs.features
    x_training = features[inputs.labeled] if len(inputs.labeled) else None
    classifier = FixedClassifier(inputs.probs[candidates], x_training)
    index, _ = uncertainty_batch_sampling(classifier, features[candidates], n_instances=budget)
    return [int(candidates[i]) for i in index]


class FixedCommittee:
    """What modAL's disagreement measures read: len, iteration, classes_, vote (argmax per member) and vote_proba
    (samples x members x classes), from fixed member probabilities (members x samples x classes)."""

    def __init__(self, member_probs: np.ndarray) -> None:
        self.member_probs = member_probs
        self.classes_ = np.arange(member_probs.shape[2])

    def __len__(self) -> int:
        return len(self.member_probs)

    def __iter__(self):
        return iter(range(len(self.member_probs)))

    def vote(self, X: np.ndarray) -> np.ndarray:
        return self.member_probs.argmax(axis=2).T

    def vote_proba(self, X: np.ndarray) -> np.ndarray:
        return self.member_probs.transpose(1, 0, 2)


# ---------------------------------------------------------------------------------------------------- coreset

# Six items on a line, x = 0, 1, 4.5, 6, 8, 10; item 0 (x=0) is labeled, items 1..5 are candidates.
#   D to {0}:                  1     4.5   6     8     10    -> pick 5 (10)
#   update with 10:            1     4.5   4     2     -     -> pick 2 (4.5)
#   update with 4.5:           1     -     1.5   2           -> pick 4 (2)
#   update with 8:             1           1.5   -           -> pick 3 (1.5), then 1 (1)
LINE = np.array([[0.0], [1.0], [4.5], [6.0], [8.0], [10.0]])


def test_coreset_six_points_on_a_line() -> None:
    inputs = StrategyInputs(np.arange(1, 6), penultimate=LINE, labeled=np.array([0]))
    picks = get_strategy("coreset").select(inputs, 5, rng())
    assert picks.positions.tolist() == [5, 2, 4, 3, 1]
    np.testing.assert_allclose(picks.scores, [10, 4.5, 2, 1.5, 1], atol=1e-9)
    assert picks.arms == ["coreset"] * 5 and picks.note == ""
    assert get_strategy("coreset").select(inputs, 2, rng()).positions.tolist() == [5, 2]


def test_coreset_without_labels_starts_from_a_random_candidate() -> None:
    # No labeled item: the first pick is random (score inf); the second is the point farthest from it.
    inputs = StrategyInputs(np.arange(6), penultimate=LINE, labeled=np.array([], dtype=int))
    firsts = set()
    for seed in range(12):
        picks = get_strategy("coreset").select(inputs, 3, rng(seed))
        first = int(picks.positions[0])
        firsts.add(first)
        assert picks.scores[0] == np.inf
        farthest = int(np.argmax(np.abs(LINE[:, 0] - LINE[first, 0])))
        assert picks.positions[1] == farthest
        assert picks.positions.tolist() == coreset_reference(LINE, np.arange(6), [], 3, first=first)[0]
    assert len(firsts) > 2  # the start follows the seed


@pytest.mark.parametrize("n_labeled, budget", [(30, 60), (1, 10), (0, 25)])
def test_coreset_equals_per_pick_recomputation(n_labeled: int, budget: int) -> None:
    # float64 on both sides: the same picks, one by one, and the same distances.
    inputs = random_pool(n=400, h=16, n_labeled=n_labeled, seed=3)
    ours = get_strategy("coreset").select(inputs, budget, rng(4))
    first = int(ours.positions[0]) if n_labeled == 0 else None
    picks, scores = coreset_reference(inputs.penultimate, inputs.candidates, inputs.labeled, budget, first)
    assert ours.positions.tolist() == picks
    np.testing.assert_allclose(ours.scores, scores, rtol=1e-9)
    chunked = get_strategy("coreset", chunk_rows=7).select(inputs, budget, rng(4))
    assert chunked.positions.tolist() == picks


def test_coreset_float32_close_to_float64() -> None:
    inputs = random_pool(n=2000, h=32, n_labeled=50, seed=5)
    ours64 = get_strategy("coreset").select(inputs, 40, rng())
    inputs.penultimate = inputs.penultimate.astype(np.float32)
    ours32 = get_strategy("coreset").select(inputs, 40, rng())
    assert ours32.positions.tolist() == ours64.positions.tolist()
    np.testing.assert_allclose(ours32.scores, ours64.scores, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------ badge

# Two classes, h = 1: g_i = (onehot - P_i) G_i = s_i (1, -1) with s_i = (1 - max P_i) G_i, sign - when yhat = 1,
# so |g_i - g_j|^2 = 2 (s_i - s_j)^2. Item 3 is labeled (s = 0.5 * 4 = 2): badge ignores labeled items.
#   item   P          G   s      |g|^2 = 2 s^2    D^2 to item 4 = 2 (s - .4)^2    P(second pick)
#   0      1.0 0.0    1   0      0                .32                             .32 / 1.24 = .258
#   1      0.9 0.1    1   .1     .02              .18                             .145
#   2      0.2 0.8    1   -.2    .08              .72                             .581
#   4      0.6 0.4    1   .4     .32  <- first    0
#   5      0.7 0.3    1   .3     .18              .02                             .016
BADGE_PROBS = np.array([[1.0, 0.0], [0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.6, 0.4], [0.7, 0.3]])
BADGE_G = np.array([[1.0], [1.0], [1.0], [4.0], [1.0], [1.0]])
BADGE_CANDIDATES = np.array([0, 1, 2, 4, 5])


def test_badge_six_item_pool_hand_checked() -> None:
    inputs = StrategyInputs(BADGE_CANDIDATES, probs=BADGE_PROBS, penultimate=BADGE_G, labeled=np.array([3]))
    seconds = []
    for seed in range(1000):
        picks = get_strategy("badge").select(inputs, 2, rng(seed))
        assert picks.positions[0] == 4
        assert picks.scores[0] == pytest.approx(0.32)
        seconds.append(int(picks.positions[1]))
        assert picks.scores[1] == pytest.approx({0: 0.32, 1: 0.18, 2: 0.72, 5: 0.02}[seconds[-1]])
    frequency = np.bincount(seconds, minlength=6)[[0, 1, 2, 5]] / 1000
    np.testing.assert_allclose(frequency, np.array([0.32, 0.18, 0.72, 0.02]) / 1.24, atol=0.04)
    # If the second pick is item 2 (s = -.2): D^2 = 2 min((s - .4)^2, (s + .2)^2) = .08, .18, .02 for items 0, 1, 5.
    seed = seconds.index(2)
    third = get_strategy("badge").select(inputs, 5, rng(seed))
    assert third.positions[:2].tolist() == [4, 2]
    assert third.scores[2] == pytest.approx({0: 0.08, 1: 0.18, 5: 0.02}[int(third.positions[2])])
    assert sorted(third.positions.tolist()) == BADGE_CANDIDATES.tolist()


def test_badge_equals_materialised_reference() -> None:
    inputs = random_pool(n=300, h=8, c=4, seed=7)
    ours = get_strategy("badge").select(inputs, 60, rng(8))
    picks, scores = badge_reference(inputs.probs, inputs.penultimate, inputs.candidates, 60, rng(8))
    assert ours.positions.tolist() == picks
    np.testing.assert_allclose(ours.scores, scores, rtol=1e-9, atol=1e-12)


def test_badge_falls_back_to_random_when_all_distances_are_zero() -> None:
    # Every candidate has the same gradient embedding: after the first pick every D^2 is 0.
    probs = np.tile([0.7, 0.2, 0.1], (8, 1))
    g = np.ones((8, 3))
    inputs = StrategyInputs(np.arange(8), probs=probs, penultimate=g)
    a = get_strategy("badge").select(inputs, 8, rng(1))
    b = get_strategy("badge").select(inputs, 8, rng(2))
    assert sorted(a.positions.tolist()) == list(range(8))
    assert a.positions.tolist() != b.positions.tolist()
    np.testing.assert_allclose(a.scores[1:], 0, atol=1e-12)
    picks, _ = badge_reference(probs, g, np.arange(8), 8, rng(1))
    assert a.positions.tolist() == picks


# ----------------------------------------------------------------------------------------------- ranked_batch

# Six items on a line, x = 0 (labeled), 1, 3, 4, 6, 10; uncertainty u = 1 - max P = .6, .2, .5, 0, 0.
# score = alpha (1 - 1/(1 + d)) + (1 - alpha) u, alpha = (5 - t) / 6, d = distance to the nearest labeled/picked.
#   step alpha   item1 (x=1)      item2 (x=3)      item3 (x=4)      item4 (x=6)      item5 (x=10)
#   0    5/6     d1: .5167        d3: .6583        d4: .7500        d6: .7143        d10: .7576 <- pick
#   1    4/6     d1: .5333        d3: .5667        d4: .7000 <-     d4: .5333
#   2    3/6     d1: .5500 <-     d1: .3500                         d2: .3333
#   3    2/6                      d1: .3000 <-                      d2: .2222
#   4    1/6                                                        d2: .1111 <-
RB_X = np.array([[0.0], [1.0], [3.0], [4.0], [6.0], [10.0]])
RB_PROBS = np.array([[0.34, 0.33, 0.33], [0.4, 0.3, 0.3], [0.8, 0.1, 0.1], [0.5, 0.3, 0.2],
                     [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_ranked_batch_six_item_pool_hand_checked() -> None:
    inputs = StrategyInputs(np.arange(1, 6), probs=RB_PROBS, features=RB_X, labeled=np.array([0]))
    picks = get_strategy("ranked_batch").select(inputs, 5, rng())
    assert picks.positions.tolist() == [5, 3, 1, 2, 4]
    np.testing.assert_allclose(picks.scores, [25 / 33, 0.7, 0.55, 0.3, 1 / 9], atol=1e-9)
    assert modal_ranked_batch(inputs, 5) == [5, 3, 1, 2, 4]


@pytest.mark.parametrize("n_labeled, budget", [(20, 1), (20, 15), (20, 80), (1, 30), (0, 20)])
def test_ranked_batch_same_picks_as_modal(n_labeled: int, budget: int) -> None:
    inputs = random_pool(n=250, h=6, c=3, n_labeled=n_labeled, seed=9)
    ours = get_strategy("ranked_batch").select(inputs, budget, rng())
    assert ours.positions.tolist() == modal_ranked_batch(inputs, budget)
    chunked = get_strategy("ranked_batch", chunk_rows=7).select(inputs, budget, rng())
    assert chunked.positions.tolist() == ours.positions.tolist()


def test_ranked_batch_cold_start_subsample() -> None:
    # More candidates than cold_start_sample: the first pick is the most central against a seeded sample.
    inputs = random_pool(n=300, h=4, n_labeled=0, seed=10)
    strategy = get_strategy("ranked_batch", cold_start_sample=50)
    a, b = strategy.select(inputs, 10, rng(1)), strategy.select(inputs, 10, rng(1))
    assert a.positions.tolist() == b.positions.tolist()
    centre = inputs.features.mean(axis=0)  # the most central item is near the middle of the cloud
    distance_to_centre = np.linalg.norm(inputs.features[inputs.candidates] - centre, axis=1)
    assert np.linalg.norm(inputs.features[a.positions[0]] - centre) <= np.quantile(distance_to_centre, 0.2)


# -------------------------------------------------------------------------------------------------------- qbc

# Six items, three members, two classes (member probabilities, item by item):
#   item  member probabilities             votes  vote entropy                 max KL to the mean
#   0     (.9 .1) (.8 .2) (.7 .3)          0 0 0  0                            KL((.9 .1)||(.8 .2)) = .0367
#   1     (1 0)   (0 1)   (1 0)            0 1 0  -(2/3 ln 2/3 + 1/3 ln 1/3)   KL((0 1)||(2/3 1/3)) = ln 3
#                                                 = .6365
#   2     (.6 .4) (.4 .6) (.5 .5)          0 1 0  .6365 (a .5/.5 tie votes 0)  KL((.6 .4)||(.5 .5)) = .0201
#   3     (.5 .5) (.5 .5) (.5 .5)          0 0 0  0                            0
#   4     (.2 .8) (.3 .7) (.1 .9)          1 1 1  0                            KL((.1 .9)||(.2 .8)) = .0367
#   5     (.49 .51) (.51 .49) (.2 .8)      1 0 1  .6365                        KL((.2 .8)||(.4 .6)) = .0915
COMMITTEE = np.array([
    [[0.9, 0.1], [1.0, 0.0], [0.6, 0.4], [0.5, 0.5], [0.2, 0.8], [0.49, 0.51]],
    [[0.8, 0.2], [0.0, 1.0], [0.4, 0.6], [0.5, 0.5], [0.3, 0.7], [0.51, 0.49]],
    [[0.7, 0.3], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5], [0.1, 0.9], [0.2, 0.8]],
])


def kl(p: list[float], q: list[float]) -> float:
    return float(sum(a * np.log(a / b) for a, b in zip(p, q) if a > 0))


def test_qbc_measures_hand_checked() -> None:
    split = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    np.testing.assert_allclose(our_vote_entropy(torch.from_numpy(COMMITTEE)), [0, split, split, 0, 0, split],
                               atol=1e-12)
    expected_kl = [kl([.9, .1], [.8, .2]), np.log(3), kl([.6, .4], [.5, .5]), 0, kl([.1, .9], [.2, .8]),
                   kl([.2, .8], [.4, .6])]
    np.testing.assert_allclose(max_disagreement(torch.from_numpy(COMMITTEE)), expected_kl, atol=1e-12)
    np.testing.assert_allclose(expected_kl, [.0367, 1.0986, .0201, 0, .0367, .0915], atol=1e-4)
    # and modAL's own functions on the same committee outputs
    np.testing.assert_allclose(vote_entropy(FixedCommittee(COMMITTEE), np.zeros((6, 1))), [0, split, split, 0, 0, split])
    np.testing.assert_allclose(KL_max_disagreement(FixedCommittee(COMMITTEE), np.zeros((6, 1))), expected_kl,
                               atol=1e-12)


@pytest.mark.parametrize("measure, modal_measure", [("vote_entropy", vote_entropy),
                                                    ("max_disagreement", KL_max_disagreement)])
def test_qbc_disagreement_equals_modal_on_the_committee(measure: str, modal_measure) -> None:
    inputs = random_pool(n=400, h=6, c=4, n_labeled=40, seed=11, dtype=np.float32)
    strategy = get_strategy("qbc", measure=measure, epochs=5)
    members = strategy.committee(inputs, rng(12))  # select() draws the committee first: same rng, same members
    member_probs = np.stack([m.predict_proba(inputs.features[inputs.candidates]) for m in members])
    ours = strategy.scores(members, inputs.features, inputs.candidates).numpy()
    # The members' outputs are float32; we compute in float64. modAL (scipy.stats.entropy) keeps float32 for
    # float32 input, so: equal to float32 precision as given, and to float64 precision on the promoted outputs.
    modal32 = modal_measure(FixedCommittee(member_probs), inputs.features[inputs.candidates])
    np.testing.assert_allclose(ours, modal32, rtol=1e-5, atol=1e-6)
    modal = modal_measure(FixedCommittee(member_probs.astype(np.float64)), inputs.features[inputs.candidates])
    np.testing.assert_allclose(ours, modal, rtol=1e-10, atol=1e-12)
    assert modal.max() > 0  # the members disagree somewhere
    picks = strategy.select(inputs, 30, rng(12))
    by_position = dict(zip(inputs.candidates.tolist(), modal))
    np.testing.assert_allclose(picks.scores, [by_position[p] for p in picks.positions], rtol=1e-6, atol=1e-9)
    left_out = np.setdiff1d(inputs.candidates, picks.positions)
    assert picks.scores.min() >= max(by_position[p] for p in left_out) - 1e-9  # the top 30 (ties: any of them)
    if measure == "max_disagreement":  # continuous scores, no ties: exactly modAL's picks
        modal_idx, _ = max_disagreement_sampling(FixedCommittee(member_probs), inputs.candidates[:, None],
                                                 n_instances=30)
        assert set(picks.positions.tolist()) == set(inputs.candidates[modal_idx].tolist())


def test_qbc_committee_members_differ_and_follow_the_seed() -> None:
    inputs = random_pool(n=200, h=4, c=3, n_labeled=30, seed=13, dtype=np.float32)
    strategy = get_strategy("qbc", n_members=3, epochs=3)
    weights = [m.state_arrays()["fc.weight"] for m in strategy.committee(inputs, rng(1))]
    again = [m.state_arrays()["fc.weight"] for m in strategy.committee(inputs, rng(1))]
    assert len(weights) == 3 and not np.allclose(weights[0], weights[1])
    for a, b in zip(weights, again):
        np.testing.assert_array_equal(a, b)


def test_qbc_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown measure"):
        get_strategy("qbc", measure="consensus")
    with pytest.raises(ValueError, match="n_members"):
        get_strategy("qbc", n_members=0)


# --------------------------------------------------------------------------------------------- all four rules

def strategy_for(name: str):
    return get_strategy("qbc", epochs=3) if name == "qbc" else get_strategy(name)


@pytest.mark.parametrize("name", DIVERSITY)
def test_seed_reproduces(name: str) -> None:
    inputs = random_pool(n=200, seed=14, dtype=np.float32)
    first = strategy_for(name).select(inputs, 12, rng(3))
    again = strategy_for(name).select(inputs, 12, rng(3))
    assert first.positions.tolist() == again.positions.tolist()
    np.testing.assert_array_equal(first.scores, again.scores)


@pytest.mark.parametrize("name", ["coreset", "badge", "ranked_batch"])
def test_ties_follow_the_seed(name: str) -> None:
    # Every candidate identical (same features, same probabilities): every choice is a tie.
    inputs = StrategyInputs(np.arange(40), probs=np.full((40, 3), [0.5, 0.3, 0.2]), features=np.ones((40, 2)),
                            penultimate=np.ones((40, 2)), labeled=np.array([], dtype=int))
    a = get_strategy(name).select(inputs, 10, rng(3))
    b = get_strategy(name).select(inputs, 10, rng(4))
    assert a.positions.tolist() != b.positions.tolist()
    assert len(set(a.positions.tolist())) == 10


@pytest.mark.parametrize("name", DIVERSITY)
def test_only_candidates_and_budget_larger_than_pool(name: str) -> None:
    inputs = random_pool(n=150, seed=15, dtype=np.float32)
    inputs.candidates = np.random.default_rng(2).choice(np.arange(30, 150), size=40, replace=False)
    picks = strategy_for(name).select(inputs, 10, rng())
    assert len(picks) == 10 and len(set(picks.positions.tolist())) == 10
    assert set(picks.positions.tolist()) <= set(inputs.candidates.tolist())
    assert picks.arms == [name] * 10
    everything = strategy_for(name).select(inputs, 1000, rng())
    assert sorted(everything.positions.tolist()) == sorted(inputs.candidates.tolist())
    inputs.candidates = np.array([], dtype=int)
    assert strategy_for(name).select(inputs, 5, rng()).positions.size == 0


@pytest.mark.parametrize("name", ["badge", "ranked_batch", "qbc"])
def test_cold_start_without_probs_falls_back_to_random(name: str) -> None:
    inputs = random_pool(n=50, seed=16)
    inputs.probs = None
    picks = get_strategy(name).select(inputs, 4, rng(5))
    assert "cold start" in picks.note and picks.arms == ["random"] * 4
    assert set(picks.positions.tolist()) <= set(inputs.candidates.tolist())


def test_qbc_without_labeled_items_falls_back_to_random() -> None:
    inputs = random_pool(n=50, n_labeled=0, seed=17)
    picks = get_strategy("qbc").select(inputs, 4, rng(5))
    assert "random" in picks.note and picks.arms == ["random"] * 4


def test_needs_are_declared() -> None:
    assert get_strategy("coreset").needs == frozenset({"penultimate"})
    assert get_strategy("badge").needs == frozenset({"probs", "penultimate"})
    assert get_strategy("ranked_batch").needs == frozenset({"probs", "features"})
    assert get_strategy("qbc").needs == frozenset({"probs", "features", "labels"})
    with pytest.raises(ValueError, match="needs 'penultimate'"):
        get_strategy("coreset").select(StrategyInputs(np.arange(3), features=np.ones((3, 2))), 1, rng())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", DIVERSITY)
def test_same_answer_on_cpu_and_cuda(name: str) -> None:
    inputs = random_pool(n=3000, h=32, c=10, n_labeled=100, seed=18)  # float64: the same picks, not just close
    params = {"epochs": 3} if name == "qbc" else {}
    cpu = get_strategy(name, **params).select(inputs, 50, rng())
    cuda = get_strategy(name, device="cuda", **params).select(inputs, 50, rng())
    if name == "qbc":  # members trained on different hardware: near-identical weights, near-identical scores
        np.testing.assert_allclose(np.sort(cpu.scores), np.sort(cuda.scores), atol=1e-3)
        return
    assert cpu.positions.tolist() == cuda.positions.tolist()
    np.testing.assert_allclose(cpu.scores, cuda.scores, rtol=1e-9)
