"""Metrics against scikit-learn, including classes missing from the truth or the predictions."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from learners.metrics import classification_metrics, labels_per_class


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = 7
    y_true = rng.choice([0, 1, 2, 4, 5], size=60)  # 3 and 6 never true
    y_pred = np.where(rng.random(60) < 0.6, y_true, rng.choice([0, 1, 3, 4], size=60))  # 3 predicted, never true
    m = classification_metrics(y_true, y_pred, num_classes)
    assert m["n"] == 60
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    # sklearn's default labels for macro F1 are the classes in y_true or y_pred
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    present = sorted(set(y_true.tolist()))
    recalls = recall_score(y_true, y_pred, labels=present, average=None)
    assert [m["per_class_recall"][c] for c in present] == pytest.approx(recalls.tolist())
    assert m["per_class_recall"][3] is None and m["per_class_recall"][6] is None


def test_hand_checked_and_edge_cases() -> None:
    # truth 0 0 1 1, predicted 0 1 1 2: two right; recall of class 0 = 1/2, of class 1 = 1/2
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]), 4)
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == 0.5
    # F1: class 0 = 2*1/(2+1) = 2/3, class 1 = 2*1/(2+2) = 1/2, class 2 = 0 (predicted, never true)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert m["per_class_recall"] == [0.5, 0.5, None, None]

    empty = classification_metrics(np.array([], dtype=int), np.array([], dtype=int), 3)
    assert empty == {"accuracy": None, "balanced_accuracy": None, "macro_f1": None,
                     "per_class_recall": [None, None, None], "n": 0}
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        classification_metrics(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="length"):
        classification_metrics(np.array([0, 1]), np.array([0]), 3)


def test_labels_per_class() -> None:
    assert labels_per_class(np.array([2, 0, 2, 2]), 4) == [1, 0, 3, 0]
    assert labels_per_class(np.array([], dtype=np.int64), 2) == [0, 0]
    with pytest.raises(ValueError):
        labels_per_class(np.array([5]), 3)
