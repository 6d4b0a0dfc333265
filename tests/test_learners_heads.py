"""Heads on the bundled digits: accuracy, the convex optimum of the linear head (against scikit-learn), seeding,
save/load round trip, small and odd label sets."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from learners.embedding import standardize
from learners.heads import CV_GRID, HeadConfig, TrainedHead, choose_C, train_head


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardized pixels (train statistics), a seeded 70/30 split: x_train, y_train, x_test, y_test."""
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    cut = int(0.7 * len(order))
    train, test = order[:cut], order[cut:]
    x_train, mean, std = standardize(data.data[train])
    x_test, _, _ = standardize(data.data[test], mean, std)
    return x_train, data.target[train], x_test, data.target[test]


def softmax_objective(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray, c: float) -> float:
    """scikit-learn's multinomial LogisticRegression objective with the bias penalised like a weight:
    C * sum of cross-entropies + (||W||^2 + ||b||^2) / 2."""
    logits = x.astype(np.float64) @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return c * -log_probs[np.arange(len(y)), y].sum() + 0.5 * (np.square(weight).sum() + np.square(bias).sum())


def head_weights(head: TrainedHead) -> tuple[np.ndarray, np.ndarray]:
    state = head.state_arrays()
    return state["fc.weight"].astype(np.float64), state["fc.bias"].astype(np.float64)


def with_constant(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])


class Reference(NamedTuple):
    weight: np.ndarray
    bias: np.ndarray
    model: LogisticRegression

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(with_constant(x))


def sklearn_fit(x: np.ndarray, y: np.ndarray, c: float) -> Reference:
    """scikit-learn's LogisticRegression at C on the features plus a constant column, without intercept: the bias
    penalised like a weight, the head's objective."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = LogisticRegression(C=c, fit_intercept=False, max_iter=10_000, tol=1e-8).fit(with_constant(x), y)
    return Reference(model.coef_[:, :-1], model.coef_[:, -1], model)


@pytest.mark.parametrize(("kind", "rows"), [("linear", None), ("mlp", 300)])
def test_digits_accuracy(digits, kind: str, rows: int | None) -> None:
    x_train, y_train, x_test, y_test = digits
    head = train_head(x_train[:rows], y_train[:rows], 10, HeadConfig(kind=kind))
    probs = head.predict_proba(x_test)
    assert probs.dtype == np.float32 and probs.shape == (len(x_test), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    accuracy = (probs.argmax(axis=1) == y_test).mean()
    assert accuracy > 0.93, f"{kind}: test accuracy {accuracy:.3f}"
    assert head.kind == kind and head.num_classes == 10 and head.in_dim == 64


@pytest.mark.parametrize(("rows", "c"), [(300, 1.0), (60, 0.1), (60, 10.0)])
def test_linear_head_reaches_the_logistic_regression_optimum(digits, rows: int, c: float) -> None:
    """The default linear head solves scikit-learn's convex problem (LogisticRegression at the same C on the
    features plus a constant column): the same objective to float32 precision, the same predictions."""
    x_train, y_train, x_test, _ = digits
    x, y = x_train[:rows], y_train[:rows]
    assert len(np.unique(y)) == 10
    head = train_head(x, y, 10, HeadConfig(C=c))
    reference = sklearn_fit(x, y, c)
    ours = softmax_objective(*head_weights(head), x, y, c)
    theirs = softmax_objective(reference.weight, reference.bias, x, y, c)
    assert ours <= theirs * (1 + 1e-4), (ours, theirs)
    agree = (head.predict_proba(x_test).argmax(axis=1) == reference.predict(x_test)).mean()
    assert agree >= 0.98


def test_multi_label_linear_head_is_one_vs_rest_logistic_regression(digits) -> None:
    """Multi-label: one binary L2 logistic regression per class, at the same C as scikit-learn's."""
    x_train, y_train, x_test, _ = digits
    x, digit = x_train[:200], y_train[:200]
    tags = np.stack([digit % 2 == 0, digit > 4, np.isin(digit, [2, 3, 5, 7])], axis=1).astype(np.float32)
    head = train_head(x, tags, 3, HeadConfig(C=1.0), multi_label=True)
    weight, bias = head_weights(head)
    probs = head.predict_proba(x_test)
    for k in range(3):
        reference = sklearn_fit(x, tags[:, k].astype(int), 1.0)
        theirs, ours = (np.concatenate([w.ravel(), np.atleast_1d(b)])
                        for w, b in ((reference.weight[0], reference.bias[0]), (weight[k], bias[k])))

        def objective(params: np.ndarray, k: int = k) -> float:
            z = x.astype(np.float64) @ params[:-1] + params[-1]
            return np.logaddexp(0, z).sum() - (tags[:, k] * z).sum() + 0.5 * np.square(params).sum()

        assert objective(ours) <= objective(theirs) * (1 + 1e-4)
        assert ((probs[:, k] >= 0.5) == reference.predict(x_test).astype(bool)).mean() >= 0.98


def test_linear_head_optimum_does_not_depend_on_the_start(digits) -> None:
    """Convex: a warm start from a head trained on other rows, or another seed, ends at the same optimum."""
    x_train, y_train, x_test, _ = digits
    x, y = x_train[:150], y_train[:150]
    fresh = train_head(x, y, 10, HeadConfig(C=1.0, seed=0))
    elsewhere = train_head(x_train[600:], y_train[600:], 10, HeadConfig(C=1.0, seed=1))
    for other in (train_head(x, y, 10, HeadConfig(C=1.0, seed=1), init=elsewhere),
                  train_head(x, y, 10, HeadConfig(C=1.0, seed=7))):
        objectives = [softmax_objective(*head_weights(head), x, y, 1.0) for head in (other, fresh)]
        assert objectives[0] == pytest.approx(objectives[1], rel=1e-5)
        assert (other.predict_proba(x_test).argmax(axis=1) == fresh.predict_proba(x_test).argmax(axis=1)).mean() > 0.99


def test_cross_validated_C_follows_the_data(digits) -> None:
    """C = "cv" chooses C on the labeled rows: small for overlapping classes with flipped labels, the largest of the
    grid for separable ones; the fit then uses it. Too few labels: scikit-learn's 1."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    centres = rng.normal(size=(3, 20))
    noise = rng.normal(size=(150, 20))
    flipped = np.where(rng.random(150) < 0.3, rng.integers(0, 3, 150), y)
    overlapping = torch.from_numpy((0.6 * centres[y] + noise).astype(np.float32))
    separable = torch.from_numpy((3.0 * centres[y] + noise).astype(np.float32))
    c, note = choose_C(overlapping, torch.from_numpy(flipped), 3, HeadConfig(C="cv"))
    assert c <= 0.1 and "cross-validated" in note
    assert choose_C(separable, torch.from_numpy(y), 3, HeadConfig(C="cv"))[0] == max(CV_GRID)
    chosen = train_head(overlapping.numpy(), flipped, 3, HeadConfig(C="cv")).predict_proba(overlapping.numpy())
    fixed = train_head(overlapping.numpy(), flipped, 3, HeadConfig(C=c)).predict_proba(overlapping.numpy())
    np.testing.assert_array_equal(chosen, fixed)

    x_train, y_train, x_test, _ = digits
    messages: list[str] = []
    few = train_head(x_train[:60], y_train[:60], 10, HeadConfig(C="cv"), progress=lambda f, m: messages.append(m))
    assert "C = 1 (too few labels per class" in messages[-1]
    np.testing.assert_array_equal(few.predict_proba(x_test), train_head(x_train[:60], y_train[:60], 10,
                                                                        HeadConfig(C=1.0)).predict_proba(x_test))


def test_penultimate_shapes(digits) -> None:
    x_train, y_train, x_test, _ = digits
    linear = train_head(x_train[:100], y_train[:100], 10, HeadConfig(kind="linear", max_iter=5))
    mlp = train_head(x_train[:100], y_train[:100], 10, HeadConfig(kind="mlp", max_iter=5))
    np.testing.assert_array_equal(linear.penultimate(x_test[:5]), x_test[:5].astype(np.float32))
    hidden = mlp.penultimate(x_test[:5])
    assert hidden.shape == (5, 512) and hidden.min() >= 0  # after the ReLU


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_state_round_trip_through_safetensors(digits, tmp_path: Path, kind: str) -> None:
    x_train, y_train, x_test, _ = digits
    head = train_head(x_train[:300], y_train[:300], 10, HeadConfig(kind=kind, max_iter=20))
    path = tmp_path / "head.safetensors"
    save_file(head.state_arrays(), str(path), metadata=head.metadata())
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    loaded = TrainedHead.from_state(load_file(str(path)), metadata)
    assert (loaded.kind, loaded.num_classes, loaded.in_dim) == (kind, 10, 64)
    np.testing.assert_array_equal(loaded.predict_proba(x_test), head.predict_proba(x_test))


@pytest.mark.parametrize("config", [HeadConfig(kind="linear"), HeadConfig(kind="linear", C="cv"),
                                    HeadConfig(kind="mlp", max_iter=30),
                                    HeadConfig(kind="mlp", solver="adam", epochs=3)])
def test_same_seed_same_head_and_global_state_untouched(digits, config: HeadConfig) -> None:
    x_train, y_train, x_test, _ = digits
    state_before, threads_before = torch.random.get_rng_state(), torch.get_num_threads()
    first = train_head(x_train[:200], y_train[:200], 10, config)
    assert torch.equal(torch.random.get_rng_state(), state_before)
    assert torch.get_num_threads() == threads_before
    again = train_head(x_train[:200], y_train[:200], 10, config)
    np.testing.assert_array_equal(first.predict_proba(x_test), again.predict_proba(x_test))
    if config.kind == "mlp":  # the mlp's objective is not convex: another start ends elsewhere
        other = train_head(x_train[:200], y_train[:200], 10, dataclasses.replace(config, seed=6))
        assert not np.array_equal(first.predict_proba(x_test), other.predict_proba(x_test))


def test_one_label_per_class(digits) -> None:
    x_train, y_train, x_test, y_test = digits
    rows = np.array([np.flatnonzero(y_train == c)[0] for c in range(10)])
    head = train_head(x_train[rows], y_train[rows], 10, HeadConfig())
    assert head.predict_proba(x_train[rows]).argmax(axis=1).tolist() == list(range(10))
    reference = sklearn_fit(x_train[rows], y_train[rows], 1.0)
    assert softmax_objective(*head_weights(head), x_train[rows], y_train[rows], 1.0) <= \
        softmax_objective(reference.weight, reference.bias, x_train[rows], y_train[rows], 1.0) * (1 + 1e-4)
    assert (head.predict_proba(x_test).argmax(axis=1) == y_test).mean() > 0.5


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_one_label_and_absent_classes(digits, kind: str) -> None:
    """Classes without labels stay output classes; the seen classes take their own items, as scikit-learn fit on
    those classes alone classifies them."""
    x_train, y_train, x_test, y_test = digits
    one = train_head(x_train[:1], y_train[:1], 10, HeadConfig(kind=kind))
    probs = one.predict_proba(x_test)
    assert probs.shape == (len(x_test), 10)
    assert (probs[y_test == y_train[0]].argmax(axis=1) == y_train[0]).all()

    zeros_and_sevens = np.flatnonzero(np.isin(y_train, [0, 7]))[:40]
    x, y = x_train[zeros_and_sevens], y_train[zeros_and_sevens]
    head = train_head(x, y, 10, HeadConfig(kind=kind))
    probs = head.predict_proba(x_test)
    assert probs.shape == (len(x_test), 10)
    test_rows = np.isin(y_test, [0, 7])
    assert (probs[test_rows].argmax(axis=1) == y_test[test_rows]).mean() > 0.9
    # on zeros and sevens, most of the mass goes to the two seen classes, not the eight unseen ones
    assert probs[test_rows][:, [0, 7]].sum(axis=1).mean() > 0.9
    if kind == "linear":
        seen_only = sklearn_fit(x, y, 1.0).predict(x_test)
        assert (np.array([0, 7])[probs[:, [0, 7]].argmax(axis=1)] == seen_only).mean() >= 0.98


def test_progress_and_bad_input(digits) -> None:
    x_train, y_train, _, _ = digits
    seen: list[float] = []
    train_head(x_train[:50], y_train[:50], 10, HeadConfig(solver="adam", epochs=4),
               progress=lambda f, m: seen.append(f))
    assert seen == [0.25, 0.5, 0.75, 1.0]
    seen.clear()
    train_head(x_train[:50], y_train[:50], 10, HeadConfig(kind="mlp", max_iter=30),
               progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 10  # max_iter reached: 10 reports
    with pytest.raises(ValueError, match="without any labeled"):
        train_head(x_train[:0], y_train[:0], 10, HeadConfig())
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        train_head(x_train[:50], y_train[:50], 5, HeadConfig())
    with pytest.raises(ValueError, match="unknown head kind"):
        HeadConfig.from_dict({"kind": "transformer"})
    with pytest.raises(ValueError, match="unknown head setting"):
        HeadConfig.from_dict({"kind": "mlp", "lr_typo": 0.1})
    with pytest.raises(ValueError, match="unknown head solver"):
        HeadConfig(solver="sgd")
    with pytest.raises(ValueError, match="adam only"):
        HeadConfig(kind="bottleneck", solver="lbfgs")
    for bad in (0.0, "auto"):
        with pytest.raises(ValueError, match="C must be a number > 0 or 'cv'"):
            HeadConfig(C=bad)
    assert HeadConfig.from_dict({"kind": "mlp", "seed": 3}) == HeadConfig(kind="mlp", seed=3)
    assert (HeadConfig(kind="mlp").resolved_lr, HeadConfig(kind="linear").resolved_weight_decay) == (1e-3, 1e-4)
    assert [HeadConfig(kind=k).resolved_solver for k in ("linear", "mlp", "bottleneck")] == ["lbfgs", "lbfgs", "adam"]
