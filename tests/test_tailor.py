"""TAILOR (learners/tailor.py, learners/strategies/tailor.py): the posterior update and means on worked examples,
the reward vector, Thompson filling (a rare-class arm wins, exhausted arms, no repeats, seeds), arm building and
rankings (per-class galaxy uses one class's line), persistence, the strategy end to end, and the two update
rules: from each answer (each answer counted once, however often selection runs) and once per round."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from learners.strategies import RoundOutcome, StrategyInputs, get_strategy
from learners.strategies.galaxy import GalaxyStrategy
from learners.strategies.tailor import DEFAULT_MULTICLASS_ARMS, DEFAULT_MULTILABEL_ARMS, Arm, arm_rankings, build_arms
from learners.tailor import TailorPosterior, one_hot, reward_vector, thompson_fill


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------ posterior


def worked_posterior(multi_label: bool = False) -> TailorPosterior:
    """Two arms, three classes, prior ones; arm 0 brought classes 0 and 1, arm 1 brought class 0."""
    posterior = TailorPosterior.fresh(["a", "b"], 3, multi_label)
    posterior.update(np.array([0, 0, 1]), one_hot(np.array([0, 1, 0]), 3), decay=0.9)
    return posterior


def test_update_matches_the_formula_on_a_worked_example() -> None:
    # new[0, a] = [1, 1, 0], new[1, a] = [1, 1, 2]; new[0, b] = [1, 0, 0], new[1, b] = [0, 1, 1]
    # stats = 0.9 * ones + new
    posterior = worked_posterior()
    np.testing.assert_allclose(posterior.stats[0], [[1.9, 1.9, 0.9], [1.9, 0.9, 0.9]])
    np.testing.assert_allclose(posterior.stats[1], [[1.9, 1.9, 2.9], [0.9, 1.9, 1.9]])
    # a second round with decay 0.5: arm b brings class 2 (new[0, b] = [0, 0, 1], new[1, b] = [1, 1, 0])
    posterior.update(np.array([1]), one_hot(np.array([2]), 3), decay=0.5)
    np.testing.assert_allclose(posterior.stats[0], [[0.95, 0.95, 0.45], [0.95, 0.45, 1.45]])
    np.testing.assert_allclose(posterior.stats[1], [[0.95, 0.95, 1.45], [1.45, 1.95, 0.95]])


def test_update_is_idempotent_per_round_and_checks_its_inputs() -> None:
    posterior = TailorPosterior.fresh(["a", "b"], 3)
    assert posterior.update(np.array([0]), one_hot(np.array([1]), 3), round_id=7)
    stats = posterior.stats.copy()
    assert not posterior.update(np.array([0]), one_hot(np.array([1]), 3), round_id=7)
    np.testing.assert_array_equal(posterior.stats, stats)
    assert posterior.folded_rounds == [7]
    posterior.update(np.array([], dtype=int), np.zeros((0, 3)))  # nothing labeled: the decay alone
    np.testing.assert_allclose(posterior.stats, 0.9 * stats)
    with pytest.raises(ValueError, match="arm indices"):
        posterior.update(np.array([-1]), one_hot(np.array([0]), 3))
    with pytest.raises(ValueError, match="0/1 matrix"):
        posterior.update(np.array([0]), np.array([[0.5, 0.5, 0.0]]))


def test_expected_theta_dirichlet_and_beta_means() -> None:
    # multi-class: alpha = stats[0] + 1 = [2.9, 2.9, 1.9] and [2.9, 1.9, 1.9], both summing to 7.7 / 6.7
    dirichlet = worked_posterior()
    np.testing.assert_allclose(dirichlet.expected_theta(), [[2.9 / 7.7, 2.9 / 7.7, 1.9 / 7.7],
                                                            [2.9 / 6.7, 1.9 / 6.7, 1.9 / 6.7]])
    # multi-label: stats[0] / (stats[0] + stats[1]) = [1.9, 1.9, 0.9] / 3.8 and [1.9, 0.9, 0.9] / [2.8, 2.8, 2.8]
    beta = worked_posterior(multi_label=True)
    np.testing.assert_allclose(beta.expected_theta(), [[0.5, 0.5, 0.9 / 3.8], [1.9 / 2.8, 0.9 / 2.8, 0.9 / 2.8]])
    v = np.array([1.0, -0.5, 2.0])
    np.testing.assert_allclose(dirichlet.expected_reward(v), dirichlet.expected_theta() @ v)


@pytest.mark.parametrize("multi_label", [False, True])
def test_sampled_rewards_average_to_the_expected_reward(multi_label: bool) -> None:
    posterior = worked_posterior(multi_label)
    v = np.array([1.0, -0.5, 2.0])
    draws = posterior.sample_rewards(v, 200_000, rng(3))
    assert draws.shape == (200_000, 2)
    np.testing.assert_allclose(draws.mean(axis=0), posterior.expected_reward(v), atol=5e-3)


def test_to_dict_round_trip_is_exact_through_json() -> None:
    posterior = TailorPosterior.fresh(["galaxy:0", "margin"], 2, multi_label=True)
    posterior.update(np.array([0, 1, 1]), np.array([[1, 0], [1, 1], [0, 0]]), decay=0.7, round_id=3)
    posterior.stats *= 1 / 3  # awkward floats
    back = TailorPosterior.from_dict(json.loads(json.dumps(posterior.to_dict())))
    assert back.arm_names == posterior.arm_names and back.multi_label and back.folded_rounds == [3]
    np.testing.assert_array_equal(back.stats, posterior.stats)
    assert back.matches(["galaxy:0", "margin"], 2, multi_label=True)
    assert not back.matches(["galaxy:0", "margin"], 3) and not back.matches(["margin", "galaxy:0"], 2)


def test_arm_index_marks_non_arms() -> None:
    posterior = TailorPosterior.fresh(["galaxy:0", "margin"], 2)
    assert posterior.arm_index(["margin", "eval", "galaxy:0", "random"]).tolist() == [1, -1, 0, -1]


# --------------------------------------------------------------------------------------------- reward


def test_reward_div_worked_example_with_the_sign_flip() -> None:
    # |L| = 6, counts [4, 1, 1, 0] -> w = [4, 1, 1, 1]; 4 / 6 > 0.5 flips class 0 -> v = [-1/4, 1, 1, 1]
    labels = one_hot(np.array([0, 0, 1, 0, 2, 0]), 4)
    np.testing.assert_allclose(reward_vector(labels), [-0.25, 1.0, 1.0, 1.0])
    # counts [3, 3]: 3 / 6 = 0.5 is not over half -> no flip
    np.testing.assert_allclose(reward_vector(one_hot(np.array([0, 1, 0, 1, 0, 1]), 2)), [1 / 3, 1 / 3])
    # multi-label: 4 items, counts [3, 1, 0] -> w = [-3, 1, 1]
    matrix = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(reward_vector(matrix), [-1 / 3, 1.0, 1.0])
    np.testing.assert_allclose(reward_vector(np.zeros((0, 3))), [1.0, 1.0, 1.0])  # nothing labeled yet


def test_reward_pos_is_all_ones_and_unknown_kinds_fail() -> None:
    np.testing.assert_array_equal(reward_vector(np.array([[1, 0, 1]]), "pos"), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="unknown TAILOR reward"):
        reward_vector(np.zeros((1, 3)), "balance")


# -------------------------------------------------------------------------------------------- filling


def test_fill_hand_checked_skips_taken_items_and_drops_exhausted_arms() -> None:
    # v = [1, 0]: arm 0 has theta ~ [1, 0] (reward ~1), arm 1 ~ [0, 1] (reward ~0), so arm 0 wins every draw
    # until it runs out. Arm 0 hands out 5, 6, 7; then arm 1 skips 6 (taken) and hands out 8, 9.
    posterior = TailorPosterior(["a", "b"], np.array([[[1000.0, 0.0], [0.0, 1000.0]], np.ones((2, 2))]))
    picks = thompson_fill(posterior, [np.array([5, 6, 7]), np.array([6, 8, 9])], np.array([1.0, 0.0]), 5, rng())
    assert picks.positions.tolist() == [5, 6, 7, 8, 9]
    assert picks.arm_index.tolist() == [0, 0, 0, 1, 1]
    assert np.all(picks.sampled_reward[:3] > 0.98) and np.all(picks.sampled_reward[3:] < 0.02)
    # `taken` items are never handed out; the fill stops when every arm is exhausted
    picks = thompson_fill(posterior, [np.array([5, 6, 7]), np.array([6, 8, 9])], np.array([1.0, 0.0]), 10, rng(),
                          taken=np.array([7, 9]))
    assert picks.positions.tolist() == [5, 6, 8]


def test_fill_never_repeats_and_uses_every_ranked_item_when_the_budget_allows() -> None:
    g = rng(1)
    rankings = [g.choice(60, size=size, replace=False) for size in (0, 5, 20, 20, 40)]
    posterior = TailorPosterior.fresh(list("abcde"), 4)
    for budget in (10, 1000):
        picks = thompson_fill(posterior, rankings, np.array([1.0, 0.5, 0.2, -1.0]), budget, rng(2))
        assert len(set(picks.positions.tolist())) == len(picks.positions)
        assert 0 not in picks.arm_index  # an empty arm is never pulled
        for m, ranking in enumerate(rankings):  # each arm hands out its items in its own order
            mine = picks.positions[picks.arm_index == m]
            assert np.all(np.diff([ranking.tolist().index(p) for p in mine]) > 0)
    union = set(np.concatenate(rankings).tolist())
    assert set(picks.positions.tolist()) == union and len(union) < 1000


def test_fill_seeds_reproduce() -> None:
    g = rng(4)
    rankings = [g.choice(500, size=50, replace=False) for _ in range(8)]
    posterior = TailorPosterior.fresh(list("abcdefgh"), 3)
    v = np.array([1.0, 0.3, -0.2])
    first, again = (thompson_fill(posterior, rankings, v, 40, rng(5)) for _ in range(2))
    other = thompson_fill(posterior, rankings, v, 40, rng(6))
    assert first.positions.tolist() == again.positions.tolist()
    assert first.arm_index.tolist() == again.arm_index.tolist()
    assert first.arm_index.tolist() != other.arm_index.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_arm_that_brings_the_rare_class_gets_most_pulls(seed: int) -> None:
    """Four arms on an imbalanced pool (class 2 is 8%, class 0 62%) with 300 items labeled at random; arm 0 ranks
    only class-2 items, the others rank random items. Eight rounds of 10: fill, label with the oracle, update.
    Arm 0 gets over 80% of the pulls of the last four rounds and the best posterior expected reward."""
    g = rng(seed)
    truth = g.choice(3, size=5000, p=[0.62, 0.30, 0.08])
    labeled = list(g.choice(5000, size=300, replace=False))
    posterior = TailorPosterior.fresh(["rare", "random1", "random2", "random3"], 3)
    pulls = []
    for round_ in range(8):
        candidates = np.setdiff1d(np.arange(5000), labeled)
        rare = candidates[truth[candidates] == 2]
        rankings = [g.permutation(rare)[:10]] + [g.choice(candidates, size=10, replace=False) for _ in range(3)]
        v = reward_vector(one_hot(truth[labeled], 3))
        picks = thompson_fill(posterior, rankings, v, 10, rng([seed, round_]))
        posterior.update(picks.arm_index, one_hot(truth[picks.positions], 3))
        labeled += picks.positions.tolist()
        pulls.append(np.bincount(picks.arm_index, minlength=4))
    last = np.sum(pulls[-4:], axis=0)
    assert last[0] > 0.8 * last.sum(), pulls
    assert np.argmax(posterior.expected_reward(reward_vector(one_hot(truth[labeled], 3)))) == 0


def test_fill_is_fast_enough_at_a_small_scale() -> None:
    """B = 200 slots, M = 50 arms, K = 10 (the full benchmark is benchmarks/bench_tailor_select.py)."""
    import time

    g = rng(8)
    rankings = [g.choice(20_000, size=200, replace=False) for _ in range(50)]
    posterior = TailorPosterior(list(map(str, range(50))), g.uniform(0.5, 4, size=(2, 50, 10)))
    start = time.perf_counter()
    picks = thompson_fill(posterior, rankings, g.normal(size=10), 200, rng(9))
    assert len(picks.positions) == 200 and time.perf_counter() - start < 1.0


# ------------------------------------------------------------------------------------------------ arms


def test_build_arms_expands_per_class_specs() -> None:
    assert [arm.name for arm in build_arms(DEFAULT_MULTICLASS_ARMS, 3)] == ["galaxy", "confidence", "badge", "margin"]
    names = [arm.name for arm in build_arms(("galaxy*", "margin"), 3)]
    assert names == ["galaxy:0", "galaxy:1", "galaxy:2", "margin"]
    with_most_likely = [arm.name for arm in build_arms(("most_likely*", "margin"), 2)]
    assert with_most_likely == ["most_likely:0", "most_likely:1", "margin"]
    multi = [arm.name for arm in build_arms(DEFAULT_MULTILABEL_ARMS, 2, multi_label=True)]
    assert multi == ["emal", "uncertain:0", "uncertain:1", "most_likely:0", "most_likely:1", "galaxy:0", "galaxy:1"]
    assert build_arms(["galaxy:1", "galaxy", "entropy"], 3) == [Arm("galaxy", 1), Arm("galaxy"), Arm("entropy")]


@pytest.mark.parametrize("specs, multi_label, message", [
    (["nope"], False, "'nope': unknown strategy"),
    (["tailor"], False, "tailor cannot be one of its own arms"),
    (["margin*"], False, "'margin\\*': only .* have per-class arms"),
    (["most_likely"], False, "'most_likely' is defined per class"),
    (["emal"], False, "'emal' is a multi-label rule"),
    (["uncertain*"], False, "'uncertain\\*' is a multi-label rule"),
    (["galaxy:3"], False, "'galaxy:3': the class must be an integer in \\[0, 3\\)"),
    (["margin", "confidence", "margin"], False, "duplicate arms: \\['margin'\\]"),
    (["galaxy*", "galaxy:1"], False, "duplicate arms: \\['galaxy:1'\\]"),
    (["galaxy"], True, "'galaxy' is defined per class"),
    (["direct"], True, "direct reads class-index labels"),
    ([], False, "at least one arm"),
])
def test_build_arms_refuses_bad_specs(specs: list[str], multi_label: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_arms(specs, 3, multi_label)


def line_problem(multi_label: bool) -> StrategyInputs:
    """Eleven items, three classes. P[:, 1] falls with the item index, so class 1's line is items 0..10 (both
    as margin_1 and as P[:, 1]); item 0 is labeled class 1 and item 10 is not, so on class 1's line the candidates
    1..9 form one run between a 1 and a 0, and bisection picks its middles in a fixed order."""
    p1 = 0.9 - 0.08 * np.arange(11)
    probs = np.stack([(1 - p1) * 0.55, p1, (1 - p1) * 0.45], axis=1)
    labels = np.array([[0, 1, 0], [1, 0, 0]]) if multi_label else np.array([1, 0])
    return StrategyInputs(np.arange(1, 10), probs=probs, labeled=np.array([0, 10]), labels=labels)


@pytest.mark.parametrize("multi_label", [False, True])
def test_per_class_galaxy_arm_bisects_only_its_class_line(multi_label: bool) -> None:
    # run 1..9 -> middle item 5; then the visible run 1,2,3,4,6,7,8,9 -> its middle (index (1 + 8) // 2 = 4)
    # is item 4; then 1,2,3,6,7,8,9 -> item 6; then 1,2,3,7,8,9 -> item 3
    inputs = line_problem(multi_label)
    ranking, = arm_rankings([Arm("galaxy", 1)], inputs, 4, rng(), multi_label=multi_label)
    assert ranking.tolist() == [5, 4, 6, 3]


def test_galaxy_restricted_to_one_class_equals_the_full_cycle_at_that_class() -> None:
    g = rng(10)
    probs = g.dirichlet(np.ones(4), size=300)
    labeled = np.arange(40)
    inputs = StrategyInputs(np.arange(40, 300), probs=probs, labeled=labeled, labels=g.integers(4, size=40))
    cycle = GalaxyStrategy(seed=3).cycled_classes(4)
    for step, k in enumerate(cycle):
        full = GalaxyStrategy(seed=3).select(replace(inputs, step=step), 1, rng(11))
        one = GalaxyStrategy(seed=3, classes=[int(k)]).select(inputs, 1, rng(11))
        assert one.positions.tolist() == full.positions.tolist()
    with pytest.raises(ValueError, match="galaxy classes"):
        GalaxyStrategy(classes=[4]).select(inputs, 1, rng())


def test_built_in_rules_rank_by_their_scores() -> None:
    probs = np.array([[0.1, 0.9], [0.45, 0.55], [0.8, 0.3], [0.6, 0.4], [0.5, 0.5]])
    inputs = StrategyInputs(np.array([0, 1, 2, 3]), probs=probs, labeled=np.array([4]),
                            labels=np.array([[1, 0]]))
    arms = [Arm("most_likely", 0), Arm("uncertain", 1), Arm("emal")]
    most_likely, uncertain, emal = arm_rankings(arms, inputs, 4, rng(), multi_label=True)
    assert most_likely.tolist() == [2, 3, 1, 0]                     # P[:, 0] = .8 .6 .45 .1
    assert uncertain.tolist() == [1, 3, 2, 0]                       # |P[:, 1] - .5| = .05 .1 .2 .4
    assert emal.tolist() == [1, 3, 2, 0]                            # sums .1 .2 .5 .8


def test_arm_rankings_need_the_arms_inputs() -> None:
    inputs = StrategyInputs(np.arange(5, 20), probs=rng().dirichlet(np.ones(3), size=20),
                            labeled=np.arange(5), labels=np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="coreset.*penultimate"):
        arm_rankings([Arm("margin"), Arm("coreset")], inputs, 3, rng())
    with pytest.raises(ValueError, match="need probs"):
        arm_rankings([Arm("margin")], StrategyInputs(np.arange(5)), 3, rng())


# ------------------------------------------------------------------------------------------- strategy


def small_problem(classes: int = 4, n: int = 500, seed: int = 12) -> tuple[StrategyInputs, np.ndarray]:
    g = rng(seed)
    truth = g.integers(classes, size=n)
    labeled = np.arange(40)
    inputs = StrategyInputs(np.arange(40, n), probs=g.dirichlet(np.ones(classes), size=n),
                            features=g.normal(size=(n, 16)), penultimate=g.normal(size=(n, 8)),
                            labeled=labeled, labels=truth[labeled])
    return inputs, truth


def test_select_end_to_end_then_update_and_keep_the_posterior() -> None:
    inputs, truth = small_problem()
    strategy = get_strategy("tailor")
    picks = strategy.select(inputs, 30, rng(13))
    assert len(picks) == 30 and len(set(picks.positions.tolist())) == 30
    assert set(picks.positions.tolist()) <= set(inputs.candidates.tolist())
    posterior = strategy.posterior
    assert len(posterior.arm_names) == len(DEFAULT_MULTICLASS_ARMS) and set(picks.arms) <= set(posterior.arm_names)
    assert picks.note.startswith("TAILOR: arm set built (4 arms), learning from each answer (0 of this round so "
                                 "far); pulls: ")
    again = get_strategy("tailor").select(inputs, 30, rng(13))
    assert again.positions.tolist() == picks.positions.tolist() and again.arms == picks.arms

    arm_index = posterior.arm_index(picks.arms)
    posterior.update(arm_index, one_hot(truth[picks.positions], 4), decay=strategy.decay, round_id=1)
    assert posterior.stats[0].sum() == pytest.approx(0.9 * len(DEFAULT_MULTICLASS_ARMS) * 4 + 30)
    strategy.select(inputs, 10, rng(14))
    assert strategy.posterior is posterior  # same arms and classes: kept


def test_select_rebuilds_the_posterior_when_the_classes_change() -> None:
    strategy = get_strategy("tailor", arms=["margin", "most_likely*"])
    strategy.posterior = TailorPosterior.fresh(["margin", "most_likely:0", "most_likely:1", "most_likely:2"], 3)
    picks = strategy.select(small_problem(classes=4)[0], 10, rng())
    assert picks.note.startswith("TAILOR: arm set rebuilt because the number of classes changed from 3 to 4 "
                                 "(5 arms)")
    assert strategy.posterior.stats.shape == (2, 5, 4) and np.all(strategy.posterior.stats == 1)
    strategy.arms = ["margin", "confidence"]
    assert "the number of arms changed from 5 to 2" in strategy.select(small_problem()[0], 10, rng()).note


def test_select_multi_label() -> None:
    inputs, _ = small_problem()
    g = rng(15)
    inputs.probs = g.random(inputs.probs.shape)
    inputs.labels = (g.random((len(inputs.labeled), 4)) < 0.3).astype(int)
    inputs.multi_label = True
    strategy = get_strategy("tailor", reward="pos")
    picks = strategy.select(inputs, 20, rng(16))
    assert len(set(picks.positions.tolist())) == 20 and strategy.posterior.multi_label
    assert len(strategy.posterior.arm_names) == 1 + 3 * 4


def test_strategy_refuses_bad_settings_and_falls_back_at_cold_start() -> None:
    with pytest.raises(ValueError, match="'pos' is for multi-label"):
        get_strategy("tailor", reward="pos").select(small_problem()[0], 3, rng())
    with pytest.raises(ValueError, match="decay"):
        get_strategy("tailor", decay=0.0)
    picks = get_strategy("tailor").select(StrategyInputs(np.arange(10)), 3, rng())
    assert "cold start" in picks.note and picks.arms == ["random"] * 3


# ---------------------------------------------------------------------------------------------- update rules


def json_copy(state: dict) -> dict:
    return json.loads(json.dumps(state))


def labeled_now(inputs: StrategyInputs, truth: np.ndarray, answered: np.ndarray, queued: np.ndarray,
                step: int) -> StrategyInputs:
    """`inputs` after the `answered` positions were labeled; `queued` (picked, not answered) are no candidates."""
    return replace(inputs, candidates=np.setdiff1d(inputs.candidates, np.r_[answered, queued]),
                   labeled=np.r_[inputs.labeled, answered], labels=np.r_[inputs.labels, truth[answered]], step=step)


def test_each_answer_of_the_round_counts_once_however_often_selection_runs() -> None:
    inputs, truth = small_problem()
    inputs = replace(inputs, item_ids=np.arange(1000, 1500))  # item ids are not positions
    strategy = get_strategy("tailor")
    first = strategy.select(inputs, 3, rng(1))  # the round's first selection: three picks ahead
    stored = json_copy(strategy.state())
    assert stored["round_picks"] == {str(1000 + p): arm for p, arm in zip(first.positions.tolist(), first.arms)}
    prior = TailorPosterior.from_dict(stored["posterior"])

    # Two of the three are answered; every selection from now on draws from the prior plus those two answers.
    answered = first.positions[:2]
    later = labeled_now(inputs, truth, answered, first.positions[2:], step=3)
    expected = prior.stats + prior.pick_counts(prior.arm_index(first.arms[:2]), one_hot(truth[answered], 4))
    picks = []
    for _ in range(3):  # the same answers seen again at every selection (and after every restart)
        again = get_strategy("tailor")
        again.load_state(stored)
        posterior, learned = again.round_posterior(later)
        assert learned == 2 and np.allclose(posterior.stats, expected)
        pick = again.select(later, 1, rng(2))
        assert "learning from each answer (2 of this round so far)" in pick.note
        assert np.array_equal(again.posterior.stats, prior.stats)  # the stored posterior waits for the round's end
        picks.append((pick.positions.tolist(), pick.arms))
    assert picks[0] == picks[1] == picks[2]
    state = json_copy(again.state())
    assert len(state["round_picks"]) == 4

    # The round closes with all four picks labeled: the posterior takes each once (0.9 prior + the four), and
    # the round's picks are forgotten.
    round_positions = [*first.positions.tolist(), *pick.positions.tolist()]
    round_arms = [*first.arms, *pick.arms]
    outcome = RoundOutcome(round_id=5, round_index=1, picks=[(arm, [int(truth[p])]) for p, arm in
                                                             zip(round_positions, round_arms)],
                           pool_labels=[[int(y)] for y in truth[[*inputs.labeled.tolist(), *round_positions]]],
                           num_classes=4, multi_label=False)
    folded = get_strategy("tailor").fold_round(state, outcome)
    after = TailorPosterior.from_dict(folded["posterior"])
    np.testing.assert_allclose(after.stats, 0.9 * prior.stats + prior.pick_counts(
        prior.arm_index(round_arms), one_hot(truth[round_positions], 4)))
    assert folded["round_picks"] == {} and after.folded_rounds == [5]
    assert get_strategy("tailor").fold_round(json_copy(folded), outcome) is None  # the same round again

    # The next round starts from the folded posterior: the closed round's answers are not added again.
    following = get_strategy("tailor")
    following.load_state(json_copy(folded))
    next_inputs = labeled_now(inputs, truth, np.array(round_positions), np.empty(0, dtype=int), step=0)
    posterior, learned = following.round_posterior(next_inputs)
    assert learned == 0 and np.array_equal(posterior.stats, after.stats)
    assert "(0 of this round so far)" in following.select(next_inputs, 2, rng(3)).note


def test_a_rounds_first_selection_forgets_picks_left_from_before() -> None:
    inputs, truth = small_problem()
    strategy = get_strategy("tailor")
    first = strategy.select(inputs, 2, rng(1))
    later = labeled_now(inputs, truth, first.positions, np.empty(0, dtype=int), step=0)  # step 0: a new round
    picks = strategy.select(later, 2, rng(2))
    assert "(0 of this round so far)" in picks.note
    assert set(strategy.round_picks) == set(picks.positions.tolist())  # no item ids: positions stand for them


def rare_class_pool(seed: int) -> tuple[StrategyInputs, np.ndarray]:
    """600 items of 3 classes (class 2 is 5%), 40 labeled at random, a head that knows every item's class: the
    arm most_likely:2 brings class 2 at (almost) every pull, the rare class TAILOR's reward favours."""
    g = rng(seed)
    truth = g.choice(3, size=600, p=[0.55, 0.4, 0.05])
    probs = 0.1 + 0.7 * one_hot(truth, 3) + g.uniform(0, 0.05, size=(600, 3))
    labeled = g.choice(600, size=40, replace=False)
    return StrategyInputs(np.setdiff1d(np.arange(600), labeled), probs=probs / probs.sum(axis=1, keepdims=True),
                          features=g.normal(size=(600, 4)), penultimate=g.normal(size=(600, 4)), labeled=labeled,
                          labels=truth[labeled]), truth


def rare_arm_pulls(arms: list[str]) -> int:
    return arms.count("most_likely:2")


def test_learning_from_each_answer_favours_the_rare_class_arm_within_one_round() -> None:
    """One round of 30 on the pool above, three seeds. The batch rule draws the whole round from the prior (each
    of the three arms gets about a third of the pulls); learning from each answer, as the app runs it (one pick
    per selection, the state stored as JSON in between) or with `ask`, gives most_likely:2 clearly more."""
    batch, one_by_one, asked = [], [], []
    for seed in range(3):
        inputs, truth = rare_class_pool(seed)
        picks = get_strategy("tailor", arms=["most_likely*"], update="round").select(inputs, 30, rng(seed))
        batch.append(rare_arm_pulls(picks.arms))

        stored, answered = None, []
        for step in range(30):
            strategy = get_strategy("tailor", arms=["most_likely*"])
            strategy.load_state(stored)
            pick = strategy.select(labeled_now(inputs, truth, np.array(answered, dtype=int),
                                               np.empty(0, dtype=int), step), 1, rng([seed, step]))
            stored = json_copy(strategy.state())
            answered += pick.positions.tolist()
        assert len(set(answered)) == 30 and len(stored["round_picks"]) == 30
        one_by_one.append(rare_arm_pulls(list(stored["round_picks"].values())))

        picks = get_strategy("tailor", arms=["most_likely*"]).select(inputs, 30, rng(seed),
                                                                     ask=lambda position: int(truth[position]))
        asked.append(rare_arm_pulls(picks.arms))
    assert sum(batch) < 45, batch  # about a third of 90
    for learned in (one_by_one, asked):
        assert all(a > b for a, b in zip(learned, batch)) and sum(learned) > sum(batch) + 12, (batch, learned)


def test_round_update_is_the_batch_rule_as_before() -> None:
    """update="round": not sequential, the whole round drawn from the stored posterior, nothing remembered."""
    inputs, truth = small_problem()
    strategy = get_strategy("tailor", update="round")
    assert not strategy.sequential and get_strategy("tailor").sequential
    picks = strategy.select(inputs, 30, rng(13))
    arms = build_arms(DEFAULT_MULTICLASS_ARMS, 4)
    g = rng(13)
    rankings = arm_rankings(arms, inputs, 30, g)
    expected = thompson_fill(TailorPosterior.fresh([arm.name for arm in arms], 4), rankings,
                             reward_vector(one_hot(inputs.labels, 4)), 30, g)
    assert picks.positions.tolist() == expected.positions.tolist()
    assert picks.arms == [arms[m].name for m in expected.arm_index]
    assert "learning" not in picks.note and strategy.round_picks == {}
    later = labeled_now(inputs, truth, picks.positions[:10], picks.positions[10:], step=30)
    strategy.select(later, 5, rng(14))
    assert strategy.state()["round_picks"] == {} and np.all(strategy.posterior.stats == 1)
    with pytest.raises(ValueError, match="update"):
        get_strategy("tailor", update="slot")
