"""Classification metrics in plain numpy (stored per round): multi-class (`classification_metrics`,
`labels_per_class`) and multi-label (`multilabel_metrics`, `multilabel_labels_per_class`)."""
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


def _check_multilabel(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    if y_true.ndim != 2 or scores.shape != y_true.shape:
        raise ValueError(f"need y_true (n, K) and scores (n, K) of one shape, got {y_true.shape} and {scores.shape}")
    if not ((y_true == 0) | (y_true == 1)).all():
        raise ValueError("multi-label y_true must be a 0/1 matrix")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return y_true.astype(bool), scores


def average_precision_per_class(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision of each column (K,), float64; NaN for a column without any positive.

    AP = sum over distinct score thresholds t, highest first, of (R_t - R_prev) P_t, with P_t and R_t the precision
    and recall of "score >= t" (scikit-learn's average_precision_score: tied scores enter together, no
    interpolation). Equivalently, the mean over the positives of the precision at their score's threshold, which is
    how it is computed here: one sort per column, vectorised over columns."""
    y_true, scores = _check_multilabel(y_true, scores)
    n, k = y_true.shape
    if n == 0:
        return np.full(k, np.nan)
    order = np.argsort(-scores, axis=0, kind="stable")
    s = np.take_along_axis(scores, order, axis=0)
    y = np.take_along_axis(y_true, order, axis=0)
    tp = np.cumsum(y, axis=0)
    # index of the last row of each row's tie group (rows with the same score are one threshold)
    group_end = np.ones((n, k), dtype=bool)
    group_end[:-1] = s[:-1] != s[1:]
    rows = np.arange(n)[:, None]
    last = np.where(group_end, rows, n - 1)
    last = np.minimum.accumulate(last[::-1], axis=0)[::-1]
    tp_at = np.take_along_axis(tp, last, axis=0)
    precision_at = tp_at / (last + 1)
    positives = y.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision_at * y).sum(axis=0) / positives
    return np.where(positives > 0, ap, np.nan)


def multilabel_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Multi-label metrics of per-class scores (n, K) (the head's sigmoids) against a 0/1 matrix y_true (n, K).

    - mAP: mean over the classes with at least one positive in y_true of their average precision (per class equal
      to sklearn's average_precision_score); None if no class has a positive.
    - per_class_ap: one entry per class, None for classes without a positive.
    - micro_f1: 2 TP / (2 TP + FP + FN) over every (item, class) entry, predictions = scores > threshold (0.5,
      the same cut as badge's 1[P > 0.5]); None when there is neither a true nor a predicted positive.
    - macro_f1: mean F1 over the classes with a true or a predicted positive (a class with neither has no F1; as
      sklearn's f1_score(average="macro", zero_division=np.nan)); None if there is no such class.
    - labels_per_class: positives per class in y_true. n: number of items.
    """
    y, s = _check_multilabel(y_true, scores)
    n, k = y.shape
    labels_per_class = y.sum(axis=0).astype(int).tolist()
    if n == 0:
        return {"mAP": None, "micro_f1": None, "macro_f1": None, "per_class_ap": [None] * k,
                "labels_per_class": labels_per_class, "n": 0}
    ap = average_precision_per_class(y, s)
    has_positive = ~np.isnan(ap)
    predicted = s > threshold
    tp = (predicted & y).sum(axis=0)
    true_count, pred_count = y.sum(axis=0), predicted.sum(axis=0)
    in_either = (true_count + pred_count) > 0
    f1 = 2 * tp[in_either] / (true_count[in_either] + pred_count[in_either])
    micro_denominator = true_count.sum() + pred_count.sum()
    return {
        "mAP": float(ap[has_positive].mean()) if has_positive.any() else None,
        "micro_f1": float(2 * tp.sum() / micro_denominator) if micro_denominator else None,
        "macro_f1": float(f1.mean()) if len(f1) else None,
        "per_class_ap": [float(a) if present else None for a, present in zip(ap, has_positive)],
        "labels_per_class": labels_per_class,
        "n": n,
    }


def multilabel_labels_per_class(labels: np.ndarray, num_classes: int) -> list[int]:
    """How many of the (n, num_classes) 0/1 label rows have each class (positives per class)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return [0] * num_classes
    if labels.ndim != 2 or labels.shape[1] != num_classes or not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"multi-label labels must be an (n, {num_classes}) 0/1 matrix, got shape {labels.shape}")
    return labels.sum(axis=0).astype(int).tolist()


# ----- uncertainty of eval-set metrics ----------------------------------------------------------------------------
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals
BOOTSTRAP_RESAMPLES = 1000
RESAMPLE_BLOCK = 100  # resamples counted at once (bounds the (block, n) temporaries)


def wilson_interval(successes: int, n: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval [low, high] of a proportion successes / n (95% by default); None when n == 0.

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0 or n successes, which is
    what small evaluation sets give."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def classification_intervals(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                             seed: int = 0) -> dict[str, list[float] | None]:
    """95% intervals of `classification_metrics`: Wilson for accuracy, a percentile bootstrap over the evaluation
    items for balanced accuracy and macro F1 (means of per-class rates have no closed form)."""
    y_true = _check_labels(y_true, num_classes, "y_true")
    y_pred = _check_labels(y_pred, num_classes, "y_pred")
    n = len(y_true)
    balanced, macro_f1 = [], []
    resamples = _resamples(n, seed)
    for start in range(0, len(resamples), RESAMPLE_BLOCK):
        rows = resamples[start:start + RESAMPLE_BLOCK]
        b, f = _resampled_rates(y_true[rows], y_pred[rows], num_classes)
        balanced += b.tolist()
        macro_f1 += f.tolist()
    return {
        "accuracy": wilson_interval(int((y_true == y_pred).sum()), n),
        "balanced_accuracy": _percentile_interval(balanced),
        "macro_f1": _percentile_interval(macro_f1),
    }


def _resampled_rates(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """`classification_metrics`' balanced accuracy and macro F1 of each row of (R, n) class matrices, counted
    for all rows at once (one bincount over row-offset classes)."""
    r, k = len(y_true), num_classes
    offset = np.arange(r)[:, None] * k

    def counts(values: np.ndarray) -> np.ndarray:
        return np.bincount(values.ravel(), minlength=r * k).reshape(r, k)

    true_count, pred_count = counts(y_true + offset), counts(y_pred + offset)
    hits = np.bincount((y_true + offset)[y_true == y_pred], minlength=r * k).reshape(r, k)
    in_true, in_either = true_count > 0, (true_count > 0) | (pred_count > 0)
    recall = np.divide(hits, true_count, out=np.zeros((r, k)), where=in_true)
    f1 = np.divide(2 * hits, true_count + pred_count, out=np.zeros((r, k)), where=in_either)
    return recall.sum(1) / in_true.sum(1), f1.sum(1) / in_either.sum(1)


def multilabel_intervals(y_true: np.ndarray, scores: np.ndarray, seed: int = 0,
                         threshold: float = 0.5) -> dict[str, list[float] | None]:
    """95% percentile-bootstrap intervals over the evaluation items of `multilabel_metrics`' mAP, micro and
    macro F1."""
    y, s = _check_multilabel(y_true, scores)
    draws = [multilabel_metrics(y[rows], s[rows], threshold) for rows in _resamples(len(y), seed)]
    return {name: _percentile_interval([m[name] for m in draws]) for name in ("mAP", "micro_f1", "macro_f1")}


def _resamples(n: int, seed: int) -> np.ndarray:
    """(BOOTSTRAP_RESAMPLES, n) row indices drawn with replacement, one resample per row (none when n == 0),
    seeded."""
    if not n:
        return np.zeros((0, 0), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n, (BOOTSTRAP_RESAMPLES, n))


def _percentile_interval(values: list[float | None], level: float = 0.95) -> list[float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def changes_within_noise(values: list[float], intervals: list[list[float] | None]) -> tuple[float, float] | None:
    """(widest interval, largest change between consecutive values) when the widest 95% interval is wider than
    every change the curve shows (the changes are not significant), else None. Needs two values or more."""
    widths = [high - low for low, high in (i for i in intervals if i is not None)]
    if len(values) < 2 or not widths:
        return None
    largest_change = max(abs(b - a) for a, b in zip(values, values[1:]))
    return (max(widths), largest_change) if max(widths) > largest_change else None
