"""LFTL (specs/lftl.md): the `lftl` strategy on hand-checked numbers, its agreement with `margin`, previous
predictions missing or out of pool order; the `bottleneck` head, warm starts, and `lftl_vpa` (memory rule, loss,
where its gradient goes, evaluation rows never read, seeding)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from sklearn.datasets import load_digits

from learners import vpa
from learners.embedding import standardize
from learners.heads import HeadConfig, TrainedHead, initial_net, train_head
from learners.ssl import SSLConfig, train_head_ssl
from learners.strategies import StrategyInputs, get_strategy
from learners.strategies.lftl import contrast_probs

NAN = np.nan
# Five candidates, three classes, alpha = 0.1. Pc = P + 0.1 (P - P_prev); u = top1(Pc) - top2(Pc).
#   row  P               P_prev          Pc                 u     margin of P  yhat
#   0    .50 .30 .20     .70 .10 .20     .48  .32  .20      .16   .20          0
#   1    .55 .40 .05     .35 .60 .05     .57  .38  .05      .19   .15          0
#   2    .10 .20 .70     (none)          = P                .50   .50          2
#   3    .46 .44 .10     .21 .69 .10     .485 .415 .10      .07   .02          0
#   4    .20 .45 .35     (none)          = P                .10   .10          1
P = np.array([[.50, .30, .20], [.55, .40, .05], [.10, .20, .70], [.46, .44, .10], [.20, .45, .35]])
P_PREV = np.array([[.70, .10, .20], [.35, .60, .05], [NAN, NAN, NAN], [.21, .69, .10], [NAN, NAN, NAN]])
PC = np.array([[.48, .32, .20], [.57, .38, .05], [.10, .20, .70], [.485, .415, .10], [.20, .45, .35]])
U = np.array([.16, .19, .50, .07, .10])
ALL = np.arange(5)


def select(probs: np.ndarray, previous: np.ndarray | None, budget: int = 5, seed: int = 0,
           candidates: np.ndarray = ALL, **params):
    inputs = StrategyInputs(candidates, probs=probs, previous_probs=previous)
    return get_strategy("lftl", **params).select(inputs, budget, np.random.default_rng(seed))


def test_contrast_worked_example() -> None:
    prev = torch.from_numpy(np.where(np.isnan(P_PREV), P, P_PREV))
    np.testing.assert_allclose(contrast_probs(torch.from_numpy(P), prev, 0.1, "prob").numpy(), PC, atol=1e-12)
    picks = select(P, P_PREV, contrast=0.1, balance=0.0)
    assert picks.positions.tolist() == [3, 4, 0, 1, 2]  # smallest u first; margin alone: 3, 4, 1, 0, 2
    np.testing.assert_allclose(picks.scores, 1 - U[[3, 4, 0, 1, 2]], atol=1e-12)
    assert get_strategy("margin").select(StrategyInputs(ALL, probs=P), 5, np.random.default_rng(0)) \
        .positions.tolist() == [3, 4, 1, 0, 2]
    assert "2 new: contrast 0" in picks.note and "previous predictions for 3/5" in picks.note


def test_class_balance_worked_example() -> None:
    # topk = 2: the largest u are rows 2 (yhat 2) and 1 (yhat 0) -> counts (1, 0, 1) -> c = (1, 0, 1).
    # u / max(u) = u / .5 = (.32, .38, 1, .14, .20); + 0.1 c[yhat] = (.42, .48, 1.1, .24, .20):
    # row 4 (class 1, absent from the confident rows) now comes before row 3.
    picks = select(P, P_PREV, contrast=0.1, balance=0.1, topk=2)
    assert picks.positions.tolist() == [4, 3, 0, 1, 2]
    np.testing.assert_allclose(picks.scores, 1 - np.array([.20, .24, .42, .48, 1.1]), atol=1e-12)
    assert "balance lambda=0.1 over the top 2" in picks.note


def test_log_space_contrast_is_recorded() -> None:
    prev = np.where(np.isnan(P_PREV), P, P_PREV)
    expected = P ** 1.1 / prev ** 0.1
    expected /= expected.sum(axis=1, keepdims=True)
    got = contrast_probs(torch.from_numpy(P), torch.from_numpy(prev), 0.1, "log").numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)
    picks = select(P, P_PREV, contrast=0.1, space="log")
    assert picks.note.startswith("lftl: log space, contrast alpha=0.1") and len(picks) == 5
    assert select(P, P_PREV).note.startswith("lftl: prob space, contrast alpha=0.03, balance lambda=0.1")
    with pytest.raises(ValueError, match="space must be one of prob, log"):
        get_strategy("lftl", space="logit")


def test_missing_previous_rows_and_no_previous_use_p() -> None:
    rng = np.random.default_rng(3)
    probs, pool = rng.dirichlet(np.ones(4), size=50), np.arange(50)
    all_missing = select(probs, np.full_like(probs, NAN), budget=10, candidates=pool, balance=0.0)
    none_given = select(probs, None, budget=10, candidates=pool, balance=0.0)
    margin = get_strategy("margin").select(StrategyInputs(np.arange(50), probs=probs), 10, np.random.default_rng(0))
    for picks in (all_missing, none_given):
        assert picks.positions.tolist() == margin.positions.tolist()
    assert "no previous predictions: contrast 0 for every candidate" in none_given.note
    assert "previous predictions for 0/50 candidates (50 new" in all_missing.note
    partial = np.full_like(probs, NAN)
    partial[7, 0] = 0.5
    with pytest.raises(ValueError, match="all NaN .* or have no NaN; 1 mix both, e.g. pool positions \\[7\\]"):
        select(probs, partial, candidates=pool)
    with pytest.raises(ValueError, match="previous_probs must have the shape of probs"):
        select(probs, probs[:, :3], candidates=pool)


@pytest.mark.parametrize("seed", range(5))
def test_no_contrast_no_balance_is_margin(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # probabilities on a coarse grid: many exact ties between margins, resolved by the rng
    probs = np.round(rng.dirichlet(np.ones(5), size=400), 1).astype(np.float32)
    previous = rng.dirichlet(np.ones(5), size=400).astype(np.float32)
    previous[rng.random(400) < 0.2] = NAN
    candidates = np.sort(rng.choice(400, 300, replace=False))
    margin = get_strategy("margin").select(StrategyInputs(candidates, probs=probs), 40, np.random.default_rng(seed))
    assert len(np.unique(margin.scores)) < 40  # ties among the picks
    for prev in (previous, None):
        lftl = select(probs, prev, budget=40, seed=seed, candidates=candidates, contrast=0.0, balance=0.0,
                      chunk_rows=7)
        np.testing.assert_array_equal(lftl.positions, margin.positions)
        np.testing.assert_array_equal(lftl.scores, margin.scores)
    one_class = np.ones((6, 1), dtype=np.float32)
    assert select(one_class, None, budget=3, seed=seed, candidates=np.arange(6), contrast=0.0, balance=0.0) \
        .positions.tolist() == get_strategy("margin").select(
            StrategyInputs(np.arange(6), probs=one_class), 3, np.random.default_rng(seed)).positions.tolist()


def test_previous_predictions_follow_items_when_the_pool_order_changes() -> None:
    rng = np.random.default_rng(1)
    probs, previous = rng.dirichlet(np.ones(6), size=200), rng.dirichlet(np.ones(6), size=200)
    previous[::9] = NAN
    items = np.arange(1000, 1200)  # item ids by pool position
    first = select(probs, previous, budget=15, candidates=np.arange(200), topk=20)
    order = rng.permutation(200)  # the same items, another pool order; the caller aligns P_prev by item id
    again = select(probs[order], previous[order], budget=15, candidates=np.arange(200), topk=20)
    assert items[order][again.positions].tolist() == items[first.positions].tolist()


def test_default_topk_is_five_percent_of_the_candidates_at_most_500() -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=12_000)
    assert "over the top 5;" in select(probs, None, budget=2, candidates=np.arange(100)).note
    assert "over the top 500;" in select(probs, None, budget=2, candidates=np.arange(12_000)).note
    assert "balance off" in select(probs, None, budget=2, candidates=np.arange(100), balance=0.0).note


# ---- bottleneck head, warm start, VPA ----

@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """600 standardized digits as a pool (40 labeled, 80 evaluation rows) and the rest as a test set."""
    data = load_digits()
    x, mean, std = standardize(data.data[:600])
    x_test, _, _ = standardize(data.data[600:], mean, std)
    order = np.random.default_rng(0).permutation(600)
    return {"x": x, "y": data.target[:600], "labeled": order[:40], "eval": order[40:120], "x_test": x_test,
            "y_test": data.target[600:]}


def vpa_head(d, x=None, init=None, eval_rows=True, **settings) -> TrainedHead:
    config = HeadConfig(epochs=settings.pop("epochs", 3), seed=settings.pop("seed", 0))
    ssl = SSLConfig("lftl_vpa", **settings)
    x = d["x"] if x is None else x
    return train_head_ssl(x, d["labeled"], d["y"][d["labeled"]], 10, config, ssl,
                          eval_excluded=d["eval"] if eval_rows else None, init=init)


def test_bottleneck_head_round_trip_through_safetensors(digits, tmp_path: Path) -> None:
    x, y = digits["x"], digits["y"]
    head = train_head(x[:300], y[:300], 10, HeadConfig(kind="bottleneck", epochs=3))
    arrays = head.state_arrays()
    assert {"bn.running_mean", "bn.running_var", "fc.parametrizations.weight.original0"} <= set(arrays)
    assert np.abs(arrays["bn.running_mean"]).max() > 0  # the running statistics were trained and are saved
    path = tmp_path / "head.safetensors"
    save_file(arrays, str(path), metadata=head.metadata())
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    loaded = TrainedHead.from_state(load_file(str(path)), metadata)
    assert (loaded.kind, loaded.num_classes, loaded.in_dim) == ("bottleneck", 10, 64)
    np.testing.assert_array_equal(loaded.predict_proba(digits["x_test"]), head.predict_proba(digits["x_test"]))
    assert loaded.penultimate(digits["x_test"][:5]).shape == (5, 256)
    accuracy = (head.predict_proba(digits["x_test"]).argmax(1) == digits["y_test"]).mean()
    assert accuracy > 0.7, accuracy
    # one label: BatchNorm cannot take batch statistics of one row (train_head's batch repeats it; VPA's is 1 row)
    one = train_head(x[:1], y[:1], 10, HeadConfig(kind="bottleneck", epochs=2))
    single = train_head_ssl(x, np.array([0]), y[:1], 10, HeadConfig(epochs=2), "lftl_vpa")
    for head in (one, single):
        np.testing.assert_allclose(head.predict_proba(x[:3]).sum(axis=1), 1.0, rtol=1e-5)


def test_anchor_memory_update_worked_example() -> None:
    memory = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    fresh = torch.tensor([[3.0, 4.0], [1.0, 1.0]], requires_grad=True)
    first = vpa.update_anchor_memory(None, fresh)
    assert torch.equal(first, fresh.detach()) and not first.requires_grad
    # 0.1 memory + 0.9 fresh = [[0.1 + 2.7, 0 + 3.6], [0 + 0.9, 0.2 + 0.9]]
    updated = vpa.update_anchor_memory(memory, fresh)
    torch.testing.assert_close(updated, torch.tensor([[2.8, 3.6], [0.9, 1.1]]))
    assert not updated.requires_grad


def test_vpa_gradient_reaches_only_the_bottleneck_and_classifier(digits) -> None:
    x, y, labeled = digits["x"], digits["y"], digits["labeled"]
    net = initial_net("bottleneck", 64, 10, seed=0)
    anchors = torch.from_numpy(x[labeled])
    unlabeled = torch.from_numpy(x[200:264])
    memory = vpa.update_anchor_memory(None, vpa.anchor_features(net, anchors))
    assert net.training and not memory.requires_grad
    loss, parts = vpa.vpa_loss(net, anchors[:16], torch.from_numpy(y[labeled[:16]]), unlabeled, memory, 0.9, 1.0)
    loss.backward()
    with_grad = {name for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"bottleneck.weight", "bottleneck.bias", "bn.weight", "bn.bias", "fc.bias",
                         "fc.parametrizations.weight.original0", "fc.parametrizations.weight.original1"}
    for tensor in (anchors, unlabeled, memory):
        assert not tensor.requires_grad and tensor.grad is None
    assert set(parts) == {"ce", "im", "vpa"}

    net.zero_grad(set_to_none=True)  # L_vpa alone acts on the bottleneck features, before the classifier
    vpa.persistence_loss(net.penultimate(unlabeled), memory).backward()
    assert {name for name, p in net.named_parameters() if p.grad is not None} == {
        "bottleneck.weight", "bottleneck.bias", "bn.weight", "bn.bias"}


def test_vpa_losses_on_hand_checked_inputs() -> None:
    # two equally likely classes per item, items disagreeing: item entropy ln 2, batch mean (.5, .5) ln 2 -> 0
    assert vpa.information_maximisation_loss(torch.zeros(2, 2)).item() == pytest.approx(np.log(2) - np.log(2),
                                                                                          abs=1e-4)
    # a feature equally similar to 3 anchors: uniform softmax, entropy ln 3
    features, memory = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 2.0]])
    assert vpa.persistence_loss(features, memory).item() == pytest.approx(np.log(3), abs=1e-6)
    assert vpa.scheduled_lr(1e-3, 10, 10) == pytest.approx(1e-3 * 11 ** -0.75)


def test_vpa_loss_decreases_and_reports_progress(digits) -> None:
    messages: list[tuple[float, str]] = []
    config, ssl = HeadConfig(epochs=8, seed=0), SSLConfig("lftl_vpa", vpa_lr=1e-2)
    d = digits
    head = train_head_ssl(d["x"], d["labeled"], d["y"][d["labeled"]], 10, config, ssl, eval_excluded=d["eval"],
                          progress=lambda f, m: messages.append((f, m)))
    losses = [float(m.split("loss ")[1].split(" ")[0]) for _, m in messages]
    assert len(messages) == 8 and messages[-1][0] == 1.0 and "vpa" in messages[-1][1]
    assert losses[-1] < losses[0] - 0.5, losses
    assert head.kind == "bottleneck"
    accuracy = (head.predict_proba(d["x_test"]).argmax(1) == d["y_test"]).mean()
    assert accuracy > 0.5, accuracy  # 40 labels, 8 epochs of ceil(480 unlabeled / 64) = 8 steps


def test_labeled_batches_cycle_in_passes_like_a_restarted_loader() -> None:
    batches = vpa.PassBatches(100, 64, torch.Generator().manual_seed(0))
    drawn = [batches.take() for _ in range(6)]
    assert [len(b) for b in drawn] == [64, 36] * 3  # the last batch of a pass is short, never topped up
    passes = [np.concatenate(drawn[i:i + 2]) for i in (0, 2, 4)]
    for rows in passes:
        np.testing.assert_array_equal(np.sort(rows), np.arange(100))
    assert not np.array_equal(passes[0], passes[1])  # every pass is shuffled afresh
    fewer = vpa.PassBatches(50, 64, torch.Generator().manual_seed(0))
    for _ in range(3):  # fewer rows than a batch: each batch is all of them, in a new order
        np.testing.assert_array_equal(np.sort(fewer.take()), np.arange(50))


def test_an_epoch_is_one_pass_over_the_unlabeled_rows() -> None:
    assert vpa.steps_per_epoch(50, 2000, 64) == 32
    assert vpa.steps_per_epoch(50, 100_000, 64) == 1563
    assert vpa.steps_per_epoch(50, 128, 64) == 2
    assert vpa.steps_per_epoch(50, 129, 64) == 3
    assert vpa.steps_per_epoch(200, 30, 64) == 4  # more labels than unlabeled rows: one pass over the labels
    assert vpa.steps_per_epoch(40, 0, 64) == 1


def epoch_reports(d, epochs: int, **settings) -> list[tuple[int, float]]:
    """(steps, learning rate at the epoch's last step) per epoch, from the training's progress messages."""
    messages: list[str] = []
    train_head_ssl(d["x"], d["labeled"], d["y"][d["labeled"]], 10, HeadConfig(epochs=epochs, seed=0),
                   SSLConfig("lftl_vpa", **settings), eval_excluded=d["eval"], progress=lambda f, m: messages.append(m))
    reports = [m.split("(")[1].split(")")[0] for m in messages]  # "8 steps, lr 0.000573"
    return [(int(r.split(" steps")[0]), float(r.split("lr ")[1])) for r in reports]


def test_vpa_steps_and_schedule_follow_the_unlabeled_pool(digits) -> None:
    # 600 rows - 40 labeled - 80 evaluation = 480 unlabeled: ceil(480 / 64) = 8 steps per epoch, 24 in all; the
    # floor the other methods put on steps does not apply
    reports = epoch_reports(digits, 3, min_steps_per_epoch=50)
    assert [steps for steps, _ in reports] == [8, 8, 8]
    # lr at step t of T = 3 x 8 is 1e-3 (1 + 10 t / T)^-0.75: after epoch e, t = 8 e, so t / T = e / 3
    for epoch, (_, lr) in enumerate(reports, start=1):
        assert lr == pytest.approx(1e-3 * (1 + 10 * epoch / 3) ** -0.75, rel=1e-2)
    assert [steps for steps, _ in epoch_reports(digits, 2, vpa_batch=100)] == [5, 5]


def test_vpa_without_unlabeled_rows_makes_one_pass_over_the_labels(digits) -> None:
    d = digits
    everything_else = np.setdiff1d(np.arange(len(d["x"])), d["labeled"])
    messages: list[str] = []
    head = train_head_ssl(d["x"], d["labeled"], d["y"][d["labeled"]], 10, HeadConfig(epochs=2, seed=0),
                          SSLConfig("lftl_vpa", vpa_batch=16), eval_excluded=everything_else,
                          progress=lambda f, m: messages.append(m))
    assert all("(3 steps, " in m and "im 0.0000, vpa 0.0000" in m for m in messages), messages  # ceil(40 / 16)
    assert head.kind == "bottleneck"


def test_vpa_trains_a_bottleneck_head_whatever_the_kind_and_mixup_runs(digits) -> None:
    messages: list[str] = []
    d = digits
    head = train_head_ssl(d["x"], d["labeled"], d["y"][d["labeled"]], 10, HeadConfig(kind="mlp", epochs=2),
                          SSLConfig("lftl_vpa", mixup=True),
                          progress=lambda f, m: messages.append(m))
    assert head.kind == "bottleneck" and "mixup" in messages[-1]


def test_evaluation_rows_are_never_read(digits) -> None:
    first = vpa_head(digits, mixup=True)
    x_changed = digits["x"].copy()
    x_changed[digits["eval"]] = np.random.default_rng(9).normal(0, 50, (len(digits["eval"]), 64))
    again = vpa_head(digits, x=x_changed, mixup=True)
    for name, weights in first.state_arrays().items():
        np.testing.assert_array_equal(again.state_arrays()[name], weights, err_msg=name)
    leaked = vpa_head(digits, x=x_changed, eval_rows=False, mixup=True)  # the check has teeth
    assert not np.array_equal(leaked.state_arrays()["bottleneck.weight"], first.state_arrays()["bottleneck.weight"])


def test_same_seed_same_head_and_global_state_untouched(digits) -> None:
    rng_state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    runs = [vpa_head(digits, seed=seed, epochs=2, mixup=True).predict_proba(digits["x_test"]) for seed in (4, 4, 5)]
    assert torch.equal(torch.random.get_rng_state(), rng_state) and torch.get_num_threads() == threads
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_warm_start_starts_from_the_given_head(digits) -> None:
    x, y = digits["x"], digits["y"]
    source = train_head(x[300:], y[300:], 10, HeadConfig(kind="bottleneck", epochs=3, seed=1))
    source = TrainedHead.from_state(source.state_arrays(), source.metadata())  # as exported by another project
    before = source.state_arrays()
    trainable = [name for name in before if "running" not in name and "num_batches" not in name]

    def distance(head: TrainedHead) -> float:
        return max(np.abs(head.state_arrays()[name] - before[name]).max() for name in trainable)

    one_step = dict(epochs=1, vpa_batch=128, vpa_lr=1e-7)
    warm = vpa_head(digits, init=source, **one_step)
    fresh = vpa_head(digits, **one_step)
    assert distance(warm) < 1e-5 < 0.1 < distance(fresh)
    for name, array in source.state_arrays().items():  # the given head itself is left untouched
        np.testing.assert_array_equal(array, before[name], err_msg=name)
    tiny_adam = HeadConfig(kind="bottleneck", epochs=1, lr=1e-9, min_steps_per_epoch=1)
    assert distance(train_head(x[:40], y[:40], 10, tiny_adam, init=source)) < 1e-5
    supervised = train_head_ssl(x, digits["labeled"], y[digits["labeled"]], 10, tiny_adam, "none", init=source)
    assert distance(supervised) < 1e-5


def test_incompatible_warm_start_is_refused(digits) -> None:
    x, y = digits["x"], digits["y"]
    mlp = train_head(x[:50], y[:50], 10, HeadConfig(kind="mlp", epochs=1))
    five_classes = train_head(x[:50], y[:50] % 5, 5, HeadConfig(kind="bottleneck", epochs=1))
    with pytest.raises(ValueError, match="cannot warm-start a bottleneck head 64->10 from a mlp head 64->10"):
        vpa_head(digits, init=mlp, epochs=1)
    with pytest.raises(ValueError, match="from a bottleneck head 64->5"):
        vpa_head(digits, init=five_classes, epochs=1)
    with pytest.raises(ValueError, match="cannot warm-start a linear head 64->10 from a mlp head"):
        train_head(x[:50], y[:50], 10, HeadConfig(kind="linear", epochs=1), init=mlp)
    with pytest.raises(ValueError, match="cannot warm-start a mlp head 32->10"):
        train_head(x[:50, :32], y[:50], 10, HeadConfig(kind="mlp", epochs=1), init=mlp)


def test_ssl_config_accepts_the_vpa_settings_by_name() -> None:
    settings = {"method": "lftl_vpa", "beta_im": 0.5, "beta_vpa": 10.0, "vpa_lr": 0.01, "vpa_weight_decay": 0.0,
                "vpa_batch": 32, "mixup": True}
    config = SSLConfig.from_dict(settings)
    assert (config.beta_im, config.beta_vpa, config.vpa_lr, config.vpa_batch, config.mixup) == (0.5, 10.0, 0.01, 32,
                                                                                                True)
    defaults = SSLConfig("lftl_vpa")
    assert (defaults.beta_im, defaults.beta_vpa, defaults.vpa_lr, defaults.vpa_weight_decay, defaults.vpa_batch,
            defaults.mixup) == (0.9, 1.0, 1e-3, 1e-3, 64, False)
    with pytest.raises(ValueError, match="vpa_lr > 0"):
        SSLConfig.from_dict({"method": "lftl_vpa", "vpa_lr": 0})
