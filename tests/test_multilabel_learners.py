"""Multi-label learners: every strategy's multi-label rule on hand-checked pools (or its refusal), TAILOR reading
`StrategyInputs.multi_label`, sigmoid heads (training above chance, save/load), per-class pseudo-labels on a worked
example, and the multi-label metrics against scikit-learn."""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from learners.heads import HeadConfig, TrainedHead, train_head
from learners.metrics import average_precision_per_class, multilabel_labels_per_class, multilabel_metrics
from learners.ssl import (
    MULTI_LABEL_METHODS,
    SSLConfig,
    SSLProblem,
    _PseudoLabelTerm,
    multilabel_pseudo_label_targets,
    train_head_ssl,
)
from learners.strategies import StrategyInputs, available_strategies, get_strategy, strategy_class
from learners.strategies.galaxy import GalaxyStrategy
from learners.strategies.tailor import Arm, arm_rankings, build_arms

# From the registry: every strategy has a multi-label rule or refuses (tests/test_strategy_contract.py checks both).
MULTI_LABEL_RULES = {name for name in available_strategies() if strategy_class(name).supports_multi_label}
REFUSED = set(available_strategies()) - MULTI_LABEL_RULES


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_multilabel_pool(n: int = 80, classes: int = 3, labeled: int = 12, seed: int = 0) -> StrategyInputs:
    g = rng(seed)
    lab = np.arange(labeled)
    return StrategyInputs(np.arange(labeled, n), probs=g.random((n, classes)), features=g.normal(size=(n, 6)),
                          penultimate=g.normal(size=(n, 5)), labeled=lab,
                          labels=(g.random((labeled, classes)) < 0.4).astype(int), multi_label=True)


# --------------------------------------------------------------------------------------- which strategies


def test_the_built_in_strategies_keep_their_multi_label_rule_or_refusal() -> None:
    assert {"random", "confidence", "margin", "entropy", "coreset", "badge", "galaxy", "bait", "ranked_batch",
            "tailor"} <= MULTI_LABEL_RULES
    assert {"direct", "qbc", "lftl"} <= REFUSED
    for name in available_strategies():
        assert get_strategy(name).supports_multi_label == (name in MULTI_LABEL_RULES), name


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_strategies_without_a_multi_label_rule_refuse_clearly(name: str) -> None:
    inputs = random_multilabel_pool()
    with pytest.raises(ValueError, match=f"strategy '{name}' has no multi-label rule"):
        get_strategy(name).select(inputs, 3, rng())
    with pytest.raises(ValueError, match="has no multi-label rule"):  # even at cold start (no probs yet)
        get_strategy(name).select(replace(inputs, probs=None), 3, rng())


@pytest.mark.parametrize("name", sorted(MULTI_LABEL_RULES))
def test_multi_label_strategies_pick_only_candidates_and_reproduce(name: str) -> None:
    inputs = random_multilabel_pool()
    picks = get_strategy(name).select(inputs, 7, rng(3))
    assert len(picks) == 7 == len(set(picks.positions.tolist()))
    assert set(picks.positions.tolist()) <= set(inputs.candidates.tolist())
    assert picks.positions.tolist() == get_strategy(name).select(inputs, 7, rng(3)).positions.tolist()
    everything = get_strategy(name).select(inputs, 1000, rng(3))
    assert sorted(everything.positions.tolist()) == inputs.candidates.tolist()


def test_multi_label_labels_must_be_a_0_1_matrix() -> None:
    inputs = random_multilabel_pool()
    with pytest.raises(ValueError, match=r"\(n, 3\) 0/1 matrix"):
        get_strategy("galaxy").select(replace(inputs, labels=np.zeros(12, dtype=int)), 2, rng())  # class indices
    with pytest.raises(ValueError, match=r"\(n, 3\) 0/1 matrix"):
        get_strategy("confidence").select(replace(inputs, labels=np.full((12, 3), 2)), 2, rng())
    with pytest.raises(ValueError, match="rows for 11 labeled"):
        get_strategy("confidence").select(replace(inputs, labeled=np.arange(11)), 2, rng())


# ---------------------------------------------------------------------------------------------- uncertainty

# Two classes. mean_k |P - .5| and the confidence/margin score 0.5 - that mean:
#   item  P            mean |P - .5|   score    (multi-class confidence 1 - max P would be)
#   0     .5   .5      0               .5       .5
#   1     .9   .1      .4              .1       .1
#   2     .6   .45     .075            .425     .4
#   3     .99  .99     .49             .01      .01
#   4     .7   .2      .25             .25      .3
#   5     .55  .9      .225            .275     .1
# Multi-label order: 0, 2, 5, 4, 1, 3 (multi-class confidence would put 5 last but one, after 4).
UNCERTAIN_P = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.45], [0.99, 0.99], [0.7, 0.2], [0.55, 0.9]])


@pytest.mark.parametrize("name", ["confidence", "margin"])
def test_confidence_and_margin_multi_label_hand_checked(name: str) -> None:
    inputs = StrategyInputs(np.arange(6), probs=UNCERTAIN_P, multi_label=True)
    picks = get_strategy(name).select(inputs, 6, rng())
    assert picks.positions.tolist() == [0, 2, 5, 4, 1, 3]
    np.testing.assert_allclose(picks.scores, [0.5, 0.425, 0.275, 0.25, 0.1, 0.01], atol=1e-12)


def binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_entropy_multi_label_is_the_sum_of_binary_entropies() -> None:
    # A = (.5, .99): mean |P - .5| = .245, entropy ln 2 + H(.99) = .6931 + .0560 = .7491
    # B = (.75, .75): mean |P - .5| = .25,  entropy 2 H(.75) = 2 x .5623 = 1.1247
    # C = (1, 0): certain, entropy 0 (the logs are clipped at 1e-12)
    # confidence prefers A (closer to .5 on average), entropy prefers B.
    probs = np.array([[0.5, 0.99], [0.75, 0.75], [1.0, 0.0]])
    inputs = StrategyInputs(np.arange(3), probs=probs, multi_label=True)
    entropy = get_strategy("entropy").select(inputs, 3, rng())
    assert entropy.positions.tolist() == [1, 0, 2]
    np.testing.assert_allclose(entropy.scores, [2 * binary_entropy(0.75), math.log(2) + binary_entropy(0.99), 0],
                               atol=1e-9)
    assert get_strategy("confidence").select(inputs, 3, rng()).positions.tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- badge

# h = 1, G = 1 for every item, so |g|^2 = |q|^2 with q = 1[P > .5] - P:
#   item  P           q             |q|^2      (multi-class q = onehot(argmax) - P: |q|^2)
#   0     .9  .9      .1  .1        .02        (.1, -.9): .82
#   1     .45 .45     -.45 -.45     .405       (.55, -.45): .505
#   2     .2  .1      -.2 -.1       .05        (.8, -.1): .65
# Multi-label: first pick item 1 (|g|^2 .405); multi-class would pick item 0 (.82).
# D^2 to item 1 = |q_i - q_1|^2 (G = 1): item 0 (.55, .55) -> .605, item 2 (.25, .35) -> .185.
BADGE_P = np.array([[0.9, 0.9], [0.45, 0.45], [0.2, 0.1]])


def test_badge_multi_label_gradient_embedding_hand_checked() -> None:
    inputs = StrategyInputs(np.arange(3), probs=BADGE_P, penultimate=np.ones((3, 1)), multi_label=True)
    seconds = []
    for seed in range(400):
        picks = get_strategy("badge").select(inputs, 2, rng(seed))
        assert picks.positions[0] == 1 and picks.scores[0] == pytest.approx(0.405)
        seconds.append(int(picks.positions[1]))
        assert picks.scores[1] == pytest.approx({0: 0.605, 2: 0.185}[seconds[-1]])
    assert np.mean(np.array(seconds) == 0) == pytest.approx(0.605 / 0.79, abs=0.06)
    assert get_strategy("badge").select(replace(inputs, multi_label=False), 1, rng()).positions.tolist() == [0]


def test_badge_multi_label_equals_materialised_reference() -> None:
    inputs = random_multilabel_pool(n=200, classes=4, seed=5)
    ours = get_strategy("badge").select(inputs, 30, rng(8))
    cand = inputs.candidates
    p = inputs.probs[cand]
    q = (p > 0.5).astype(float) - p
    emb = (q[:, :, None] * inputs.penultimate[cand][:, None, :]).reshape(len(cand), -1)
    g = rng(8)
    norm_sq = (emb ** 2).sum(axis=1)
    permutation = g.permutation(len(cand))
    picks = [int(permutation[np.argmax(norm_sq[permutation])])]
    nearest = ((emb - emb[picks[0]]) ** 2).sum(axis=1)
    nearest[picks] = 0
    for _ in range(29):
        cumulative = np.cumsum(nearest)
        picks.append(int(np.searchsorted(cumulative, g.random() * cumulative[-1], side="right")))
        nearest = np.minimum(nearest, ((emb - emb[picks[-1]]) ** 2).sum(axis=1))
        nearest[picks] = 0
    assert ours.positions.tolist() == cand[picks].tolist()


# ---------------------------------------------------------------------------------------------- galaxy

# Nine items, two classes, P[:, 0] = P[:, 1] = .9 - .1 i: both class lines are items 0..8 in order.
# Truth: class 0 on items 0..3, class 1 on items 0..5 (items 0..3 have both). Labeled: 0 -> (1, 1), 8 -> (0, 0).
# The seeded class cycle for seed 0 is (0, 1). With the oracle:
#   pick 1, class 0: labeled 0 (y=1), 8 (y=0), run 1..7 -> middle (0 + 8) // 2 = 4; answer (0, 1)
#   pick 2, class 1: labeled 0 (1), 4 (1), 8 (0): run 5..7 between 4 and 8 -> middle 6; answer (0, 0)
#   pick 3, class 0: labeled 0 (1), 4 (0), 6 (0), 8 (0): run 1..3 -> middle 2; answer (1, 1)
#   pick 4, class 1: labeled 0 (1), 2 (1), 4 (1), 6 (0), 8 (0): run 5 between 4 and 6 -> item 5; answer (0, 1)
#   pick 5, class 0: labeled 0 1, 2 1, 4 0, ...: run 3 between 2 and 4 -> item 3
NINE_P = np.stack([0.9 - 0.1 * np.arange(9)] * 2, axis=1)
NINE_TRUTH = np.array([[1, 1]] * 4 + [[0, 1]] * 2 + [[0, 0]] * 3)


def nine_inputs() -> StrategyInputs:
    return StrategyInputs(np.arange(1, 8), probs=NINE_P, labeled=np.array([0, 8]),
                          labels=NINE_TRUTH[[0, 8]], multi_label=True)


def test_galaxy_multi_label_with_ask_hand_checked() -> None:
    assert GalaxyStrategy(seed=0).cycled_classes(2).tolist() == [0, 1]
    asked = []

    def ask(position: int) -> np.ndarray:
        asked.append(position)
        return NINE_TRUTH[position]

    picks = get_strategy("galaxy").select(nine_inputs(), 5, rng(), ask=ask)
    assert picks.positions.tolist() == asked == [4, 6, 2, 5, 3]
    np.testing.assert_allclose(picks.scores, NINE_P[[4, 6, 2, 5, 3], 0])  # margin_k = P[:, k]
    assert picks.note == "galaxy: 5 bisection"


def test_galaxy_multi_label_without_ask_takes_picks_unlabeled() -> None:
    # pick 1: class 0, item 4 (taken, not labeled: it leaves the line). pick 2: class 1, visible line
    # 0,1,2,3,5,6,7,8 with labeled items 0 (y=1) at index 0 and 8 (y=0) at index 7 -> middle index 3 -> item 3.
    picks = get_strategy("galaxy").select(nine_inputs(), 2, rng())
    assert picks.positions.tolist() == [4, 3]


def test_galaxy_multi_label_refuses_a_bad_answer() -> None:
    with pytest.raises(ValueError, match=r"not a \(2,\) 0/1 label vector"):
        get_strategy("galaxy").select(nine_inputs(), 2, rng(), ask=lambda position: 1)


def test_galaxy_multi_label_line_is_p_k_not_the_multi_class_margin() -> None:
    # Class 1's line by P[:, 1] is 2, 0, 1, 3 (.9 .6 .4 .1). By the multi-class margin P1 - P0 it would be
    # 2 (.9 - .95 = -.05), 3 (.1 - .0 = .1) ...: different. Labeled 2 -> class 1, 3 -> not; candidates 0, 1 lie
    # between them on the P[:, 1] line (run 0, 1 -> middle index (0 + 3) // 2 = 1 -> item 0).
    probs = np.array([[0.2, 0.6], [0.3, 0.4], [0.95, 0.9], [0.0, 0.1]])
    inputs = StrategyInputs(np.array([0, 1]), probs=probs, labeled=np.array([2, 3]),
                            labels=np.array([[1, 1], [0, 0]]), multi_label=True)
    picks = GalaxyStrategy(classes=[1]).select(inputs, 2, rng())
    assert picks.positions.tolist() == [0, 1]
    np.testing.assert_allclose(picks.scores, [0.6, 0.4])


def test_tailor_multi_label_galaxy_arm_is_the_galaxy_strategy() -> None:
    inputs = random_multilabel_pool(n=120, classes=3, seed=9)
    for k in range(3):
        arm, = arm_rankings([Arm("galaxy", k)], inputs, 10, rng(4))
        child = rng(4).spawn(1)[0]
        direct = GalaxyStrategy(classes=[k]).select(inputs, 10, child).positions
        assert arm.tolist() == direct.tolist()


# ---------------------------------------------------------------------------------------------- coreset, random


def test_coreset_and_random_ignore_the_label_kind() -> None:
    inputs = random_multilabel_pool()
    for name in ("coreset", "random"):
        a = get_strategy(name).select(inputs, 10, rng(2))
        b = get_strategy(name).select(replace(inputs, multi_label=False, labels=np.zeros(12, dtype=int)), 10, rng(2))
        assert a.positions.tolist() == b.positions.tolist()


# ---------------------------------------------------------------------------------------------- ranked_batch

# Item 0 at x = 0 is labeled; candidates 1, 2, 3 at x = -1, 1, 2, so d = 1, 1, 2 to the labeled item.
# u = 1 - 2 mean |P - .5|: item 1 (.5, .5) -> 1; item 2 (.9, .1) -> .2; item 3 (.8, .9) -> .3.
# alpha = |U| / (|U| + |L|) = 3 / 4. score = alpha (1 - 1 / (1 + d)) + (1 - alpha) u:
#   item 1: .75 x .5 + .25 x 1 = .625 <- first; item 2: .375 + .05 = .425; item 3: .75 x 2/3 + .075 = .575
# Second pick, t = 1, alpha = 2/4; distances to labeled + picked: item 2 min(1, 2) = 1, item 3 min(2, 3) = 2:
#   item 2: .5 x .5 + .5 x .2 = .35; item 3: .5 x 2/3 + .5 x .3 = .4833 <- second
# The multi-class u = 1 - max P (.5, .1, .1) would score item 1 .5, item 3 .525: item 3 first.
RB_X = np.array([[0.0], [-1.0], [1.0], [2.0]])
RB_P = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.8, 0.9]])


def test_ranked_batch_multi_label_uncertainty_hand_checked() -> None:
    inputs = StrategyInputs(np.array([1, 2, 3]), probs=RB_P, features=RB_X, labeled=np.array([0]),
                            labels=np.array([[1, 0]]), multi_label=True)
    picks = get_strategy("ranked_batch").select(inputs, 1, rng())
    assert picks.positions.tolist() == [1] and picks.scores[0] == pytest.approx(0.625)
    two = get_strategy("ranked_batch").select(inputs, 2, rng())
    assert two.positions.tolist() == [1, 3] and two.scores[1] == pytest.approx(0.5 * 2 / 3 + 0.5 * 0.3)
    multi_class = get_strategy("ranked_batch").select(replace(inputs, multi_label=False, labels=np.array([0])), 1,
                                                      rng())
    assert multi_class.positions.tolist() == [3] and multi_class.scores[0] == pytest.approx(0.525)


# ---------------------------------------------------------------------------------------------- bait


def test_bait_multi_label_fisher_is_diag_p_1_minus_p() -> None:
    # Six items on the unit circle, K = 2; all confident (.99, .01) except item 2 at (.5, .5): trace of
    # diag(p (1 - p)) is .0198 vs .5, so item 2 carries ~25x the information and is the single pick.
    angles = np.arange(6) * np.pi / 3
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    probs = np.tile([0.99, 0.01], (6, 1))
    probs[2] = 0.5
    inputs = StrategyInputs(np.arange(1, 6), probs=probs, penultimate=circle, labeled=np.array([0]),
                            labels=np.array([[1, 0]]), multi_label=True)
    assert get_strategy("bait", dim=2).select(inputs, 1, rng()).positions.tolist() == [2]
    # (.99, .99) is as informative as (.99, .01) for sigmoids (p (1 - p) per class), never the softmax reading
    from learners.strategies.bait import FisherDesign
    design = FisherDesign(np.array([[0.99, 0.99], [0.3, 0.6]]), np.eye(2), 2, 1.0, torch.device("cpu"),
                          multi_label=True)
    np.testing.assert_allclose(design.reduced(np.array([0, 1])).numpy(),
                               [np.diag([0.0099, 0.0099]), np.diag([0.21, 0.24])], atol=1e-12)


def test_bait_multi_label_refuses_k_times_dim_over_the_limit() -> None:
    inputs = random_multilabel_pool(n=60, classes=21, seed=3)
    with pytest.raises(ValueError, match=r"630 x 630 \(K \* dim = 21 \* 30\)"):
        get_strategy("bait", dim=30).select(replace(inputs, penultimate=rng().normal(size=(60, 40))), 2, rng())


@pytest.mark.parametrize("seed, lam, classes, budget, labeled", [(0, 1.0, 3, 3, 4), (1, 0.05, 2, 2, 0)])
def test_bait_multi_label_matches_greedy_on_the_dense_objective(seed, lam, classes, budget, labeled) -> None:
    g = rng(seed)
    n, h, dim = 24, 5, 3
    probs = g.random((n, classes))
    feats = g.normal(size=(n, h)) * g.uniform(0.2, 3, size=(n, 1))
    x = feats - feats.mean(axis=0)
    _, vecs = np.linalg.eigh(x.T @ x)
    x = x @ vecs[:, ::-1][:, :dim]
    info = [np.kron(np.diag(p * (1 - p)), np.outer(xi, xi)) for p, xi in zip(probs, x)]
    fisher = sum(info) / n

    lab, cands = list(range(labeled)), list(range(labeled, n))

    def objective(members: list[int]) -> float:
        """The original's design matrix: a batch item weighs `budget` times a labeled one."""
        zero = np.zeros_like(fisher)
        a = (lam * np.eye(len(fisher)) + sum((info[i] for i in lab), zero) / (labeled + budget)
             + sum((info[i] for i in members), zero) * budget / (labeled + budget))
        return float(np.trace(np.linalg.solve(a, fisher)))

    batch: list[int] = []
    for _ in range(2 * budget):
        batch.append(min((c for c in cands if c not in batch), key=lambda c: objective(batch + [c])))
    while len(batch) > budget:
        batch.remove(min(batch, key=lambda b: objective([i for i in batch if i != b])))
    inputs = StrategyInputs(np.array(cands), probs=probs, penultimate=feats, labeled=np.array(lab, dtype=int),
                            labels=(g.random((labeled, classes)) < 0.5).astype(int), multi_label=True)
    picks = get_strategy("bait", dim=dim, lam=lam).select(inputs, budget, rng())
    assert sorted(picks.positions.tolist()) == sorted(batch)


# ---------------------------------------------------------------------------------------------- TAILOR


def test_tailor_reads_multi_label_from_the_inputs() -> None:
    inputs = random_multilabel_pool(n=200, classes=3, labeled=30, seed=11)
    strategy = get_strategy("tailor")  # no constructor flag: the inputs say multi-label
    picks = strategy.select(inputs, 15, rng(1))
    assert strategy.posterior.multi_label and len(set(picks.positions.tolist())) == 15
    assert strategy.posterior.arm_names == [a.name for a in build_arms(
        ("emal", "uncertain*", "most_likely*", "galaxy*"), 3, multi_label=True)]


def test_tailor_registered_arms_run_their_multi_label_rule() -> None:
    inputs = random_multilabel_pool(n=100, classes=3, seed=12)
    confidence, = arm_rankings([Arm("confidence")], inputs, 8, rng(2))
    child = rng(2).spawn(1)[0]
    assert confidence.tolist() == get_strategy("confidence").select(inputs, 8, child).positions.tolist()
    p = inputs.probs[inputs.candidates]
    expected = inputs.candidates[np.argsort(np.abs(p - 0.5).mean(axis=1))[:8]]  # no ties in random probs
    assert confidence.tolist() == expected.tolist()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_tailor_refuses_arms_without_a_multi_label_rule(name: str) -> None:
    with pytest.raises(ValueError, match=f"TAILOR arm '{name}': strategy '{name}' has no multi-label rule"):
        build_arms([name], 3, multi_label=True)
    with pytest.raises(ValueError, match="has no multi-label rule"):
        get_strategy("tailor", arms=[name]).select(random_multilabel_pool(), 3, rng())


# ---------------------------------------------------------------------------------------------- heads


def synthetic_multilabel(n: int = 600, d: int = 10, classes: int = 4, seed: int = 0):
    """Gaussian features; class k present when x . w_k > b_k (about 30-50 % positives per class, any subset)."""
    g = rng(seed)
    x = g.normal(size=(n, d)).astype(np.float32)
    w = g.normal(size=(d, classes))
    scores = x @ w
    cut = [np.quantile(scores[:, k], q) for k, q in enumerate(g.uniform(0.5, 0.7, size=classes))]
    y = (scores > np.array(cut)).astype(np.float32)
    return x, y


@pytest.mark.parametrize("kind", ["linear", "mlp", "bottleneck"])
def test_heads_learn_a_multi_label_problem_and_round_trip(kind: str, tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    x, y = synthetic_multilabel()
    head = train_head(x[:400], y[:400], 4, HeadConfig(kind=kind, epochs=30), multi_label=True)
    assert head.multi_label and head.metadata()["multi_label"] == "true"
    probs = head.predict_proba(x[400:])
    assert probs.shape == (200, 4) and np.all((probs >= 0) & (probs <= 1))
    assert not np.allclose(probs.sum(axis=1), 1.0)  # independent sigmoids, not a softmax
    metrics = multilabel_metrics(y[400:], probs)
    positives = y[400:].mean(axis=0)
    assert metrics["mAP"] > positives.mean() + 0.3, metrics  # chance mAP is about the positive rate (~.4)
    assert metrics["micro_f1"] > 0.75, metrics

    path = tmp_path / "head.safetensors"
    save_file(head.state_arrays(), str(path), metadata=head.metadata())
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    back = TrainedHead.from_state(load_file(str(path)), metadata)
    assert back.multi_label and back.kind == kind
    np.testing.assert_allclose(back.predict_proba(x[400:]), probs, rtol=1e-6, atol=1e-7)


def test_multi_class_heads_stay_softmax_and_old_metadata_loads_as_multi_class() -> None:
    x, y = synthetic_multilabel(n=100)
    head = train_head(x, y.argmax(axis=1), 4, HeadConfig(epochs=2))
    assert not head.multi_label and head.metadata()["multi_label"] == "false"
    old = {k: v for k, v in head.metadata().items() if k != "multi_label"}
    back = TrainedHead.from_state(head.state_arrays(), old)
    assert not back.multi_label
    np.testing.assert_allclose(back.predict_proba(x).sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="'multi_label' must be"):
        TrainedHead.from_state(head.state_arrays(), {**old, "multi_label": "yes"})


def test_multi_label_training_checks_its_labels_and_warm_start() -> None:
    x, y = synthetic_multilabel(n=50)
    with pytest.raises(ValueError, match=r"multi-label labels \(N, 4\)"):
        train_head(x, y.argmax(axis=1), 4, HeadConfig(epochs=1), multi_label=True)
    with pytest.raises(ValueError, match="0/1"):
        train_head(x, y * 2, 4, HeadConfig(epochs=1), multi_label=True)
    multi_class = train_head(x, y.argmax(axis=1), 4, HeadConfig(epochs=1))
    with pytest.raises(ValueError, match="multi-label head from a multi-class"):
        train_head(x, y, 4, HeadConfig(epochs=1), multi_label=True, init=multi_class)
    warm = train_head(x, y, 4, HeadConfig(epochs=1), multi_label=True)
    assert train_head(x, y, 4, HeadConfig(epochs=1), multi_label=True, init=warm).multi_label


# ---------------------------------------------------------------------------------------------- semi-supervised


def test_multilabel_pseudo_label_targets_worked_example() -> None:
    # tau = .95: target 1 at P >= .95, 0 at P <= .05, else masked
    probs = np.array([[0.97, 0.50, 0.02],
                      [0.95, 0.951, 0.05],
                      [0.949, 0.051, 0.96],
                      [0.30, 0.70, 0.50]])
    targets, mask = multilabel_pseudo_label_targets(probs, 0.95)
    np.testing.assert_array_equal(mask, [[1, 0, 1], [1, 1, 1], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(targets, [[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="tau > 0.5"):
        multilabel_pseudo_label_targets(probs, 0.5)


def test_pseudo_label_term_is_bce_over_unmasked_entries() -> None:
    # A linear head with fixed weights; the term must equal the BCE of the trained net on the unmasked entries
    # only, averaged over those entries, for rows drawn from the unlabeled set.
    x = np.array([[3.0, 0.0], [0.0, 3.0], [0.1, 0.1], [-3.0, -3.0]], dtype=np.float32)
    config = HeadConfig(kind="linear", epochs=1)
    problem = SSLProblem(x, np.array([0]), np.array([[1, 0]], dtype=np.float32), np.array([1, 2, 3]), 2, config,
                         SSLConfig(method="pseudo_label", tau=0.9), None, "cpu", multi_label=True)
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))
        net.bias.zero_()
    term = _PseudoLabelTerm(problem)
    term.start_epoch(net, 0)
    loss, rows = term.loss(net, 0, np.array([0, 1, 2]))  # unlabeled rows 1, 2, 3
    # P = sigmoid(x): row 1 (.5, .953) -> only class 1 has a target (1); row 2 (.525, .525) -> none;
    # row 3 (.047, .047) -> both targets 0. Entries: BCE(3, 1), BCE(-3, 0), BCE(-3, 0) -> all log(1 + e^-3).
    assert rows == 2
    assert loss.item() == pytest.approx(math.log1p(math.exp(-3.0)), rel=1e-6)


def test_train_head_ssl_multi_label_methods() -> None:
    x, y = synthetic_multilabel(n=600)
    labeled = np.arange(60)
    evaluation = np.arange(400, 600)
    assert MULTI_LABEL_METHODS == ("none", "pseudo_label")
    for method in MULTI_LABEL_METHODS:
        head = train_head_ssl(x, labeled, y[labeled], 4, HeadConfig(kind="mlp", epochs=10), method,
                              eval_excluded=evaluation, multi_label=True)
        assert head.multi_label
        metrics = multilabel_metrics(y[evaluation], head.predict_proba(x[evaluation]))
        assert metrics["mAP"] > 0.7, (method, metrics)
    for method in ("flexmatch", "lftl_vpa"):
        with pytest.raises(ValueError, match=f"ssl method '{method}' has no multi-label version"):
            train_head_ssl(x, labeled, y[labeled], 4, HeadConfig(epochs=1), method, multi_label=True)
    with pytest.raises(ValueError, match="tau > 0.5"):
        train_head_ssl(x, labeled, y[labeled], 4, HeadConfig(epochs=1), SSLConfig("pseudo_label", tau=0.5),
                       multi_label=True)
    with pytest.raises(ValueError, match=r"multi-label labels \(N, 4\)"):
        train_head_ssl(x, labeled, y[labeled].argmax(axis=1), 4, HeadConfig(epochs=1), multi_label=True)


# ---------------------------------------------------------------------------------------------- metrics


def test_multilabel_metrics_hand_checked() -> None:
    # class 0: scores .9 .8 .7 .1 for y 1 0 1 0 -> precision at the positives 1/1, 2/3 -> AP = 5/6
    # class 1: scores .2 .6 .6 .3 for y 0 1 0 0 -> .6 is one threshold holding items 1 and 2: P = 1/2 -> AP = 1/2
    # class 2: no positive -> no AP
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    s = np.array([[0.9, 0.2, 0.1], [0.8, 0.6, 0.2], [0.7, 0.6, 0.3], [0.1, 0.3, 0.7]])
    m = multilabel_metrics(y, s)
    assert m["per_class_ap"][:2] == pytest.approx([5 / 6, 0.5]) and m["per_class_ap"][2] is None
    assert m["mAP"] == pytest.approx((5 / 6 + 0.5) / 2)
    # predictions > .5: class 0 items 0, 1, 2 (tp 2, fp 1); class 1 items 1, 2 (tp 1, fp 1); class 2 item 3 (fp 1)
    # micro: 2 x 3 / (2 x 3 + 3 fp + 0 fn) = 6/9; macro: F1 = 2*2/(2+3) = .8, 2*1/(1+2) = 2/3, 0 -> mean .4889
    assert m["micro_f1"] == pytest.approx(6 / 9)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    assert m["labels_per_class"] == [2, 1, 0] == multilabel_labels_per_class(y, 3) and m["n"] == 4
    empty = multilabel_metrics(np.zeros((0, 3)), np.zeros((0, 3)))
    assert empty["mAP"] is None and empty["per_class_ap"] == [None] * 3 and empty["n"] == 0


def test_average_precision_equals_sklearn_per_class() -> None:
    from sklearn.metrics import average_precision_score, f1_score

    g = rng(0)
    for _ in range(200):
        n, k = int(g.integers(1, 40)), int(g.integers(2, 6))
        y = (g.random((n, k)) < 0.3).astype(int)
        s = np.round(g.random((n, k)), 1)  # many ties
        m = multilabel_metrics(y, s)
        ap = average_precision_per_class(y, s)
        for j in range(k):
            if y[:, j].any():
                assert ap[j] == pytest.approx(average_precision_score(y[:, j], s[:, j]), abs=1e-12)
                assert m["per_class_ap"][j] == pytest.approx(ap[j])
            else:
                assert np.isnan(ap[j]) and m["per_class_ap"][j] is None
        present = y.any(axis=0)
        if present.any():
            expected = np.mean([average_precision_score(y[:, j], s[:, j]) for j in np.flatnonzero(present)])
            assert m["mAP"] == pytest.approx(expected, abs=1e-12)
        predicted = (s > 0.5).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if y.any() or predicted.any():
                assert m["micro_f1"] == pytest.approx(f1_score(y, predicted, average="micro"), abs=1e-12)
            macro = f1_score(y, predicted, average="macro", zero_division=np.nan)
        assert (m["macro_f1"] is None and np.isnan(macro)) or m["macro_f1"] == pytest.approx(macro, abs=1e-12)


def test_multilabel_metrics_check_their_inputs() -> None:
    with pytest.raises(ValueError, match="one shape"):
        multilabel_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="0/1"):
        multilabel_metrics(np.full((3, 2), 2), np.zeros((3, 2)))
