"""Heads on the bundled digits: accuracy, seeding, save/load round trip, small and odd label sets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from sklearn.datasets import load_digits

from learners.embedding import standardize
from learners.heads import HeadConfig, TrainedHead, train_head


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


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_digits_accuracy(digits, kind: str) -> None:
    x_train, y_train, x_test, y_test = digits
    head = train_head(x_train, y_train, 10, HeadConfig(kind=kind))
    probs = head.predict_proba(x_test)
    assert probs.dtype == np.float32 and probs.shape == (len(x_test), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    accuracy = (probs.argmax(axis=1) == y_test).mean()
    assert accuracy > 0.85, f"{kind}: test accuracy {accuracy:.3f}"
    assert head.kind == kind and head.num_classes == 10 and head.in_dim == 64


def test_penultimate_shapes(digits) -> None:
    x_train, y_train, x_test, _ = digits
    linear = train_head(x_train[:100], y_train[:100], 10, HeadConfig(kind="linear", epochs=2))
    mlp = train_head(x_train[:100], y_train[:100], 10, HeadConfig(kind="mlp", epochs=2))
    np.testing.assert_array_equal(linear.penultimate(x_test[:5]), x_test[:5].astype(np.float32))
    hidden = mlp.penultimate(x_test[:5])
    assert hidden.shape == (5, 512) and hidden.min() >= 0  # after the ReLU


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_state_round_trip_through_safetensors(digits, tmp_path: Path, kind: str) -> None:
    x_train, y_train, x_test, _ = digits
    head = train_head(x_train[:300], y_train[:300], 10, HeadConfig(kind=kind, epochs=3))
    path = tmp_path / "head.safetensors"
    save_file(head.state_arrays(), str(path), metadata=head.metadata())
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    loaded = TrainedHead.from_state(load_file(str(path)), metadata)
    assert (loaded.kind, loaded.num_classes, loaded.in_dim) == (kind, 10, 64)
    np.testing.assert_array_equal(loaded.predict_proba(x_test), head.predict_proba(x_test))


def test_same_seed_same_head_and_global_state_untouched(digits) -> None:
    x_train, y_train, x_test, _ = digits
    state_before, threads_before = torch.random.get_rng_state(), torch.get_num_threads()
    first = train_head(x_train[:200], y_train[:200], 10, HeadConfig(kind="mlp", epochs=3, seed=5))
    assert torch.equal(torch.random.get_rng_state(), state_before)
    assert torch.get_num_threads() == threads_before
    again = train_head(x_train[:200], y_train[:200], 10, HeadConfig(kind="mlp", epochs=3, seed=5))
    other = train_head(x_train[:200], y_train[:200], 10, HeadConfig(kind="mlp", epochs=3, seed=6))
    np.testing.assert_array_equal(first.predict_proba(x_test), again.predict_proba(x_test))
    assert not np.array_equal(first.predict_proba(x_test), other.predict_proba(x_test))


def test_one_label_and_absent_classes(digits) -> None:
    x_train, y_train, x_test, y_test = digits
    one = train_head(x_train[:1], np.array([3]), 10, HeadConfig(kind="mlp"))
    assert one.predict_proba(x_test[:4]).argmax(axis=1).tolist() == [3, 3, 3, 3]

    zeros_and_sevens = np.flatnonzero(np.isin(y_train, [0, 7]))[:40]
    head = train_head(x_train[zeros_and_sevens], y_train[zeros_and_sevens], 10, HeadConfig())
    probs = head.predict_proba(x_test)
    assert probs.shape == (len(x_test), 10)
    test_rows = np.isin(y_test, [0, 7])
    assert (probs[test_rows].argmax(axis=1) == y_test[test_rows]).mean() > 0.9
    # on zeros and sevens, most of the mass goes to the two seen classes, not the eight unseen ones
    assert probs[test_rows][:, [0, 7]].sum(axis=1).mean() > 0.5


def test_progress_and_bad_input(digits) -> None:
    x_train, y_train, _, _ = digits
    seen: list[float] = []
    train_head(x_train[:50], y_train[:50], 10, HeadConfig(epochs=4), progress=lambda f, m: seen.append(f))
    assert seen == [0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="without any labeled"):
        train_head(x_train[:0], y_train[:0], 10, HeadConfig())
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        train_head(x_train[:50], y_train[:50], 5, HeadConfig())
    with pytest.raises(ValueError, match="unknown head kind"):
        HeadConfig.from_dict({"kind": "transformer"})
    with pytest.raises(ValueError, match="unknown head setting"):
        HeadConfig.from_dict({"kind": "mlp", "lr_typo": 0.1})
    assert HeadConfig.from_dict({"kind": "mlp", "seed": 3}) == HeadConfig(kind="mlp", seed=3)
    assert (HeadConfig(kind="mlp").resolved_lr, HeadConfig(kind="linear").resolved_weight_decay) == (1e-3, 1e-4)
