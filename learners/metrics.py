"""Classification metrics in plain numpy (stored per round)."""
from __future__ import annotations

from typing import Any

import numpy as np


def _check_labels(values: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {values.shape}")
    if len(values) and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0
                        or values.max() >= num_classes):
        raise ValueError(f"{what} must be integer class indices in [0, {num_classes})")
    return values.astype(np.int64)


def labels_per_class(labels: np.ndarray, num_classes: int) -> list[int]:
    """How many of `labels` fall in each class 0..num_classes-1."""
    labels = _check_labels(labels, num_classes, "labels")
    return np.bincount(labels, minlength=num_classes).tolist()


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Multi-class metrics of predictions `y_pred` against `y_true` (integer class indices).

    - accuracy: fraction correct.
    - balanced_accuracy: mean recall over the classes present in y_true (as sklearn's balanced_accuracy_score).
    - macro_f1: mean F1 over the classes present in y_true or y_pred; a class with no true positive scores 0
      (as sklearn's f1_score(average="macro", zero_division=0) with its default labels).
    - per_class_recall: one entry per class, None for classes absent from y_true.
    - n: number of items. With no items every metric is None (per_class_recall all None) and n is 0.
    """
    y_true = _check_labels(y_true, num_classes, "y_true")
    y_pred = _check_labels(y_pred, num_classes, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} vs {len(y_pred)}")
    n = len(y_true)
    if n == 0:
        return {"accuracy": None, "balanced_accuracy": None, "macro_f1": None,
                "per_class_recall": [None] * num_classes, "n": 0}

    true_count = np.bincount(y_true, minlength=num_classes)
    pred_count = np.bincount(y_pred, minlength=num_classes)
    hits = np.bincount(y_true[y_true == y_pred], minlength=num_classes)

    in_true = true_count > 0
    recall = np.divide(hits, true_count, out=np.zeros(num_classes), where=in_true)
    in_either = in_true | (pred_count > 0)
    f1 = 2 * hits[in_either] / (true_count[in_either] + pred_count[in_either])

    return {
        "accuracy": float(hits.sum() / n),
        "balanced_accuracy": float(recall[in_true].mean()),
        "macro_f1": float(f1.mean()),
        "per_class_recall": [float(r) if present else None for r, present in zip(recall, in_true)],
        "n": n,
    }
